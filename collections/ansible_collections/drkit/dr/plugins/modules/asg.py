#!/usr/bin/python
"""Read or set an Auto Scaling group's capacity, and prove it with a describe.

Why custom: amazon.aws.autoscaling_group sets capacity but does not wait for and prove the in-
service count the drill's postcondition needs.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: asg
short_description: Read or set an Auto Scaling group's desired capacity, checked by a describe
description:
  - Without O(desired_capacity), describes the group (a probe; never changes anything).
  - With O(desired_capacity), calls SetDesiredCapacity (lowering MinSize to it first when
    needed, never raising MaxSize), then describes the group again and fails unless the
    describe shows the new capacity (drkit issue 14, "describe after every act").
  - >-
    It only ever changes capacity: it never creates a group, an instance or a launch template.
    Fault injection sets 0 (the region's instances are terminated by the group, as when a
    region is lost); failback sets the capacity recorded before the fault.
  - O(restore_tag) keeps the capacity seen before a change as a tag on the group (the estate's
    other tags are kept), so a failback or a recovery after a crash knows what to restore.
  - >-
    When it sets a capacity it says when (RV(issued_at), RV(confirmed_at)): a drill's fault step
    publishes them so the recovery clock starts when capacity was taken away, not when the step
    began (drkit issue 19).
options:
  name:
    description: The Auto Scaling group.
    type: str
    required: true
  desired_capacity:
    description: The capacity to set; omit to only describe.
    type: int
  restore_tag:
    description: Tag on the group that keeps the capacity before this change (only written
      when the group has no such tag yet and the change lowers the capacity).
    type: str
  clear_restore_tag:
    description: >-
      After the change, remove O(restore_tag) from the group (failback: the capacity
      is restored, and the estate's code does not know the tag, so Terraform would see drift).
    type: bool
    default: false
author: drkit maintainers (@drkit)
extends_documentation_fragment:
  - drkit.dr.aws
"""

EXAMPLES = r"""
- name: Take the primary region's payments instances away
  drkit.dr.asg:
    name: payments-primary
    region: eu-west-1
    desired_capacity: 0
    restore_tag: "drkit:restore-capacity"
"""

RETURN = r"""
before:
  description: The group's desired capacity before the call.
  returned: always
  type: int
desired_capacity:
  description: DesiredCapacity as the describe after the call shows it.
  returned: always
  type: int
min_size:
  description: MinSize after the call.
  returned: always
  type: int
instances:
  description: Instance ids in the group after the call.
  returned: always
  type: list
  elements: str
tags:
  description: The group's tags after the call.
  returned: always
  type: dict
instances_before:
  description: Instance ids in the group before the call (those a lower capacity takes away).
  returned: always
  type: list
  elements: str
issued_at:
  description: >-
    When SetDesiredCapacity was sent (UTC, ISO 8601 with Z), taken just before the call, so the
    change cannot have taken effect earlier.
  returned: when SetDesiredCapacity was called
  type: str
  sample: "2026-11-30T12:00:00.123456Z"
confirmed_at:
  description: When the describe after the call showed the new desired capacity (UTC, ISO 8601
    with Z).
  returned: when SetDesiredCapacity was called and the describe showed the new capacity
  type: str
  sample: "2026-11-30T12:00:00.345678Z"
"""

from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.aws import aws_client, aws_errors


def _now() -> str:
    # The same form as drkit.dr.lose_region's fault times (the drill parses either).
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "region": {"type": "str", "required": True},
            "endpoint_url": {"type": "str"},
            "desired_capacity": {"type": "int"},
            "restore_tag": {"type": "str"},
            "clear_restore_tag": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    client_error, botocore_error = aws_errors()
    p = module.params
    name = p["name"]
    asg = aws_client(module, "autoscaling")

    def describe() -> dict:
        groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        if not groups["AutoScalingGroups"]:
            module.fail_json(msg=f"Auto Scaling group {name} does not exist in {p['region']} "
                                 "(drkit never creates one: check the inventory's names)")
        return groups["AutoScalingGroups"][0]

    times: dict = {}
    seen_before: list = []

    def result(g: dict, before: int, changed: bool) -> None:
        module.exit_json(changed=changed, before=before, instances_before=seen_before, **times,
                         desired_capacity=int(g["DesiredCapacity"]), min_size=int(g["MinSize"]),
                         instances=[i["InstanceId"] for i in g.get("Instances", [])],
                         tags={t["Key"]: t["Value"] for t in g.get("Tags", [])})

    want = p["desired_capacity"]
    tag = p["restore_tag"]
    try:
        g = describe()
        before = int(g["DesiredCapacity"])
        seen_before[:] = [i["InstanceId"] for i in g.get("Instances", [])]
        has_tag = tag is not None and any(t["Key"] == tag for t in g.get("Tags", []))
        clear = p["clear_restore_tag"] and has_tag
        if want is None or module.check_mode or (want == before and not clear):
            result(g, before, want is not None and (want != before or clear))
        if want == before:
            asg.delete_tags(Tags=[{"ResourceId": name, "ResourceType": "auto-scaling-group",
                                   "Key": tag}])
            result(describe(), before, True)
        if want > int(g["MaxSize"]):
            module.fail_json(msg=f"Auto Scaling group {name}: capacity {want} is above its "
                                 f"MaxSize {g['MaxSize']} (drkit does not raise it)")
        tags = {t["Key"]: t["Value"] for t in g.get("Tags", [])}
        if p["restore_tag"] and want < before and p["restore_tag"] not in tags:
            asg.create_or_update_tags(Tags=[{
                "ResourceId": name, "ResourceType": "auto-scaling-group",
                "Key": p["restore_tag"], "Value": str(before), "PropagateAtLaunch": False}])
        if want < int(g["MinSize"]):
            asg.update_auto_scaling_group(AutoScalingGroupName=name, MinSize=want)
        times["issued_at"] = _now()
        asg.set_desired_capacity(AutoScalingGroupName=name, DesiredCapacity=want,
                                 HonorCooldown=False)
        if clear:
            asg.delete_tags(Tags=[{"ResourceId": name, "ResourceType": "auto-scaling-group",
                                   "Key": tag}])
        g = describe()
    except client_error as e:
        module.fail_json(msg=f"Auto Scaling group {name} in {p['region']}: {e}")
    except botocore_error as e:
        module.fail_json(msg=f"region {p['region']} did not answer: {e}")
    if int(g["DesiredCapacity"]) != want:
        module.fail_json(msg=f"Auto Scaling group {name}: expected desired capacity {want} "
                             f"after SetDesiredCapacity, seen {g['DesiredCapacity']}",
                         before=before, desired_capacity=int(g["DesiredCapacity"]), **times)
    times["confirmed_at"] = _now()
    result(g, before, True)


if __name__ == "__main__":
    main()
