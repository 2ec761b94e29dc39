#!/usr/bin/python
"""drkit.dr.healthz: documentation of the action plugin of the same name
(plugins/action/healthz.py).

Why custom: every instance's health asked at once, without a module start per URL (issue 19).
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: healthz
short_description: GET health URLs side by side; every one must answer 200
description:
  - An action plugin. With the local connection it asks every URL at once from the controller;
    on any other connection it runs M(ansible.builtin.uri) on that host for each URL.
  - Fails unless every URL answered 200.
options:
  urls: {description: The URLs., type: list, elements: str, required: true}
  timeout: {description: Seconds per request., type: float, default: 2.0}
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Check the instances
  drkit.dr.healthz:
    urls: [http://127.0.0.1:17415/healthz, http://127.0.0.1:17416/healthz]
"""

RETURN = r"""
results:
  description: "[{url, status}] in the order given; status null (with msg) when nothing answered."
  returned: always
  type: list
  elements: dict
"""
