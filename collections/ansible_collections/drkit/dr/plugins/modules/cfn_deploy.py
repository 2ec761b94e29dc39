#!/usr/bin/python
"""drkit.dr.cfn_deploy: documentation of the action plugin of the same name
(plugins/action/cfn_deploy.py).

Why custom: the regional stack is deployed beside the promotion on the recovery clock; a
detached process on the controller costs no module start and no async_status polls (issue 19).
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: cfn_deploy
short_description: Create or update a CloudFormation stack, optionally in the background
description:
  - An action plugin that runs on the controller with boto3 (no module is sent to a host).
  - UpdateStack (CreateStack when the stack does not exist), then DescribeStacks until a
    *_COMPLETE status; a ROLLBACK or FAILED status fails. Returns the outputs read back.
  - With O(background=true) a detached process deploys and writes its result to O(job_file);
    a later task with only O(job_file) waits for that result and returns it.
  - Credentials come from boto3's default chain. Nothing is deployed in check mode.
options:
  stack_name: {description: The stack's name., type: str}
  template_body: {description: The template., type: str}
  template_parameters: {description: Parameters by name., type: dict, default: {}}
  tags: {description: Stack tags., type: dict, default: {}}
  region: {description: The stack's region., type: str}
  endpoint_url: {description: Another CloudFormation endpoint (the lab's moto)., type: str}
  background: {description: Deploy in a detached process., type: bool, default: false}
  job_file: {description: Where a background deployment writes its result., type: path}
  timeout: {description: Seconds to wait for the stack., type: float, default: 300.0}
  publish:
    description: With O(job_file) alone, publish the outputs as this custom stat (as set_stats).
    type: str
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Start deploying the stack
  drkit.dr.cfn_deploy:
    stack_name: drkit-payments
    template_body: "{{ lookup('ansible.builtin.file', 'regional-stack.yml') }}"
    region: eu-central-1
    background: true
    job_file: /tmp/run/recreate-stack.json
  register: job

- name: Wait for it
  drkit.dr.cfn_deploy:
    job_file: "{{ job.job_file }}"
  register: stack
"""

RETURN = r"""
stack_outputs:
  description: The stack's outputs (OutputKey to OutputValue), read back after it completed.
  returned: when the deployment finished
  type: dict
stack_status: {description: The stack's status., returned: when known, type: str}
job_file:
  description: The background deployment's result file.
  returned: with background
  type: str
"""
