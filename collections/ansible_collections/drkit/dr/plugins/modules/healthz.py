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
    on any other connection it runs this module once on that host, which asks every URL at once
    there.
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

import urllib.error  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from ansible.module_utils import urls  # noqa: E402
from ansible.module_utils.basic import AnsibleModule  # noqa: E402


def _get(url, timeout):
    # Ansible's open_url, as the action's local path uses (same TLS and proxy handling).
    try:
        with urls.open_url(url, timeout=timeout) as r:
            return {"url": url, "status": r.status}
    except urllib.error.HTTPError as e:
        return {"url": url, "status": e.code, "msg": str(e)}
    except (OSError, ValueError, urls.ConnectionError) as e:
        return {"url": url, "status": None, "msg": str(e)}


def main():
    """On the task's host (a region's host over SSH, issue 17): every URL at once, in one
    module run (issue 19: a uri module run per URL cost 2.2 s for four instances over SSH)."""
    module = AnsibleModule(argument_spec={
        "urls": {"type": "list", "elements": "str", "required": True},
        "timeout": {"type": "float", "default": 2.0},
    }, supports_check_mode=True)
    found = module.params["urls"]
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(found)))) as pool:
        results = list(pool.map(lambda u: _get(u, module.params["timeout"]), found))
    module.exit_json(changed=False, results=results)


if __name__ == "__main__":
    main()
