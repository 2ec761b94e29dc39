"""drkit.dr.tf_backend's release_locks (the lab's estate build): a state lock that a failed
apply left in the lab's lock table is released before the next apply, Terraform's state digest
is kept, and without the option nothing is touched. Against a real moto server, through drkit's
engine, as the estate playbook runs it. No lab: quick."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from drkit import engine
from tests.aws import test_aurora_and_fis as aws
from tests.aws.test_aurora_and_fis import CREDS, Moto
from tests.conftest import REPO

moto = aws.moto  # its module-scoped moto server fixture (one server for this module)
REGION, BUCKET, TABLE = "eu-north-1", "acme-tfstate", "acme-tflock"
LOCK = f"{BUCKET}/env:/eu-west-1/payments/regional.tfstate"


def _backend(tmp_path: Path, moto: Moto, release: bool) -> Any:
    play = [{"name": "Backend", "hosts": "localhost", "gather_facts": False, "tasks": [{
        "name": "Create or check the backend",
        "drkit.dr.tf_backend": {"bucket": BUCKET, "table": TABLE, "region": REGION,
                                "endpoint_url": moto.endpoint, "release_locks": release},
        "register": "drkit_backend"}, {
        "name": "Publish it",
        "ansible.builtin.set_stats": {"data": {"drkit_seen": "{{ drkit_backend }}"}}}]}]
    tmp_path.mkdir()
    pb = tmp_path / "backend.yml"
    pb.write_text(yaml.safe_dump(play, sort_keys=False))
    inv = tmp_path / "hosts.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}}}))
    r = engine.run_playbook(pb, inventory=inv, content_root=REPO,
                            artifacts_dir=tmp_path / f"runs-{release}", envvars=CREDS)
    assert r.ok, r.failure
    return r.facts["drkit_seen"]


def test_a_stale_lock_is_released_only_when_asked_and_the_digest_stays(
        tmp_path: Path, moto: Moto) -> None:
    first = _backend(tmp_path / "a", moto, release=False)
    assert first["created"] == ["bucket", "versioning", "table"] and first["released"] == []
    ddb = moto.client("dynamodb", REGION)
    info = {"ID": "d6ab17f3-7f16-adf5-70be-900af29d1274", "Operation": "OperationTypeApply",
            "Who": "root@vm", "Version": "1.11.4", "Path": LOCK}
    ddb.put_item(TableName=TABLE, Item={"LockID": {"S": LOCK}, "Info": {"S": json.dumps(info)}})
    ddb.put_item(TableName=TABLE, Item={"LockID": {"S": LOCK + "-md5"},
                                        "Digest": {"S": "0" * 32}})

    def ids() -> set[str]:
        return {i["LockID"]["S"] for i in ddb.scan(TableName=TABLE)["Items"]}

    kept = _backend(tmp_path / "b", moto, release=False)
    assert kept["released"] == [] and not kept["changed"] and ids() == {LOCK, LOCK + "-md5"}
    released = _backend(tmp_path / "c", moto, release=True)
    assert released["changed"] and len(released["released"]) == 1
    assert released["released"][0].startswith(LOCK + " (") and info["ID"] in released["released"][0]
    assert ids() == {LOCK + "-md5"}
