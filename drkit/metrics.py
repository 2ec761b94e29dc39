"""Prometheus textfile-collector metrics of the last drill per scenario, environment and service.

node_exporter's textfile collector reads `*.prom` files from a directory; a half-written file
would be read as garbage, so the file is written to a dot-file in the same directory, fsynced
and renamed over the old one. Several drills (scenarios, environments) share one file: their
samples are merged, and a drill replaces only the samples with its own scenario and environment.

Gauges (labels scenario, environment, service):

    drkit_drill_last_run_timestamp_seconds   when the drill ended (Unix time)
    drkit_drill_success                      1 if the verdict was pass, else 0
    drkit_drill_rto_seconds                  measured RTO (NaN when not measured)
    drkit_drill_rpo_seconds                  measured RPO (NaN when not measured)
    drkit_drill_rto_target_seconds           the service's RTO target
    drkit_drill_rpo_target_seconds           the service's RPO target
    drkit_drill_lost_payments                acknowledged payments lost (NaN when not measured)
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit import files
from drkit.errors import RunFailed

if TYPE_CHECKING:
    from drkit.config import Plan

log = logging.getLogger("drkit.metrics")

FAMILIES = {
    "drkit_drill_last_run_timestamp_seconds": "Unix time the last drill ended.",
    "drkit_drill_success": "1 if the last drill passed (all targets met), else 0.",
    "drkit_drill_rto_seconds": "Recovery time measured by the last drill (NaN: not measured).",
    "drkit_drill_rpo_seconds": "Data-loss window measured by the last drill (NaN: not measured).",
    "drkit_drill_rto_target_seconds": "RTO target of the service in the plan.",
    "drkit_drill_rpo_target_seconds": "RPO target of the service in the plan.",
    "drkit_drill_lost_payments": "Acknowledged payments lost in the last drill (NaN: not "
                                 "measured).",
}
LABELS = ("scenario", "environment", "service")
# Readable by node_exporter, which runs as its own user: these numbers are not secret.
FILE_MODE = 0o644


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)

    def line(self) -> str:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in self.labels)
        return f"{self.name}{{{inner}}} {_fmt(self.value)}" if inner else \
            f"{self.name} {_fmt(self.value)}"


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    type: str
    samples: tuple[Sample, ...]


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(int(v)) if v == int(v) and abs(v) < 2**53 else repr(v)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse(text: str) -> dict[str, Family]:
    """Parse the text exposition format (the subset textfiles use). Bad lines are skipped."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: dict[str, list[Sample]] = {}
    order: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            bits = line.split(None, 3)
            if len(bits) >= 3 and bits[1] in ("HELP", "TYPE"):
                (helps if bits[1] == "HELP" else types)[bits[2]] = bits[3] if len(bits) > 3 \
                    else ""
                if bits[2] not in order:
                    order.append(bits[2])
            continue
        m = _SAMPLE.match(line)
        labels: list[tuple[str, str]] = []
        if m and m.group(2):
            pos, body = 0, m.group(2)
            while pos < len(body):
                lm = _LABEL.match(body, pos)
                if not lm:
                    m = None
                    break
                labels.append((lm.group(1), _unescape(lm.group(2))))
                pos = lm.end()
        try:
            value = float(m.group(3)) if m else None
        except ValueError:
            value = None
        if m is None or value is None:
            log.warning("metrics file line %d is not a sample; dropped", n)
            continue
        name = m.group(1)
        if name not in order:
            order.append(name)
        samples.setdefault(name, []).append(Sample(name, tuple(labels), value))
    return {name: Family(name, helps.get(name, ""), types.get(name, "untyped"),
                         tuple(samples.get(name, ())))
            for name in order}


def render(families: Mapping[str, Family]) -> str:
    out = []
    for name in sorted(families):
        f = families[name]
        if not f.samples:
            continue
        if f.help:
            out.append(f"# HELP {name} {f.help}")
        out.append(f"# TYPE {name} {f.type}")
        out.extend(s.line() for s in sorted(f.samples, key=lambda s: s.labels))
    return "\n".join(out) + "\n"


def _mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _num(v: Any) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return math.nan


def samples_for(outcome: Mapping[str, Any], *, plan: Plan | None = None) -> list[Sample]:
    """The samples of one drill outcome (DrillOutcome.to_json()).

    With the plan, one set per service of the scenario, each with its own targets; without,
    one set labelled service="all" with the outcome's targets.
    """
    scenario = str(outcome.get("scenario") or "")
    env = str(outcome.get("environment") or "")
    rto, rpo = _mapping(outcome.get("rto")), _mapping(outcome.get("rpo"))
    ended = outcome.get("ended_at") or outcome.get("started_at")
    try:
        ts = datetime.fromisoformat(str(ended).replace("Z", "+00:00")).timestamp()
    except ValueError:
        ts = math.nan
    services: list[tuple[str, float, float]] = []
    if plan is not None and scenario in plan.model.scenarios:
        for name in plan.model.scenarios[scenario].services:
            svc = plan.model.services[name]
            services.append((name, svc.rto, svc.rpo))
    if not services:
        services.append(("all", _num(rto.get("target_s")), _num(rpo.get("target_s"))))
    success = 1.0 if str(outcome.get("verdict")) == "pass" else 0.0
    out = []
    for service, rto_t, rpo_t in services:
        labels = (("scenario", scenario), ("environment", env), ("service", service))
        values = {
            "drkit_drill_last_run_timestamp_seconds": ts,
            "drkit_drill_success": success,
            "drkit_drill_rto_seconds": _num(rto.get("actual_s")),
            "drkit_drill_rpo_seconds": _num(rpo.get("actual_s")),
            "drkit_drill_rto_target_seconds": rto_t,
            "drkit_drill_rpo_target_seconds": rpo_t,
            "drkit_drill_lost_payments": _num(rpo.get("lost_payments")),
        }
        out += [Sample(name, labels, v) for name, v in values.items()]
    return out


def merge(existing: Mapping[str, Family], new: list[Sample]) -> dict[str, Family]:
    """Replace the samples of the new drill's scenario+environment; keep every other sample."""
    keys = {(s.label("scenario"), s.label("environment")) for s in new}
    out: dict[str, Family] = {}
    for name, fam in existing.items():
        kept = tuple(s for s in fam.samples
                     if name not in FAMILIES
                     or (s.label("scenario"), s.label("environment")) not in keys)
        out[name] = Family(name, fam.help, fam.type, kept)
    for s in new:
        fam = out.get(s.name) or Family(s.name, FAMILIES[s.name], "gauge", ())
        out[s.name] = Family(s.name, FAMILIES[s.name], "gauge", fam.samples + (s,))
    return out


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two drills ending together must not lose each other's samples (read-merge-write).
    # The collector reads only *.prom, so the lock file beside it is invisible to it.
    with files.locked(path.with_name(f".{path.name}.lock"), follow=True):
        yield


def write_textfile(path: str | Path, outcome: Mapping[str, Any], *,
                   plan: Plan | None = None) -> Path | None:
    """Merge the outcome's samples into the textfile at `path`, atomically.

    A dry run (`"dry_run": true`) writes nothing and returns None: a check-mode run proves no
    recovery, and alerting reads drkit_drill_last_run_timestamp_seconds as "last drilled".
    Raises RunFailed when the file cannot be written (the caller decides whether that matters).
    """
    if outcome.get("dry_run"):
        return None
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            try:
                existing = parse(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                existing = {}
            except UnicodeDecodeError:
                log.warning("metrics file %s is not UTF-8 text; replacing it", path)
                existing = {}
            text = render(merge(existing, samples_for(outcome, plan=plan)))
            # FILE_MODE set with fchmod: the umask must not make it unreadable to the collector.
            files.atomic_write(path, text.encode("utf-8"), mode=FILE_MODE)
    except OSError as e:
        raise RunFailed(f"--metrics-file {path}: cannot write ({e.strerror or e})") from None
    return path


__all__ = ["FAMILIES", "Family", "Sample", "merge", "parse", "render", "samples_for",
           "write_textfile"]
