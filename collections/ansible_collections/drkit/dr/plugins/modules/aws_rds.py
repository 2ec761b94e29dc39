#!/usr/bin/python
"""An RDS instance's replication role: describe it, promote it, or seed it as a replica.

Why custom: amazon.aws.rds_instance reported ok without promoting in some states (issue 14);
this one describes after every act.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: aws_rds
short_description: Describe, promote, or (re)seed an RDS instance as a cross-region read replica
description:
  - >-
    Without O(state), describes the instance (a probe; never changes anything).
  - >-
    V(promoted) calls PromoteReadReplica when DescribeDBInstances names a source, then waits
    until the instance is available and reports whether the describe stopped naming a source
    (RV(standalone)). It does not fail when the source is still named: moto 5.2.5 keeps naming
    it after a promotion, so the caller decides what observes the promotion (drkit's
    data/rds adapter: the describe on a real account, the database itself in the lab).
  - >-
    V(replica) makes the instance a read replica of O(source_arn): nothing when it already is
    one; otherwise the instance standing in its place is deleted (with a final snapshot when
    O(final_snapshot) is given) and a read replica is created under the same identifier, in
    the same subnet group and security groups, with the same tags; then it waits until the
    describe shows an available replica of O(source_arn). This is how a failback seeds a
    replica from the new primary.
options:
  db_instance_identifier:
    description: The instance.
    type: str
    required: true
  state:
    description: What to do; omitted, only describe.
    type: str
    choices: [promoted, replica]
  source_arn:
    description: The source instance's ARN (O(state=replica)).
    type: str
  final_snapshot:
    description: Identifier of a final snapshot to take of an instance O(state=replica)
      deletes; none when omitted.
    type: str
  recreate:
    description: With O(state=replica), delete and create the replica even when the describe
      already names O(source_arn) (moto 5.2.5 keeps naming the source of a promoted replica, so
      the caller's own observation decides there).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for the instance to be available.
    type: float
    default: 3600
  interval:
    description: Seconds between describes.
    type: float
    default: 2
author: drkit maintainers (@drkit)
extends_documentation_fragment:
  - drkit.dr.aws
"""

EXAMPLES = r"""
- name: Seed the primary region's database as a replica of the new primary
  drkit.dr.aws_rds:
    db_instance_identifier: payments-db-euw1
    region: eu-west-1
    state: replica
    source_arn: arn:aws:rds:eu-central-1:123456789012:db:payments-db-euc1
"""

RETURN = r"""
exists:
  description: Whether the instance exists after the call.
  returned: always
  type: bool
arn:
  description: Its ARN.
  returned: when it exists
  type: str
status:
  description: DBInstanceStatus after the call.
  returned: when it exists
  type: str
replica_of:
  description: ReadReplicaSourceDBInstanceIdentifier after the call (null when standalone).
  returned: when it exists
  type: str
standalone:
  description: Whether the describe names no source.
  returned: when it exists
  type: bool
tags:
  description: The instance's tags.
  returned: when it exists
  type: dict
actions:
  description: The API calls this run made, in order.
  returned: always
  type: list
  elements: str
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.aws import aws_client, aws_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "db_instance_identifier": {"type": "str", "required": True},
            "region": {"type": "str", "required": True},
            "endpoint_url": {"type": "str"},
            "state": {"type": "str", "choices": ["promoted", "replica"]},
            "source_arn": {"type": "str"},
            "final_snapshot": {"type": "str"},
            "recreate": {"type": "bool", "default": False},
            "timeout": {"type": "float", "default": 3600.0},
            "interval": {"type": "float", "default": 2.0},
        },
        required_if=[("state", "replica", ("source_arn",))],
        supports_check_mode=True,
    )
    client_error, botocore_error = aws_errors()
    p = module.params
    name = p["db_instance_identifier"]
    rds = aws_client(module, "rds")
    actions: list[str] = []

    def describe() -> dict | None:
        try:
            return rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
        except rds.exceptions.DBInstanceNotFoundFault:
            return None

    def facts(db: dict | None) -> dict:
        if db is None:
            return {"exists": False, "actions": actions}
        source = db.get("ReadReplicaSourceDBInstanceIdentifier")
        return {"exists": True, "arn": db.get("DBInstanceArn"),
                "status": db.get("DBInstanceStatus"), "replica_of": source,
                "standalone": source is None,
                "tags": {t["Key"]: t["Value"] for t in db.get("TagList", [])},
                "actions": actions}

    def wait(pred, what: str) -> dict | None:  # noqa: ANN001
        deadline = time.monotonic() + p["timeout"]
        while True:
            db = describe()
            if pred(db):
                return db
            if time.monotonic() >= deadline:
                seen = facts(db)
                module.fail_json(msg=f"RDS instance {name} in {p['region']}: expected {what} "
                                     f"after {', '.join(actions)}; seen status "
                                     f"{seen.get('status', 'absent')!r}, replica of "
                                     f"{seen.get('replica_of')!r} after {p['timeout']:g}s",
                                 **seen)
            time.sleep(p["interval"])

    def same_source(db: dict | None) -> bool:
        src = (db or {}).get("ReadReplicaSourceDBInstanceIdentifier") or ""
        want = p["source_arn"] or ""
        return bool(src) and (src == want or want.endswith(":db:" + src))

    try:
        db = describe()
        if p["state"] is None:
            module.exit_json(changed=False, **facts(db))
        if p["state"] == "promoted":
            if db is None:
                module.fail_json(msg=f"RDS instance {name} does not exist in {p['region']}")
            if db.get("ReadReplicaSourceDBInstanceIdentifier") is None:
                module.exit_json(changed=False, **facts(db))
            if module.check_mode:
                module.exit_json(changed=True, **facts(db))
            rds.promote_read_replica(DBInstanceIdentifier=name)
            actions.append("PromoteReadReplica")
            db = wait(lambda d: d is not None and d.get("DBInstanceStatus") == "available",
                      "an available instance")
            module.exit_json(changed=True, **facts(db))
        # state == replica
        if same_source(db) and not p["recreate"]:
            module.exit_json(changed=False, **facts(db))
        if module.check_mode:
            module.exit_json(changed=True, **facts(db))
        create = {"DBInstanceIdentifier": name, "SourceDBInstanceIdentifier": p["source_arn"]}
        if db is not None:
            create["DBInstanceClass"] = db["DBInstanceClass"]
            if db.get("DBSubnetGroup"):
                create["DBSubnetGroupName"] = db["DBSubnetGroup"]["DBSubnetGroupName"]
            sgs = [g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups", [])]
            if sgs:
                create["VpcSecurityGroupIds"] = sgs
            if db.get("TagList"):
                create["Tags"] = db["TagList"]  # the estate's tags stay
            delete = {"DBInstanceIdentifier": name}
            if p["final_snapshot"]:
                delete["FinalDBSnapshotIdentifier"] = p["final_snapshot"]
            else:
                delete["SkipFinalSnapshot"] = True
            rds.delete_db_instance(**delete)
            actions.append("DeleteDBInstance")
            wait(lambda d: d is None, "the old instance deleted")
        rds.create_db_instance_read_replica(**create)
        actions.append("CreateDBInstanceReadReplica")
        db = wait(lambda d: d is not None and d.get("DBInstanceStatus") == "available"
                  and same_source(d), f"an available read replica of {p['source_arn']}")
        module.exit_json(changed=True, **facts(db))
    except client_error as e:
        module.fail_json(msg=f"RDS instance {name} in {p['region']}: {e}", actions=actions)
    except botocore_error as e:
        module.fail_json(msg=f"region {p['region']} did not answer: {e}", actions=actions)


if __name__ == "__main__":
    main()
