"""`drkit schedule`: cron validation, OnCalendar translation, and the generated files.

The generated commands are executed for real with a stand-in drkit (a shell script that
records its arguments and exits 1), so quoting, the summary redirect and exit-code
propagation are proven, not just grepped. systemd units go through `systemd-analyze verify`
when it is installed (Debian package `systemd`); structural checks run always.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from drkit.cli import app
from drkit.config import Plan, load_plan
from drkit.errors import BadInput
from drkit.schedule import Format, job_for, parse_cron, parse_every, render

PLAN = """\
version: 1
name: sched-test
regions: {primary: eu-west-1, secondary: eu-central-1}
environments:
  lab: {inventory: inventory.ini, lab: true}
  production: {inventory: inventory.ini, protected: true}
services:
  payments: {tier: 1, rto: 30s, rpo: 0s}
scenarios:
  region-failover:
    services: [payments]
    phases:
      - {name: preflight, playbook: pb/preflight.yml}
"""

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _no_analyzer(what: str) -> None:
    # Not a skip: the structural checks above this call ran; say loudly what did not.
    warnings.warn(f"systemd-analyze is missing (Debian package systemd): {what} not run",
                  stacklevel=2)


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    # A directory name with a space and a '%': both are special in unit files and crontabs.
    root = tmp_path / "dr plans%1"
    (root / "pb").mkdir(parents=True)
    (root / "pb" / "preflight.yml").write_text("- hosts: all\n  tasks: []\n")
    (root / "inventory.ini").write_text("localhost\n")
    (root / "drkit.yml").write_text(PLAN)
    return load_plan(root / "drkit.yml")


@pytest.fixture
def fake_drkit(tmp_path: Path) -> Path:
    """A stand-in drkit: prints a JSON line, records argv one per line, and fails (exit 1)."""
    script = tmp_path / "bin" / "drkit"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\nprintf \'%s\\n\' "$@" > "$FAKE_ARGV"\n'
                      'echo \'{"verdict": "fail"}\'\necho progress >&2\nexit 1\n')
    script.chmod(0o755)
    return script


def _invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


# --------------------------------------------------------------------------- cron expressions


@pytest.mark.parametrize("expr, oncalendar", [
    ("weekly", ("Tue *-*-* 03:00:00 UTC",)),
    ("monthly", ("*-*-15 03:00:00 UTC",)),
    ("*/15 2-4 * * *", ("*-*-* 02..04:00,15,30,45:00 UTC",)),
    ("0 3 * * mon-fri", ("Mon..Fri *-*-* 03:00:00 UTC",)),
    ("30 1 1,15 * 0", ("*-*-01,15 01:30:00 UTC", "Sun *-*-* 01:30:00 UTC")),
    ("0 0 29 feb *", ("*-02-29 00:00:00 UTC",)),
    ("5 4 * * 7", ("Sun *-*-* 04:05:00 UTC",)),
    ("0 12 * jan-mar,dec 1,3,5", ("Mon,Wed,Fri *-01..03,12-* 12:00:00 UTC",)),
])
def test_cron_translates_to_oncalendar(expr: str, oncalendar: tuple[str, ...]) -> None:
    sched = parse_every(expr)
    assert sched.on_calendar() == oncalendar
    if SYSTEMD_ANALYZE is None:
        _no_analyzer("OnCalendar next-elapse comparison")
        return
    # systemd's own calendar engine must fire at exactly the times cron's rules give.
    base = datetime(2025, 1, 1, tzinfo=UTC)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "calendar", "--iterations=6", "--base-time=2025-01-01 00:00:00 UTC",
         *oncalendar], capture_output=True, text=True, env={**os.environ, "TZ": "UTC"},
        check=False)
    assert proc.returncode == 0, proc.stderr
    found = sorted({datetime.strptime(m, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                    for m in re.findall(r"(?:Next elapse|Iter\. #\d+): \w{3} (\S+ \S+) UTC",
                                        proc.stdout)})
    assert sched.next_runs(base, 6) == found[:6]


def test_cron_day_fields_are_ored_like_cron() -> None:
    # 1st of the month OR a Sunday: Jan 2025 starts on a Wednesday.
    runs = parse_cron("0 0 1 * 0").next_runs(datetime(2025, 1, 1, tzinfo=UTC), 3)
    assert [r.day for r in runs] == [5, 12, 19]
    runs = parse_cron("0 0 1 * 0").next_runs(datetime(2024, 12, 31, tzinfo=UTC), 2)
    assert [r.day for r in runs] == [1, 5]


@pytest.mark.parametrize("expr, message", [
    ("0 3 * *", r"has 4 fields; expected 5 fields: minute hour"),
    ("0 3 * * * *", r"has 6 fields"),
    ("60 3 * * *", r"minute 60 is out of range 0-59"),
    ("0 24 * * *", r"hour 24 is out of range 0-23"),
    ("0 3 0 * *", r"day-of-month 0 is out of range 1-31"),
    ("0 3 * 13 *", r"month 13 is out of range 1-12"),
    ("0 3 * * 8", r"day-of-week 8 is out of range 0-7"),
    ("0 3 * * funday", r"day-of-week 'funday' is not a number or a name"),
    ("*/0 3 * * *", r"step 0 is not valid"),
    ("0 5-2 * * *", r"range 5-2 runs backwards"),
    ("0 3 31 2 *", r"never fires: no selected month has day 31"),
    ("0 3 L * *", r"day-of-month 'l' is not a number"),
    ("5/10 * * * *", r"write 5-59/10 \(plain cron has no N/S form\)"),
    ("@hourly", r"use weekly, monthly or a cron expression"),
])
def test_bad_cron_expressions_say_what_and_how(expr: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_every(expr)


def test_bad_cron_on_the_command_line_is_one_line_and_exit_2(plan: Plan) -> None:
    code, out, err = _invoke("schedule", "region-failover", "--env", "lab", "--every",
                             "0 25 * * *", "--format", "cron", "--plan", str(plan.path))
    assert code == 2
    assert out == ""
    assert err.strip().splitlines() == [
        "drkit: cron expression '0 25 * * *': hour 25 is out of range 0-23"]


def test_unknown_scenario_and_protected_environment(plan: Plan) -> None:
    code, _, err = _invoke("schedule", "nope", "--env", "lab", "--every", "weekly",
                           "--format", "cron", "--plan", str(plan.path))
    assert code == 2 and "unknown scenario 'nope'" in err
    code, _, err = _invoke("schedule", "region-failover", "--env", "production", "--every",
                           "weekly", "--format", "cron", "--plan", str(plan.path))
    assert code == 2 and "add --confirm production" in err
    job = job_for(plan, "region-failover", "production", fmt=Format.CRON, confirm="production")
    assert job.argv()[-4:] == ["--confirm", "production", "--skip-in-blackout", "--skip-if-busy"]


# --------------------------------------------------------------------------- systemd


def _unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("[") and s.endswith("]"):
            current = sections.setdefault(s[1:-1], {})
            continue
        assert current is not None and "=" in s, f"not a key=value line in a section: {line!r}"
        k, _, v = s.partition("=")
        current.setdefault(k, []).append(v)
    return sections


def test_systemd_units_are_valid_and_run_the_drill(plan: Plan, tmp_path: Path) -> None:
    out = tmp_path / "units"
    code, stdout, err = _invoke("schedule", "region-failover", "--env", "lab", "--every",
                                "0 3 1 * 0", "--format", "systemd", "-o", str(out),
                                "--plan", str(plan.path))
    assert code == 0, err
    service = out / "drkit-drill-region-failover-lab.service"
    timer = out / "drkit-drill-region-failover-lab.timer"
    assert f"wrote {service}" in stdout and f"wrote {timer}" in stdout
    assert sorted(p.name for p in out.iterdir()) == [service.name, timer.name]

    svc = _unit_sections(service.read_text())
    s = svc["Service"]
    assert s["Type"] == ["oneshot"]
    assert s["WorkingDirectory"] == [str(plan.root).replace("%", "%%")]
    exec_start = s["ExecStart"][0]
    for flag in ("drill run region-failover", "--env lab", "--json", "--junit-xml",
                 "--metrics-file", "--plan"):
        assert flag in exec_start
    assert exec_start.split()[0].startswith("/") and exec_start.split()[0].endswith("drkit")
    assert "%%1" in exec_start and "%1/" not in exec_start.replace("%%1", "")
    assert s["StandardOutput"][0].startswith("truncate:")
    assert s["StandardOutput"][0].endswith("drkit-reports/region-failover-lab.json")
    assert s["KillMode"] == ["mixed"]

    tmr = _unit_sections(timer.read_text())
    # cron ORs the two day fields; systemd ANDs them: two OnCalendar lines.
    assert tmr["Timer"]["OnCalendar"] == ["*-*-01 03:00:00 UTC", "Sun *-*-* 03:00:00 UTC"]
    assert tmr["Timer"]["Unit"] == [service.name]
    assert tmr["Timer"]["Persistent"] == ["false"]
    assert tmr["Install"]["WantedBy"] == ["timers.target"]

    if SYSTEMD_ANALYZE is None:
        _no_analyzer("systemd-analyze verify")
        return
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", str(service), str(timer)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    mine = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "drkit-drill" in ln]
    assert mine == [], mine


def test_systemd_refuses_a_file_for_two_units(plan: Plan, tmp_path: Path) -> None:
    f = tmp_path / "a-file"
    f.write_text("")
    code, _, err = _invoke("schedule", "region-failover", "--env", "lab", "--every", "weekly",
                           "--format", "systemd", "-o", str(f), "--plan", str(plan.path))
    assert code == 2 and "give a directory" in err


# --------------------------------------------------------------------------- cron


def test_crontab_line_runs_and_propagates_the_exit_code(plan: Plan, tmp_path: Path,
                                                         fake_drkit: Path) -> None:
    code, out, err = _invoke("schedule", "region-failover", "--env", "lab", "--every", "weekly",
                             "--format", "cron", "--drkit", str(fake_drkit),
                             "--plan", str(plan.path))
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    assert fields[:5] == ["0", "3", "*", "*", "2"]
    command = fields[5]
    assert "%" not in command.replace("\\%", "")  # cron would cut the command at a bare %
    # Run it as cron does: '\%' becomes '%', then /bin/sh -c.
    argv_file = tmp_path / "argv"
    proc = subprocess.run(["/bin/sh", "-c", command.replace("\\%", "%")], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "FAKE_ARGV": str(argv_file)},
                          cwd="/", check=False)
    assert proc.returncode == 1  # the drill failed: cron sees it
    assert proc.stderr == "progress\n"
    reports = plan.root / "drkit-reports"
    assert (reports / "region-failover-lab.json").read_text() == '{"verdict": "fail"}\n'
    assert argv_file.read_text().splitlines() == [
        "drill", "run", "region-failover", "--env", "lab", "--plan", str(plan.path), "--json",
        "--junit-xml", str(reports / "region-failover-lab.junit.xml"),
        "--metrics-file", str(reports / "drkit.prom"), "--skip-in-blackout", "--skip-if-busy"]


# --------------------------------------------------------------------------- CI


def test_github_actions_workflow(plan: Plan, tmp_path: Path, fake_drkit: Path) -> None:
    wf = tmp_path / "wf" / "drill.yml"
    code, out, err = _invoke("schedule", "region-failover", "--env", "lab", "--every",
                             "monthly", "--format", "github-actions", "-o", str(wf),
                             "--runner", "dr-runner", "--plan", str(plan.path))
    assert code == 0, err
    data = yaml.safe_load(wf.read_text())
    on = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert on["schedule"] == [{"cron": "0 3 15 * *"}]
    assert "workflow_dispatch" in on
    assert data["concurrency"] == {"group": "drkit-drill-lab", "cancel-in-progress": False}
    job = data["jobs"]["drill"]
    assert job["runs-on"] == "dr-runner"
    steps = job["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@")
    run = next(s for s in steps if "drill run" in s.get("run", ""))
    assert run["shell"] == "bash" and run["working-directory"] == "."
    assert ("drkit drill run region-failover --env lab --plan drkit.yml --json --junit-xml "
            "drkit-reports/region-failover-lab.junit.xml --metrics-file drkit-reports/drkit.prom"
            " --skip-in-blackout --skip-if-busy > drkit-reports/region-failover-lab.json"
            ) in run["run"]
    upload = steps[-1]
    assert upload["if"] == "always()" and upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["path"] == "drkit-reports"

    # The step's script, run as GitHub runs it (bash -e), fails when the drill fails.
    work = tmp_path / "checkout"
    work.mkdir()
    proc = subprocess.run(["bash", "-e", "-c", run["run"]], cwd=work, capture_output=True,
                          text=True, check=False,
                          env={"PATH": f"{fake_drkit.parent}:/usr/bin:/bin",
                               "FAKE_ARGV": str(tmp_path / "argv")})
    assert proc.returncode == 1
    assert (work / "drkit-reports" / "region-failover-lab.json").exists()


def test_gitlab_ci_job(plan: Plan) -> None:
    code, out, err = _invoke("schedule", "region-failover", "--env", "lab", "--every",
                             "30 2 * * 3", "--format", "gitlab-ci", "--plan", str(plan.path))
    assert code == 0, err
    # GitLab keeps the cron in a pipeline schedule; the YAML says which, and matches on it.
    assert "interval pattern: 30 2 * * 3   cron timezone: UTC" in out
    data = yaml.safe_load(out)
    job = data["drkit-drill-region-failover-lab"]
    assert job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "schedule" && $DRKIT_SCHEDULE == '
                                   '"drkit-drill-region-failover-lab"'}]
    assert job["resource_group"] == "drkit-drill-lab"
    assert job["script"][-1] == (
        "drkit drill run region-failover --env lab --plan drkit.yml --json --junit-xml "
        "drkit-reports/region-failover-lab.junit.xml --metrics-file drkit-reports/drkit.prom"
        " --skip-in-blackout --skip-if-busy > drkit-reports/region-failover-lab.json")
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "drkit-reports/region-failover-lab.junit.xml"


def test_every_format_runs_the_same_command(plan: Plan) -> None:
    when = parse_every("weekly")
    for fmt in (Format.GITHUB_ACTIONS, Format.GITLAB_CI):
        job = job_for(plan, "region-failover", "lab", fmt=fmt)
        (f,) = render(job, when, fmt)
        assert job.shell() in f.content
    for fmt in (Format.SYSTEMD, Format.CRON):
        job = job_for(plan, "region-failover", "lab", fmt=fmt, drkit="/opt/drkit/bin/drkit")
        assert job.plan == str(plan.path) and job.workdir == str(plan.root)
        text = "".join(f.content for f in render(job, when, fmt))
        assert "region-failover --env lab" in text and "/opt/drkit/bin/drkit" in text


def test_ci_files_for_a_plan_in_a_subdirectory_of_the_repository(plan: Plan) -> None:
    (plan.root.parent / ".git").mkdir()  # the repository root is one level above the plan
    when = parse_every("weekly")
    job = job_for(plan, "region-failover", "lab", fmt=Format.GITLAB_CI)
    gl = yaml.safe_load(render(job, when, Format.GITLAB_CI)[0].content)
    (j,) = gl.values()
    assert j["script"][0] == "cd 'dr plans%1'"
    assert j["artifacts"]["paths"] == ["dr plans%1/drkit-reports"]
    assert j["artifacts"]["reports"]["junit"] == \
        "dr plans%1/drkit-reports/region-failover-lab.junit.xml"
    job = job_for(plan, "region-failover", "lab", fmt=Format.GITHUB_ACTIONS)
    gh = yaml.safe_load(render(job, when, Format.GITHUB_ACTIONS)[0].content)
    steps = gh["jobs"]["drill"]["steps"]
    assert steps[2]["working-directory"] == "dr plans%1"
    assert steps[-1]["with"]["path"] == "dr plans%1/drkit-reports"
