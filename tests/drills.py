"""Helpers for tests that run drills on the lab: a plan of the test's own (a copy of drkit.yml
in a temporary directory, with the repository's playbooks, inventories and ansible.cfg symlinked,
its own evidence store and signing key), the installed `drkit drill run`, and a serving check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DRKIT = str(Path(sys.executable).parent / "drkit")


def make_plan(tmp: Path, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A plan like the repository's, in `tmp`, with its own evidence store and key."""
    for name in ("playbooks", "inventories", "ansible.cfg"):
        (tmp / name).symlink_to(REPO / name)
    data = yaml.safe_load((REPO / "drkit.yml").read_text())
    data["evidence"]["store"] = "./evidence"
    data["evidence"]["signing_key"] = "keys/evidence.key"
    if edit:
        edit(data)
    plan = tmp / "drkit.yml"
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    subprocess.run([DRKIT, "evidence", "keygen", "-o", str(tmp / "keys" / "evidence.key")],
                   check=True, capture_output=True)
    return plan


def drill(plan: Path, *args: str, timeout: float = 600) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [DRKIT, "drill", "run", "region-failover", "--env", "lab", "--json", "--plan",
         str(plan), *args], capture_output=True, text=True, timeout=timeout)
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"no JSON (rc {proc.returncode}): {proc.stdout[-2000:]}\n"
                             f"{proc.stderr[-3000:]}") from None
    return proc.returncode, out, proc.stderr


def serving(lab: Any) -> bool:
    """A payment goes through the public TLS entry point and is readable back."""
    status, body = lab.https_post("/payments", {
        "amount_cents": 100, "currency": "EUR", "from_account": "t-a", "to_account": "t-b"},
        headers={"Idempotency-Key": f"serving-{time.time_ns()}"})
    if status != 201:
        return False
    status, again = lab.https_get(f"/payments/{body['id']}")
    return status == 200 and again["id"] == body["id"]
