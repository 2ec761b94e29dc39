#!/usr/bin/python
"""drkit.dr.fis_experiment: read an AWS FIS experiment template, or run it to its end.

Why a module of our own: neither amazon.aws nor community.aws has a module for AWS Fault
Injection Service.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: fis_experiment
short_description: Describe an AWS FIS experiment template, or start it and wait for its end
description:
  - >-
    Without O(state), describes the template: its actions and targets (a probe; never changes
    anything).
  - V(completed) starts an experiment from the template and describes it until it reaches a
    final state; it fails unless that state is C(completed). The template is the estate's (its
    owners decide what it may break); this module never creates or changes one.
  - >-
    O(allowed_actions) refuses, before anything starts, a template whose actions are not all in
    the list (drkit's compute fault only stops: C(aws:ec2:stop-instances)).
  - The effect of the actions (instances stopped) is for the caller to observe with a describe.
    moto 5.2.5 runs experiments as a state machine that does not act on any resource, so only a
    real account proves the effect (docs/targets.md).
  - >-
    It says when it started the experiment (RV(issued_at)) and when a describe saw it end
    (RV(ended_at)): a drill's fault step publishes the first, so the recovery clock starts when
    the fault was issued, not when the step began (drkit issue 19).
options:
  template_id:
    description: The experiment template.
    type: str
    required: true
  state:
    description: What to do; omitted, only describe.
    type: str
    choices: [completed]
  allowed_actions:
    description: Action ids the template may use (e.g. aws:ec2:stop-instances); empty allows any.
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds to wait for the experiment to end.
    type: float
    default: 900
  interval:
    description: Seconds between describes.
    type: float
    default: 2
author: drkit maintainers (@drkit)
extends_documentation_fragment:
  - drkit.dr.aws
"""

EXAMPLES = r"""
- name: Stop the primary region's tagged instances
  drkit.dr.fis_experiment:
    template_id: EXT1a2b3c4d5e6f7
    region: eu-west-1
    state: completed
    allowed_actions: [aws:ec2:stop-instances]
"""

RETURN = r"""
actions:
  description: The template's action ids, by action name.
  returned: always
  type: dict
targets:
  description: The template's targets (resource type, tags, selection mode), by name.
  returned: always
  type: dict
experiment_id:
  description: The experiment started.
  returned: when state is completed
  type: str
experiment_state:
  description: The experiment's final state (completed, stopped, failed).
  returned: when state is completed
  type: str
issued_at:
  description: >-
    When StartExperiment was sent (UTC, ISO 8601 with Z), taken just before the call, so the
    fault cannot have taken effect earlier.
  returned: when state is completed and the experiment was started
  type: str
  sample: "2026-11-30T12:00:00.123456Z"
ended_at:
  description: When a describe of the experiment first showed its final state, or the wait
    ended (UTC, ISO 8601 with Z). Not proof of the effect; the caller describes that.
  returned: when state is completed and the experiment was started
  type: str
  sample: "2026-11-30T12:00:04.345678Z"
"""

import time
from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.aws import aws_client, aws_errors

FINAL = ("completed", "stopped", "failed")


def _now():
    # The same form as drkit.dr.lose_region's fault times (the drill parses either).
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def main():
    module = AnsibleModule(
        argument_spec={
            "template_id": {"type": "str", "required": True},
            "region": {"type": "str", "required": True},
            "endpoint_url": {"type": "str"},
            "state": {"type": "str", "choices": ["completed"]},
            "allowed_actions": {"type": "list", "elements": "str", "default": []},
            "timeout": {"type": "float", "default": 900},
            "interval": {"type": "float", "default": 2},
        },
        supports_check_mode=True,
    )
    p = module.params
    fis = aws_client(module, "fis")
    client_error, botocore_error = aws_errors()
    try:
        tmpl = fis.get_experiment_template(id=p["template_id"])["experimentTemplate"]
        actions = {k: a.get("actionId", "") for k, a in (tmpl.get("actions") or {}).items()}
        out = {"actions": actions, "targets": tmpl.get("targets") or {}}
        refused = sorted(set(actions.values()) - set(p["allowed_actions"]))
        if p["allowed_actions"] and refused:
            module.fail_json(msg=f"FIS template {p['template_id']} uses {refused}; drkit runs "
                                 f"only {p['allowed_actions']} here", **out)
        if p["state"] is None:
            module.exit_json(changed=False, **out)
        if module.check_mode:
            module.exit_json(changed=True, **out)
        out["issued_at"] = _now()
        exp = fis.start_experiment(experimentTemplateId=p["template_id"],
                                   tags={"drkit": "drill"})["experiment"]
        deadline = time.monotonic() + p["timeout"]
        while True:
            exp = fis.get_experiment(id=exp["id"])["experiment"]
            status = exp.get("state", {}).get("status", "")
            if status in FINAL or time.monotonic() >= deadline:
                out["ended_at"] = _now()
                break
            time.sleep(p["interval"])
    except (client_error, *botocore_error) as e:
        module.fail_json(msg=f"FIS template {p['template_id']} in {p['region']}: {e}")
    out.update(experiment_id=exp["id"], experiment_state=status)
    if status != "completed":
        reason = exp.get("state", {}).get("reason", "")
        module.fail_json(msg=f"FIS experiment {exp['id']}: expected completed within "
                             f"{p['timeout']:g}s, seen {status or 'no state'} ({reason})",
                         changed=True, **out)
    module.exit_json(changed=True, **out)


if __name__ == "__main__":
    main()
