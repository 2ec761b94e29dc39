"""The shipped partition scenario on a lab that runs the `local` topology (issue 17): the
session's lab, pinned to local (tests/conftest.py), as a machine that cannot create network
namespaces falls back to. The drill stops before the fault with a message naming the topology
and where to read why, and leaves the lab serving from its primary.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.drills import DRKIT, make_plan, serving

pytestmark = [pytest.mark.lab]


def test_the_partition_scenario_on_a_local_lab_stops_before_the_fault(lab: Any,
                                                                      tmp_path: Path) -> None:
    assert lab.status().topology == "local"
    plan = make_plan(tmp_path)  # the shipped plan's scenarios, this test's evidence store
    proc = subprocess.run([DRKIT, "drill", "run", "region-partition", "--env", "lab", "--json",
                           "--plan", str(plan)], capture_output=True, text=True, timeout=900)
    out = json.loads(proc.stdout)
    assert proc.returncode != 0 and out["verdict"] != "pass", out["verdict"]
    phases = {p["name"]: p for p in out["phases"]}
    assert phases["region-client"]["status"] == "failed", phases["region-client"]
    message = phases["region-client"]["message"]
    assert "needs the lab's namespaces topology" in message, message
    assert "this lab runs local" in message and "drkit lab status" in message, message
    # Nothing was cut, fenced or promoted: the fault never ran.
    assert phases.get("inject-fault", {}).get("status") != "ok"
    assert out["rto"].get("actual_s") is None
    st = lab.status()
    assert st.up and st.active_region == lab.primary_region and not st.drift, st
    assert serving(lab)
