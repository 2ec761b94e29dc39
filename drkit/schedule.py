"""Unattended drills: the files that make a scheduler run `drkit drill run` on a calendar.

One drill job (scenario, environment, plan, working directory, where reports go) is rendered
for one of four schedulers: systemd (a .service and a .timer), cron (a crontab line), GitHub
Actions and GitLab CI (a workflow / a job). Every format runs the same command, built in one
place (`DrillJob.argv`), so they cannot drift apart:

    drkit drill run SCENARIO --env ENV --plan PLAN --json --junit-xml F --metrics-file F

stdout (the JSON summary) goes to a file; the exit code of drkit is the exit code of the unit,
the cron job or the CI job, so a failing drill fails the job.

Times: every schedule is meant in UTC. systemd timers and CI schedulers are told so; classic
cron uses the machine's time zone, which the generated crontab says in a comment.

Blackout windows (change freezes, peak trading days) recur in ways cron and OnCalendar cannot
express, so they are enforced when the drill starts, not here: `DrillJob.argv` is the single
seam where a future `--respect-blackouts` flag (or a pre-check command) is added.
"""

from __future__ import annotations

import calendar
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from drkit.errors import BadInput

if TYPE_CHECKING:
    from drkit.config import Plan


class Format(StrEnum):
    SYSTEMD = "systemd"
    CRON = "cron"
    GITHUB_ACTIONS = "github-actions"
    GITLAB_CI = "gitlab-ci"


# --------------------------------------------------------------------------- cron expressions

_FIELDS = (  # name, low, high
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_DOWS = {d.lower(): (i + 1) % 7 for i, d in enumerate(calendar.day_abbr)}  # mon=1 .. sun=0
_SYSTEMD_DOW = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_ITEM = re.compile(r"^(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/([0-9]+))?$")
_CRON_HINT = "5 fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * 2'"

# Named schedules. Chosen away from the busiest times of a payment platform: weekly on
# Tuesday (not the weekend batch runs nor Monday's peak), monthly on the 15th (not month-end
# settlement, nor payroll on the 1st), at 03:00 UTC, the trough of European card traffic.
NAMED = {"weekly": "0 3 * * 2", "monthly": "0 3 15 * *"}


@dataclass(frozen=True)
class CronSchedule:
    """A validated 5-field cron expression and the sets of values it fires on."""

    expr: str  # normalised: month and day names replaced by numbers
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...] | None  # None: '*'
    months: tuple[int, ...] | None
    weekdays: tuple[int, ...] | None  # 0 = Sunday
    label: str = ""  # "weekly", "monthly" or the expression

    def matches_day(self, d: date) -> bool:
        if self.months is not None and d.month not in self.months:
            return False
        dom = self.days is None or d.day in self.days
        dow = self.weekdays is None or (d.isoweekday() % 7) in self.weekdays
        # cron's rule: when both day fields are restricted, a day matching EITHER fires.
        if self.days is not None and self.weekdays is not None:
            return dom or dow
        return dom and dow

    def next_runs(self, after: datetime, count: int = 1) -> list[datetime]:
        """The next `count` times (UTC) strictly after `after`."""
        out: list[datetime] = []
        after = after.astimezone(UTC) if after.tzinfo else after.replace(tzinfo=UTC)
        day = after.date()
        # A valid expression fires at least every 8 years (Feb 29 on a Monday is the worst).
        give_up = day + timedelta(days=366 * 8)
        while day <= give_up:
            if self.matches_day(day):
                for h in self.hours:
                    for m in self.minutes:
                        t = datetime(day.year, day.month, day.day, h, m, tzinfo=UTC)
                        if t > after:
                            out.append(t)
                            if len(out) == count:
                                return out
                            give_up = day + timedelta(days=366 * 8)
            day += timedelta(days=1)
        return out

    def on_calendar(self) -> tuple[str, ...]:
        """systemd OnCalendar= values (ORed by systemd) meaning the same times, in UTC."""
        time = f"{_spec(self.hours, 0, 23, 2)}:{_spec(self.minutes, 0, 59, 2)}:00"
        month = _spec(self.months, 1, 12, 2)
        if self.weekdays is None:
            return (f"*-{month}-{_spec(self.days, 1, 31, 2)} {time} UTC",)
        dows = _dow_spec(self.weekdays)
        by_dow = f"{dows} *-{month}-* {time} UTC"
        if self.days is None:
            return (by_dow,)
        # systemd ANDs weekday and day; cron ORs them when both are given: two timers lines.
        return (f"*-{month}-{_spec(self.days, 1, 31, 2)} {time} UTC", by_dow)

    def describe(self) -> str:
        return f"{self.label} ({self.expr}, UTC)" if self.label != self.expr else \
            f"cron '{self.expr}' (UTC)"


def parse_every(every: str) -> CronSchedule:
    """'weekly', 'monthly' or a 5-field cron expression. Raises BadInput with the fix."""
    key = every.strip().lower()
    if key in NAMED:
        return parse_cron(NAMED[key], label=key)
    if key.startswith("@"):
        raise BadInput(f"--every {every!r}: use weekly, monthly or a cron expression "
                       f"({_CRON_HINT})")
    return parse_cron(every)


def parse_cron(expr: str, *, label: str | None = None) -> CronSchedule:
    parts = expr.split()
    if len(parts) != 5:
        raise BadInput(f"cron expression {expr!r} has {len(parts)} field"
                       f"{'' if len(parts) == 1 else 's'}; expected {_CRON_HINT}")
    sets: list[tuple[int, ...] | None] = []
    normal: list[str] = []
    for text, (name, lo, hi) in zip(parts, _FIELDS, strict=True):
        names = _MONTHS if name == "month" else _DOWS if name == "day-of-week" else {}
        values, norm = _parse_field(expr, text.lower(), name, lo, hi, names)
        sets.append(values)
        normal.append(norm)
    minutes, hours, days, months, weekdays = sets
    if weekdays is not None:
        weekdays = tuple(sorted({d % 7 for d in weekdays}))  # 7 is Sunday too
        if len(weekdays) == 7:
            weekdays = None
    sched = CronSchedule(
        expr=" ".join(normal), minutes=minutes or tuple(range(60)),
        hours=hours or tuple(range(24)), days=days, months=months, weekdays=weekdays,
        label=label or " ".join(normal),
    )
    if days is not None and weekdays is None:
        # '0 3 31 2 *' is valid syntax that never fires: say so now, not in a year.
        longest = max(_month_days(m) for m in (months or range(1, 13)))
        if min(days) > longest:
            raise BadInput(f"cron expression {expr!r} never fires: no selected month has day "
                           f"{min(days)}")
    return sched


def _month_days(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


def _parse_field(expr: str, text: str, name: str, lo: int, hi: int,
                 names: dict[str, int]) -> tuple[tuple[int, ...] | None, str]:
    def value(tok: str) -> int:
        if tok.isdigit():
            v = int(tok)
        elif tok in names:
            v = names[tok]
        else:
            raise BadInput(f"cron expression {expr!r}: {name} {tok!r} is not a number"
                           + (f" or a name ({', '.join(list(names)[:3])}, ...)" if names else ""))
        if not lo <= v <= hi:
            raise BadInput(f"cron expression {expr!r}: {name} {v} is out of range {lo}-{hi}")
        return v

    out: set[int] = set()
    norm_items = []
    for item in text.split(","):
        m = _ITEM.match(item)
        if not m:
            raise BadInput(f"cron expression {expr!r}: {name} {item!r} is not valid "
                           "(use *, N, N-M, */S or N-M/S, separated by commas)")
        star, a, b, step = m.groups()
        if step is not None and int(step) == 0:
            raise BadInput(f"cron expression {expr!r}: {name} step 0 is not valid")
        if star:
            start, end = lo, hi
            norm = "*"
        else:
            start = value(a)
            end = value(b) if b is not None else (hi if step else start)
            if end < start:
                raise BadInput(f"cron expression {expr!r}: {name} range {a}-{b} runs backwards")
            if step and b is None:
                # 'N/S' is a systemd and cronie extension that vixie cron rejects.
                raise BadInput(f"cron expression {expr!r}: {name} {item!r}: write {a}-{hi}/"
                               f"{step} (plain cron has no N/S form)")
            norm = str(start) if b is None else f"{start}-{end}"
        if step:
            norm += f"/{step}"
        norm_items.append(norm)
        out.update(range(start, end + 1, int(step or 1)))
    full = set(range(lo, hi + 1))
    if name == "day-of-week":
        full = set(range(0, 7))
        if {v % 7 for v in out} >= full:
            return None, ",".join(norm_items)
    if out >= full:
        return None, ",".join(norm_items)
    return tuple(sorted(out)), ",".join(norm_items)


def _runs(values: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    start = prev = values[0]
    for v in values[1:]:
        if v != prev + 1:
            yield start, prev
            start = v
        prev = v
    yield start, prev


def _spec(values: tuple[int, ...] | None, lo: int, hi: int, width: int) -> str:
    if values is None or values == tuple(range(lo, hi + 1)):
        return "*"
    parts = []
    for a, b in _runs(values):
        if b - a >= 2:
            parts.append(f"{a:0{width}d}..{b:0{width}d}")
        else:
            parts.extend(f"{v:0{width}d}" for v in range(a, b + 1))
    return ",".join(parts)


def _dow_spec(values: tuple[int, ...]) -> str:
    parts = []
    for a, b in _runs(values):
        if b - a >= 2:
            parts.append(f"{_SYSTEMD_DOW[a]}..{_SYSTEMD_DOW[b]}")
        else:
            parts.extend(_SYSTEMD_DOW[v] for v in range(a, b + 1))
    return ",".join(parts)


# --------------------------------------------------------------------------- the job

_UNIT_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")
REPORTS_DIR = "drkit-reports"


@dataclass(frozen=True)
class DrillJob:
    """What a scheduler runs. Paths are absolute for systemd/cron, repo-relative for CI."""

    scenario: str
    environment: str
    plan: str  # the plan file, as the scheduler will see it
    workdir: str  # the directory the command runs in (the plan's directory)
    drkit: str = "drkit"  # the executable
    reports_dir: str = REPORTS_DIR  # relative to workdir unless absolute
    metrics_file: str | None = None  # default: <reports_dir>/drkit.prom
    confirm: str | None = None  # a protected environment's name, confirmed at schedule time
    # Scheduled runs skip blackout windows (exit 0, "skipped"), rather than fail the job: cron
    # and OnCalendar cannot say "except month-end", so the run itself checks. They also skip
    # when another command is changing the environment (drkit.envlock): a run never waits, so
    # runs never pile up behind a long drill, and the skip names who held it.
    extra_args: tuple[str, ...] = field(default=("--skip-in-blackout", "--skip-if-busy"))

    @property
    def slug(self) -> str:
        return f"{self.scenario}-{self.environment}"

    @property
    def summary_file(self) -> str:
        return str(PurePosixPath(self.reports_dir) / f"{self.slug}.json")

    @property
    def junit_file(self) -> str:
        return str(PurePosixPath(self.reports_dir) / f"{self.slug}.junit.xml")

    @property
    def metrics_path(self) -> str:
        return self.metrics_file or str(PurePosixPath(self.reports_dir) / "drkit.prom")

    def argv(self) -> list[str]:
        """The one command every format runs (stdout, the JSON summary, goes to summary_file)."""
        args = [self.drkit, "drill", "run", self.scenario, "--env", self.environment,
                "--plan", self.plan, "--json", "--junit-xml", self.junit_file,
                "--metrics-file", self.metrics_path]
        if self.confirm:
            args += ["--confirm", self.confirm]
        return args + list(self.extra_args)

    def shell(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv())


def job_for(plan: Plan, scenario: str, environment: str, *, fmt: Format,
            drkit: str = "drkit", confirm: str | None = None,
            reports_dir: str | None = None, metrics_file: str | None = None) -> DrillJob:
    """A job for a scenario and environment the plan declares. Raises BadInput otherwise.

    A protected environment needs `confirm` equal to its name: scheduling a production drill
    is the moment the guard rail of `drill run --confirm` is passed, once, by a person.
    """
    plan.scenario(scenario)
    env = plan.environment(environment)
    for what, name in (("scenario", scenario), ("environment", environment)):
        if any(ord(c) < 32 or c == "\x7f" for c in name):
            raise BadInput(f"{what} {name!r} contains control characters; rename it in the plan")
    if env.protected and confirm != environment:
        raise BadInput(f"environment {environment!r} is protected: add --confirm {environment} "
                       "to schedule unattended drills there")
    if fmt == Format.SYSTEMD:
        for what, name in (("scenario", scenario), ("environment", environment)):
            if not _UNIT_SAFE.match(name):
                raise BadInput(f"{what} {name!r} cannot be part of a systemd unit name (use "
                               "letters, digits, '.', '_', '-')")
    local = fmt in (Format.SYSTEMD, Format.CRON)
    if local:
        # The unit or crontab runs from anywhere: absolute plan and working directory.
        plan_path, workdir = str(plan.path), str(plan.root)
    else:
        # A CI job runs at the root of a checkout of the repository that holds the plan: run
        # from the plan's directory, named relative to that root.
        workdir = _repo_relative(plan.root)
        plan_path = plan.path.name
    reports = reports_dir or REPORTS_DIR
    metrics = metrics_file
    if local:
        # The default sits beside the plan; a path the user typed is relative to where they are.
        reports = str(plan.root / REPORTS_DIR) if reports_dir is None else \
            str(Path(reports_dir).absolute())
        metrics = str(Path(metrics).absolute()) if metrics else None
    return DrillJob(scenario=scenario, environment=environment, plan=plan_path, workdir=workdir,
                    drkit=drkit, reports_dir=reports, metrics_file=metrics,
                    confirm=confirm if env.protected else None)


def _repo_relative(directory: Path) -> str:
    for parent in (directory, *directory.parents):
        if (parent / ".git").exists():
            rel = directory.relative_to(parent).as_posix()
            return rel or "."
    return "."


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class GeneratedFile:
    name: str  # suggested file name (for -o DIR)
    content: str


def render(job: DrillJob, when: CronSchedule, fmt: Format | str, *,
           runner: str = "self-hosted", timeout_minutes: int = 120) -> list[GeneratedFile]:
    """The files for one scheduler. `runner`: GitHub runs-on label / GitLab runner tag."""
    fmt = Format(fmt)
    if fmt == Format.SYSTEMD:
        return _systemd(job, when, timeout_minutes)
    if fmt == Format.CRON:
        return [GeneratedFile(f"drkit-drill-{job.slug}.cron", _cron(job, when))]
    if fmt == Format.GITHUB_ACTIONS:
        return [GeneratedFile(f"drkit-drill-{job.slug}.yml",
                              _github(job, when, runner, timeout_minutes))]
    return [GeneratedFile(f"drkit-drill-{job.slug}.gitlab-ci.yml",
                          _gitlab(job, when, runner, timeout_minutes))]


def unit_name(job: DrillJob) -> str:
    return f"drkit-drill-{job.slug}"


def _systemd_quote(arg: str) -> str:
    # '%' starts a specifier and '$' an environment variable in unit files: double them.
    arg = arg.replace("%", "%%").replace("$", "$$")
    if re.search(r"[\s\"'\\;]", arg) or not arg:
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def _systemd(job: DrillJob, when: CronSchedule, timeout_minutes: int) -> list[GeneratedFile]:
    name = unit_name(job)
    what = f"drkit DR drill {job.scenario} on {job.environment}"
    exec_start = " ".join(_systemd_quote(a) for a in job.argv())
    # file:/truncate: paths take no quotes; only specifiers need escaping.
    summary = job.summary_file.replace("%", "%%")
    service = f"""\
# Generated by `drkit schedule`: {what}, {when.describe()}.
[Unit]
Description={what}
Documentation=man:systemd.timer(5)
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
WorkingDirectory={job.workdir.replace("%", "%%")}
ExecStartPre=/bin/mkdir -p {_systemd_quote(job.reports_dir)}
ExecStart={exec_start}
# The JSON summary is drkit's stdout; progress and errors (stderr) go to the journal.
StandardOutput=truncate:{summary}
StandardError=journal
# A drill that hangs is stopped like Ctrl-C: SIGTERM to drkit alone first (KillMode=mixed),
# so it can roll back and seal its evidence record before anything else is killed.
TimeoutStartSec={timeout_minutes}min
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=15min
"""
    calendars = "\n".join(f"OnCalendar={c}" for c in when.on_calendar())
    timer = f"""\
# Generated by `drkit schedule`: {what}, {when.describe()}.
[Unit]
Description=Schedule of {what}

[Timer]
{calendars}
Unit={name}.service
AccuracySec=1min
# No catch-up after downtime: a destructive drill must run at its planned time, never at boot.
Persistent=false

[Install]
WantedBy=timers.target
"""
    return [GeneratedFile(f"{name}.service", service), GeneratedFile(f"{name}.timer", timer)]


def _cron(job: DrillJob, when: CronSchedule) -> str:
    # In a crontab an unescaped '%' ends the command and starts stdin: escape every one.
    cmd = (f"cd {shlex.quote(job.workdir)} && mkdir -p {shlex.quote(job.reports_dir)} && "
           f"{job.shell()} > {shlex.quote(job.summary_file)}").replace("%", "\\%")
    return (f"# drkit DR drill {job.scenario} on {job.environment}, {when.describe()}.\n"
            "# Cron uses this machine's time zone; the schedule was written for UTC.\n"
            "# Install with `crontab -e`. drkit's progress and errors (stderr) reach cron's\n"
            "# MAILTO; the JSON summary goes to the file after '>'.\n"
            f"{when.expr} {cmd}\n")


def _from_root(job: DrillJob, path: str) -> str:
    """A path the CI job writes, as artifact uploaders see it: relative to the checkout root."""
    if job.workdir in ("", ".") or PurePosixPath(path).is_absolute():
        return path
    return str(PurePosixPath(job.workdir) / path)


def _yaml_str(value: str) -> str:
    # JSON strings are valid YAML scalars: quoting without a YAML library.
    import json

    return json.dumps(value)


def _github(job: DrillJob, when: CronSchedule, runner: str, timeout_minutes: int) -> str:
    q = _yaml_str
    return f"""\
# Generated by `drkit schedule`: drkit DR drill {job.scenario} on {job.environment},
# {when.describe()}. Put it in .github/workflows/ of the repository that holds {job.plan}.
# The runner must reach the environment ({runner!s}) and have drkit installed.
name: {q(f"DR drill {job.scenario} on {job.environment}")}
on:
  schedule:
    - cron: {q(when.expr)}
  workflow_dispatch: {{}}
# Never two drills of one environment at once, and never cancel one half way (it rolls back).
concurrency:
  group: {q(f"drkit-drill-{job.environment}")}
  cancel-in-progress: false
permissions:
  contents: read
jobs:
  drill:
    runs-on: {q(runner)}
    timeout-minutes: {timeout_minutes}
    steps:
      - uses: actions/checkout@v4
      - name: drkit is installed
        run: {q(f"{shlex.quote(job.drkit)} --version")}
      - name: {q(f"Run the {job.scenario} drill on {job.environment}")}
        shell: bash
        working-directory: {q(job.workdir)}
        run: |
          mkdir -p {shlex.quote(job.reports_dir)}
          {job.shell()} > {shlex.quote(job.summary_file)}
      - name: Keep the drill reports
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: {q(f"drkit-drill-{job.slug}")}
          path: {q(_from_root(job, job.reports_dir))}
          if-no-files-found: warn
"""


def _gitlab(job: DrillJob, when: CronSchedule, runner: str, timeout_minutes: int) -> str:
    q = _yaml_str
    key = f"drkit-drill-{job.slug}"
    return f"""\
# Generated by `drkit schedule`: drkit DR drill {job.scenario} on {job.environment},
# {when.describe()}. Include it from .gitlab-ci.yml.
# GitLab keeps schedules outside the YAML: create one in Build > Pipeline schedules with
#   interval pattern: {when.expr}   cron timezone: UTC
#   variable:        DRKIT_SCHEDULE = {key}
# (or POST /projects/:id/pipeline_schedules with cron="{when.expr}" cron_timezone=UTC).
{key}:
  stage: test
  tags: [{q(runner)}]
  rules:
    - if: {q(f'$CI_PIPELINE_SOURCE == "schedule" && $DRKIT_SCHEDULE == "{key}"')}
  # Never two drills of one environment at once.
  resource_group: {q(f"drkit-drill-{job.environment}")}
  timeout: {timeout_minutes} minutes
  script:
    - {q(f"cd {shlex.quote(job.workdir)}")}
    - {q(f"mkdir -p {shlex.quote(job.reports_dir)}")}
    - {q(f"{job.shell()} > {shlex.quote(job.summary_file)}")}
  artifacts:
    when: always
    paths:
      - {q(_from_root(job, job.reports_dir))}
    reports:
      junit: {q(_from_root(job, job.junit_file))}
"""


def write(files: list[GeneratedFile], dest: Path, fmt: Format | str) -> list[Path]:
    """Write generated files. systemd: `dest` is a directory; others: `dest` is the file."""
    from drkit.errors import RunFailed
    from drkit.files import atomic_write

    fmt = Format(fmt)
    try:
        if fmt == Format.SYSTEMD:
            if dest.exists() and not dest.is_dir():
                raise BadInput(f"-o {dest}: systemd writes two units; give a directory")
            dest.mkdir(parents=True, exist_ok=True)
            targets = [(dest / f.name, f) for f in files]
        else:
            if dest.is_dir():
                targets = [(dest / files[0].name, files[0])]
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                targets = [(dest, files[0])]
        out = []
        for path, f in targets:
            # 0644: a scheduler (cron, systemd) may read it as another user.
            atomic_write(path, f.content.encode("utf-8"), mode=0o644)
            out.append(path)
        return out
    except OSError as e:
        raise RunFailed(f"-o {dest}: cannot write ({e.strerror})") from None


__all__ = ["NAMED", "CronSchedule", "DrillJob", "Format", "GeneratedFile", "job_for",
           "parse_cron", "parse_every", "render", "unit_name", "write"]
