#!/usr/bin/python
"""Promote an RDS read replica to a standalone primary, and prove it (PromoteReadReplica).

Why custom: amazon.aws.rds_instance read_replica: false reported ok and did nothing in some
states (issue 14).
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: rds_promote
short_description: Promote an RDS read replica and check that it is a standalone primary
description:
  - Calls PromoteReadReplica when the instance is still a read replica, then waits until
    DescribeDBInstances shows it standalone (no ReadReplicaSourceDBInstanceIdentifier) and
    available. Fails with what was expected and what was seen when that does not happen.
  - >-
    amazon.aws.rds_instance with read_replica=false only acts in some states: it reported ok
    and did nothing (drkit issue 11), hence this module.
  - >-
    moto 5.2.5 flips an internal flag only and keeps reporting the replica's source, so against
    moto this module fails honestly: the promotion cannot be observed there (docs/targets.md).
options:
  db_instance_identifier:
    description: The read replica to promote.
    type: str
    required: true
  region:
    description: Its AWS region.
    type: str
    required: true
  endpoint_url:
    description: Alternative endpoint (an emulated control plane).
    type: str
  timeout:
    description: Seconds to wait for the promotion to show.
    type: float
    default: 900
  interval:
    description: Seconds between describes.
    type: float
    default: 5
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Promote the RDS read replica to a standalone primary
  drkit.dr.rds_promote:
    region: eu-central-1
    db_instance_identifier: payments-db-euc1
"""

RETURN = r"""
promoted:
  description: Whether PromoteReadReplica was called by this run.
  returned: always
  type: bool
status:
  description: DBInstanceStatus when the module ended.
  returned: always
  type: str
replica_of:
  description: ReadReplicaSourceDBInstanceIdentifier when the module ended (null when
    standalone).
  returned: always
  type: str
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
            "timeout": {"type": "float", "default": 900.0},
            "interval": {"type": "float", "default": 5.0},
        },
        supports_check_mode=True,
    )
    client_error, botocore_error = aws_errors()
    p = module.params
    name = p["db_instance_identifier"]
    rds = aws_client(module, "rds")

    def describe() -> dict:
        return rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]

    try:
        db = describe()
        source = db.get("ReadReplicaSourceDBInstanceIdentifier")
        if source is None:
            module.exit_json(changed=False, promoted=False, status=db.get("DBInstanceStatus"),
                             replica_of=None)
        if module.check_mode:
            module.exit_json(changed=True, promoted=False, status=db.get("DBInstanceStatus"),
                             replica_of=source)
        rds.promote_read_replica(DBInstanceIdentifier=name)
        deadline = time.monotonic() + p["timeout"]
        while True:
            db = describe()
            source = db.get("ReadReplicaSourceDBInstanceIdentifier")
            status = db.get("DBInstanceStatus")
            if source is None and status == "available":
                module.exit_json(changed=True, promoted=True, status=status, replica_of=None)
            if time.monotonic() >= deadline:
                break
            time.sleep(p["interval"])
    except client_error as e:
        module.fail_json(msg=f"RDS instance {name} in {p['region']}: {e}")
    except botocore_error as e:
        module.fail_json(msg=f"region {p['region']} did not answer: {e}")
    module.fail_json(
        msg=f"RDS instance {name}: expected a standalone, available primary after "
            f"PromoteReadReplica; seen status {status!r}, still a read replica of {source!r} "
            f"after {p['timeout']:g}s",
        promoted=True, status=status, replica_of=source)


if __name__ == "__main__":
    main()
