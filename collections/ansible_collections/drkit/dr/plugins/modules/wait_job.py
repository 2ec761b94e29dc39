#!/usr/bin/python
"""drkit.dr.wait_job: documentation of the action plugin of the same name
(plugins/action/wait_job.py).

Why custom: ansible.builtin.async_status starts a module per poll; steps started side by side
on the recovery path are collected from the controller every 50 ms instead (issue 19).
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: wait_job
short_description: Wait for a task started with async and poll 0, and return its result
description:
  - "An action plugin. When the job's host is reached with the local connection it reads the
    job's result file from the controller every 50 ms (drkit.dr's modules started with
    C(async) and C(poll: 0) run in a detached process there); on any other connection it
    polls M(ansible.builtin.async_status) on that host."
  - Returns the job's own result and fails when the job failed or did not finish in time.
options:
  job:
    description: "The registered result of the task started with C(async) and C(poll: 0)."
    type: dict
    required: true
  timeout:
    description: Seconds to wait for the job.
    type: float
    default: 300.0
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Start the instances
  drkit.dr.daemons:
    daemons: "{{ services }}"
  async: 120
  poll: 0
  register: started

- name: Wait for the instances
  drkit.dr.wait_job:
    job: "{{ started }}"
"""

RETURN = r"""
ansible_job_id:
  description: The job's id.
  returned: always
  type: str
"""
