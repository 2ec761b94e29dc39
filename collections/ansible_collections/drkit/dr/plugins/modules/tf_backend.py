#!/usr/bin/python
"""Terraform's S3 backend home: a versioned bucket and a DynamoDB lock table, checked.

Why custom: creates and checks the Terraform state bucket (versioned) and lock table together;
amazon.aws would take two modules and no postcondition.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: tf_backend
short_description: Create (or check) Terraform's S3 state bucket and DynamoDB lock table
description:
  - Creates the state bucket with versioning and public access blocked, and the lock table
    (hash key C(LockID), on demand), in O(region) when they are missing; then describes both
    and fails unless the bucket is versioned and the table is active with that key.
  - Put them in a region the drill never fails (a third region), so Terraform's state survives
    losing the primary region.
  - community.aws.dynamodb_table fails against moto 5.2 (it reads a TableId moto does not
    return), hence this module.
options:
  bucket:
    description: The state bucket.
    type: str
    required: true
  table:
    description: The lock table.
    type: str
    required: true
  region:
    description: The region of both (the third region).
    type: str
    required: true
  release_locks:
    description:
      - Delete the state locks held in the table (not Terraform's C(-md5) digests).
      - Only for a backend that one caller applies at a time (the lab's, under the lab's own
        lock), where a lock can only be one that a failed apply could not release and that
        would fail every later apply. Never for a shared backend.
    type: bool
    default: false
author: drkit maintainers (@drkit)
extends_documentation_fragment:
  - drkit.dr.aws.endpoint
"""

EXAMPLES = r"""
- name: Create Terraform's state home in the third region
  drkit.dr.tf_backend:
    bucket: acme-tfstate
    table: acme-tflock
    region: eu-north-1
"""

RETURN = r"""
created:
  description: What this run created (bucket, table).
  returned: always
  type: list
  elements: str
versioning:
  description: The bucket's versioning status after the call.
  returned: always
  type: str
table_status:
  description: The lock table's status after the call.
  returned: always
  type: str
released:
  description: The state locks deleted (their LockID and who held them), with O(release_locks).
  returned: always
  type: list
  elements: str
"""

import time

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "bucket": {"type": "str", "required": True},
            "table": {"type": "str", "required": True},
            "region": {"type": "str", "required": True},
            "endpoint_url": {"type": "str"},
            "release_locks": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        module.fail_json(msg="boto3 is required on the controller (it comes with drkit)")
    p = module.params
    kw = {"region_name": p["region"], "endpoint_url": p["endpoint_url"] or None}
    s3 = boto3.client("s3", **kw)
    ddb = boto3.client("dynamodb", **kw)
    created: list[str] = []
    try:
        try:
            s3.head_bucket(Bucket=p["bucket"])
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            if module.check_mode:
                module.exit_json(changed=True, created=["bucket"], released=[],
                                 versioning="", table_status="")
            args = {"Bucket": p["bucket"]}
            if p["region"] != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": p["region"]}
            s3.create_bucket(**args)
            s3.put_public_access_block(Bucket=p["bucket"], PublicAccessBlockConfiguration={
                "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True})
            created.append("bucket")
        versioning = s3.get_bucket_versioning(Bucket=p["bucket"]).get("Status", "")
        if versioning != "Enabled" and not module.check_mode:
            s3.put_bucket_versioning(Bucket=p["bucket"],
                                     VersioningConfiguration={"Status": "Enabled"})
            versioning = s3.get_bucket_versioning(Bucket=p["bucket"]).get("Status", "")
            created.append("versioning")
        try:
            table = ddb.describe_table(TableName=p["table"])["Table"]
        except ddb.exceptions.ResourceNotFoundException:
            if module.check_mode:
                module.exit_json(changed=True, created=created + ["table"], released=[],
                                 versioning=versioning, table_status="")
            ddb.create_table(
                TableName=p["table"], BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}])
            created.append("table")
            deadline = time.monotonic() + 300
            while True:
                table = ddb.describe_table(TableName=p["table"])["Table"]
                if table["TableStatus"] == "ACTIVE" or time.monotonic() > deadline:
                    break
                time.sleep(2)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json(msg=f"Terraform backend in {p['region']}: {e}", created=created)
    keys = [k["AttributeName"] for k in table.get("KeySchema", []) if k["KeyType"] == "HASH"]
    if versioning != "Enabled" or table["TableStatus"] != "ACTIVE" or keys != ["LockID"]:
        module.fail_json(msg=f"Terraform backend in {p['region']}: expected a versioned bucket "
                             f"and an active table keyed by LockID; seen versioning "
                             f"{versioning!r}, table {table['TableStatus']} keyed by {keys}",
                         created=created)
    released: list[str] = []
    if p["release_locks"]:
        try:
            for item in ddb.scan(TableName=p["table"])["Items"]:
                lock_id = item.get("LockID", {}).get("S", "")
                if "Info" not in item or lock_id.endswith("-md5"):
                    continue  # the state's digest, not a lock
                if not module.check_mode:
                    ddb.delete_item(TableName=p["table"], Key={"LockID": {"S": lock_id}})
                released.append(f"{lock_id} ({item['Info']['S']})")
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
            module.fail_json(msg=f"Terraform backend in {p['region']}: releasing locks: {e}",
                             created=created)
    module.exit_json(changed=bool(created or released), created=created, released=released,
                     versioning=versioning, table_status=table["TableStatus"])


if __name__ == "__main__":
    main()
