"""Pure logic of a drill: verdicts, the play-to-phase map, the one-drill-per-environment lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drkit import drill
from drkit.errors import BadInput, EnvironmentProblem

T0 = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)


def outcome(**kw: object) -> drill.DrillOutcome:
    from drkit.flows import FlowResult, FlowStatus
    from tests.drill.test_model import reconciliation

    base: dict[str, object] = dict(
        id="r1", scenario="region-failover", environment="lab", verdict=drill.Verdict.FAIL,
        started_at=T0, ended_at=T0, targets=drill.Targets(rto_s=30, rpo_s=0), phases=(),
        rto_s=4.2, rpo_s=0.0, lost_payments=0,
        smoke=(FlowResult("authorize", FlowStatus.PASS, 0.0, ""),
               FlowResult("refund", FlowStatus.PASS, 0.0, "")),
        reconciliation=reconciliation(),
    )
    base.update(kw)
    return drill.DrillOutcome(**base)  # type: ignore[arg-type]


# The verdict's rules (RTO, RPO, flows, ledger) are tested on drkit.drill.judge itself, in
# test_judge.py; the drill's use of them through its runner seam in test_drill_seam.py.


def test_json_has_the_documented_shape() -> None:
    o = outcome(verdict=drill.Verdict.PASS, evidence_id="ev1", phases=(
        drill.PhaseResult("smoke", drill.PhaseStatus.OK, T0, T0 + timedelta(seconds=1.25)),))
    data = o.to_json()
    for key in ("id", "scenario", "environment", "verdict", "started_at", "ended_at", "rto",
                "rpo", "phases", "smoke", "evidence"):
        assert key in data
    assert data["rto"]["target_s"] == 30 and data["rto"]["actual_s"] == 4.2
    assert data["rto"]["met"] is True
    assert data["rpo"] == {"target_s": 0, "actual_s": 0.0, "met": True, "lost_payments": 0}
    assert data["phases"][0] == {"name": "smoke", "status": "ok", "started_at":
                                 "2026-11-23T05:00:00Z", "duration_s": 1.25, "changed": 0,
                                 "message": "", "postconditions": [], "tasks": []}
    assert data["evidence"] == {"id": "ev1"}


def test_play_count_maps_plays_to_phases(tmp_path: Path) -> None:
    pb = tmp_path / "two.yml"
    pb.write_text(textwrap.dedent("""\
        - name: one
          hosts: localhost
          tasks: []
        - name: two
          hosts: localhost
          tasks: []
        """))
    assert drill._play_count(pb) == 2
    bad = tmp_path / "imports.yml"
    bad.write_text("- ansible.builtin.import_playbook: x.yml\n- import_playbook: y.yml\n")
    with pytest.raises(BadInput, match="cannot import playbooks"):
        drill._play_count(bad)
    empty = tmp_path / "empty.yml"
    empty.write_text("{}\n")
    with pytest.raises(BadInput, match="non-empty list of plays"):
        drill._play_count(empty)


class Notes(drill.DrillListener):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def test_second_drill_on_the_same_environment_is_refused(tmp_path: Path) -> None:
    with drill.drill_lock(tmp_path, "lab", Notes()):
        with pytest.raises(EnvironmentProblem, match="another drill is running on environment"):
            with drill.drill_lock(tmp_path, "lab", Notes()):
                pass
        # Another environment is independent.
        with drill.drill_lock(tmp_path, "staging", Notes()):
            pass


def test_lock_of_a_killed_drill_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from pathlib import Path
        from drkit import drill
        with drill.drill_lock(Path({str(tmp_path)!r}), "lab", drill.DrillListener()):
            print("locked", flush=True)
            time.sleep(60)
        """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(EnvironmentProblem, match=f"pid {child.pid}"):
            with drill.drill_lock(tmp_path, "lab", Notes()):
                pass
        os.kill(child.pid, 9)
    finally:
        child.kill()
        child.wait()
    notes = Notes()
    with drill.drill_lock(tmp_path, "lab", notes):
        pass
    assert len(notes.notes) == 1 and f"pid {child.pid}" in notes.notes[0]
    # A clean exit leaves nothing to take over.
    again = Notes()
    with drill.drill_lock(tmp_path, "lab", again):
        pass
    assert again.notes == []


def test_recover_is_not_clean_when_its_playbook_failed_even_if_payments_are_served() -> None:
    from drkit.drill import PhaseResult, PhaseStatus, Recovery

    now = datetime.now(UTC)
    ok = PhaseResult("recover", PhaseStatus.OK, now, now)
    failed = PhaseResult("recover", PhaseStatus.FAILED, now, now, (), "route53 read-back")
    assert Recovery("lab", True, "eu-west-1", "streaming", (ok,), (), "").exit_code == 0
    assert Recovery("lab", True, "eu-west-1", "streaming", (failed,), (), "").exit_code == 1
    assert Recovery("lab", True, "eu-west-1", "streaming", (), (), "").exit_code == 1
    assert Recovery("lab", False, None, "streaming", (ok,), (), "").exit_code == 3
