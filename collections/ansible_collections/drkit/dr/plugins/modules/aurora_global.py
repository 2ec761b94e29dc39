#!/usr/bin/python
"""drkit.dr.aurora_global: move an Aurora global database's writer, and observe that it moved.

Why a module of our own: amazon.aws has rds_global_cluster_info (describe) and rds_cluster
(create, and remove_from_global_db), but nothing calls FailoverGlobalCluster or
SwitchoverGlobalCluster, and a drill needs the act and its observed effect in one step.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: aurora_global
short_description: Fail over, switch over or detach an Aurora global database, checked by a describe
description:
  - >-
    Without O(state), describes the global cluster (a probe; never changes anything).
  - V(failover) calls FailoverGlobalCluster to make O(target_cluster_arn) the writer (with
    O(allow_data_loss), the unplanned failover for a lost primary region), unless it already is;
    then describes the global cluster until that member is the writer and the global cluster is
    available, and fails with what it saw otherwise (drkit issue 14, "describe after every act").
  - >-
    V(switchover) calls SwitchoverGlobalCluster (planned, no data loss: both regions up), the
    failback's way back; observed the same way.
  - >-
    V(detached) calls RemoveFromGlobalCluster for O(target_cluster_arn) (the older "detach and
    promote" failover: the cluster becomes a standalone writer), unless it is no member; then
    describes until the global cluster no longer lists it.
  - It never creates or deletes a cluster.
  - moto 5.2.5 implements neither FailoverGlobalCluster nor SwitchoverGlobalCluster, and its
    RemoveFromGlobalCluster changes nothing; against it these states fail, saying so
    (docs/targets.md). Only a real account proves them.
options:
  global_cluster_identifier:
    description: The global cluster.
    type: str
    required: true
  region:
    description: The AWS region to call (a global cluster answers in each of its regions; use
      the surviving one).
    type: str
    required: true
  state:
    description: What to do; omitted, only describe.
    type: str
    choices: [failover, switchover, detached]
  target_cluster_arn:
    description: The member cluster to make the writer (failover, switchover) or to detach.
    type: str
  allow_data_loss:
    description: With V(failover), fail over even though the old writer cannot confirm what it
      replicated (the region is lost); the lag at that moment is the data lost.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for the describe to show the change.
    type: float
    default: 1800
  interval:
    description: Seconds between describes.
    type: float
    default: 5
author: drkit maintainers (@drkit)
extends_documentation_fragment:
  - drkit.dr.aws.endpoint
"""

EXAMPLES = r"""
- name: Make the secondary region's cluster the writer
  drkit.dr.aurora_global:
    global_cluster_identifier: payments-global
    region: eu-central-1
    state: failover
    target_cluster_arn: arn:aws:rds:eu-central-1:123456789012:cluster:payments-euc1
"""

RETURN = r"""
exists:
  description: Whether the global cluster exists.
  returned: always
  type: bool
status:
  description: The global cluster's status after the call.
  returned: when it exists
  type: str
writer:
  description: ARN of the writer member after the call (empty when none).
  returned: when it exists
  type: str
members:
  description: The members after the call, each with arn, region and is_writer.
  returned: when it exists
  type: list
  elements: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.aws import aws_client, aws_errors

_CALL = {"failover": "FailoverGlobalCluster", "switchover": "SwitchoverGlobalCluster",
         "detached": "RemoveFromGlobalCluster"}


def _view(g):
    members = [{"arn": m["DBClusterArn"], "region": m["DBClusterArn"].split(":")[3],
                "is_writer": bool(m.get("IsWriter"))} for m in g.get("GlobalClusterMembers", [])]
    writer = next((m["arn"] for m in members if m["is_writer"]), "")
    return {"exists": True, "status": g.get("Status", ""), "writer": writer, "members": members}


def main():
    module = AnsibleModule(
        argument_spec={
            "global_cluster_identifier": {"type": "str", "required": True},
            "region": {"type": "str", "required": True},
            "endpoint_url": {"type": "str"},
            "state": {"type": "str", "choices": ["failover", "switchover", "detached"]},
            "target_cluster_arn": {"type": "str"},
            "allow_data_loss": {"type": "bool", "default": True},
            "timeout": {"type": "float", "default": 1800},
            "interval": {"type": "float", "default": 5},
        },
        required_if=[("state", s, ["target_cluster_arn"]) for s in _CALL],
        supports_check_mode=True,
    )
    p = module.params
    gid, state, target = p["global_cluster_identifier"], p["state"], p["target_cluster_arn"]
    rds = aws_client(module, "rds")
    client_error, botocore_error = aws_errors()

    def describe():
        try:
            found = rds.describe_global_clusters(GlobalClusterIdentifier=gid)["GlobalClusters"]
        except client_error as e:
            if e.response.get("Error", {}).get("Code") == "GlobalClusterNotFoundFault":
                return None
            raise
        return _view(found[0]) if found else None

    def done(view):
        if view is None:
            return False
        if state == "detached":
            return all(m["arn"] != target for m in view["members"])
        return view["writer"] == target and view["status"] == "available"

    try:
        view = describe()
        if view is None:
            if state is None:
                module.exit_json(changed=False, exists=False)
            module.fail_json(msg=f"Aurora global cluster {gid} does not exist (seen from "
                                 f"{p['region']}; drkit never creates one)")
        if state is None or done(view):
            module.exit_json(changed=False, **view)
        if state != "detached" and all(m["arn"] != target for m in view["members"]):
            module.fail_json(msg=f"{gid}: {target} is not a member (members: "
                                 f"{[m['arn'] for m in view['members']]})", **view)
        if module.check_mode:
            module.exit_json(changed=True, **view)
        try:
            if state == "failover":
                rds.failover_global_cluster(GlobalClusterIdentifier=gid,
                                            TargetDbClusterIdentifier=target,
                                            AllowDataLoss=p["allow_data_loss"])
            elif state == "switchover":
                rds.switchover_global_cluster(GlobalClusterIdentifier=gid,
                                              TargetDbClusterIdentifier=target)
            else:
                rds.remove_from_global_cluster(GlobalClusterIdentifier=gid,
                                               DbClusterIdentifier=target)
        except (client_error, *botocore_error) as e:
            text = str(e)
            # moto answers an action it lacks with an HTTP 500 page, not an AWS error.
            if any(t in text for t in ("not been implemented", "NotImplemented",
                                       "500 Internal Server Error")):
                module.fail_json(msg=f"{_CALL[state]}: the endpoint does not implement it "
                                     "(moto 5.2.5 does not); only a real account can run this "
                                     "step (docs/targets.md)", **view)
            raise
        deadline = time.monotonic() + p["timeout"]
        while True:
            view = describe()
            if done(view):
                module.exit_json(changed=True, **view)
            if time.monotonic() >= deadline:
                break
            time.sleep(p["interval"])
    except (client_error, *botocore_error) as e:
        module.fail_json(msg=f"Aurora global cluster {gid} (from {p['region']}): {e}")
    want = (f"{target} no longer a member" if state == "detached"
            else f"{target} the writer, the global cluster available")
    seen = ("no global cluster" if view is None else
            f"writer {view['writer'] or 'none'}, status {view['status']}, members "
            f"{[m['arn'] for m in view['members']]}")
    module.fail_json(msg=f"{_CALL[state]} on {gid}: expected {want} within {p['timeout']:g}s, "
                         f"seen {seen}", **(view or {"exists": False}))


if __name__ == "__main__":
    main()
