"""Blackout windows stop drills and runbooks at the door, through the installed command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DRKIT = str(Path(sys.executable).parent / "drkit")


def plan_in_blackout(tmp: Path) -> Path:
    for name in ("playbooks", "inventories", "ansible.cfg", "runbooks"):
        (tmp / name).symlink_to(REPO / name)
    data = yaml.safe_load((REPO / "drkit.yml").read_text())
    # Two daily windows that together cover the day: always inside one.
    data["blackouts"] = [{"name": "freeze for the test", "every": "day", "start": start,
                          "end": end, "timezone": "Europe/London"}
                         for start, end in (("00:00", "12:00"), ("12:00", "00:00"))]
    plan = tmp / "drkit.yml"
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    return plan


def drkit(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    lab = tmp / "lab"
    proc = subprocess.run([DRKIT, *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "DRKIT_LAB_DIR": str(lab),
                               "DRKIT_LAB_PORT_BASE": "59000"})
    # A run refused at the door writes nothing: not even the lab's run directory.
    assert not lab.exists()
    return proc


def test_drill_inside_a_blackout_is_refused_or_skipped(tmp_path: Path) -> None:
    plan = str(plan_in_blackout(tmp_path))
    refused = drkit(tmp_path, "drill", "run", "region-failover", "--env", "lab", "--plan", plan)
    assert refused.returncode == 2, refused.stderr
    assert "inside blackout window 'freeze for the test'" in refused.stderr
    assert "--override-blackout" in refused.stderr and "Traceback" not in refused.stderr
    skipped = drkit(tmp_path, "drill", "run", "region-failover", "--env", "lab", "--plan", plan,
                    "--skip-in-blackout", "--json")
    assert skipped.returncode == 0, skipped.stderr
    out = json.loads(skipped.stdout)
    assert out["verdict"] == "skipped" and "freeze for the test" in out["reasons"][0]


def test_runbook_inside_a_blackout_is_refused(tmp_path: Path) -> None:
    plan = str(plan_in_blackout(tmp_path))
    refused = drkit(tmp_path, "runbook", "run", "cert-rotation", "--env", "lab", "--plan", plan,
                    "--yes")
    assert refused.returncode == 2, refused.stderr
    assert "inside blackout window 'freeze for the test'" in refused.stderr
