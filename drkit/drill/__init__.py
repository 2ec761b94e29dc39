"""A drill (issue 13: a package with seams). `model`: the typed values and the listener;
`phases`: running phase playbooks through the runner passed in; `judge`: the verdict, a pure
function of what was observed; `run`: the drill itself (locks, governance, evidence, rollback,
resume, recover).

Everything importable as `drkit.drill.X` before the split still is."""

from __future__ import annotations

from drkit.drill.judge import Finding, PhaseStatus, Verdict
from drkit.drill.model import (
    CancelToken,
    DrillListener,
    DrillOptions,
    DrillOutcome,
    GateDecision,
    GateRequest,
    PhaseResult,
    PlaybookRunner,
    Recovery,
    Resume,
    Targets,
)

# (private, used by tests)
from drkit.drill.phases import _play_count as _play_count
from drkit.drill.phases import _run_phases as _run_phases
from drkit.drill.run import (
    apply,
    check,
    drill_lock,
    find_run,
    new_run_id,
    observations,
    recover,
    resume,
    run_drill,
)
from drkit.errors import RunFailed
from drkit.targets import Target, target

__all__ = ["CancelToken", "DrillListener", "DrillOptions", "DrillOutcome", "Finding",
           "GateDecision", "GateRequest", "PhaseResult", "PhaseStatus", "PlaybookRunner",
           "Recovery", "Resume", "RunFailed", "Target", "Targets", "Verdict", "apply", "check",
           "drill_lock", "find_run", "new_run_id", "observations", "recover", "resume",
           "run_drill", "target"]
