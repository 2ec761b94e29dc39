"""Secrets (issue 7): canary values planted everywhere a secret can enter a run, searched for in
every file drkit wrote and everything it printed. The count of hits must be 0.

Where the canaries go in:
- environment variables with secret-looking names (DRKIT_TEST_PASSWORD, API_TOKEN), read by a
  no_log task and copied into the run's summary;
- extra vars with a secret name, and summary data with secret names;
- artifact text and task/phase messages handed to a Recorder (by name, and as a declared value);
- a no_log task of a real playbook (ansible-runner, local connection) that echoes a value whose
  variable name looks harmless: only no_log stands between it and the artifacts.

Where they are searched for: every file under the evidence store, the run's artifacts dir, the
exported HTML/MD/JSON/JUnit reports, and the terminal output of `evidence list/show/verify/
export`. The search itself is shown to work first, on a file that holds a canary.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drkit.cli import app
from drkit.config import load_plan
from drkit.engine import run_playbook
from drkit.evidence import LocalStore, Recorder

from .conftest import REPO, make_sandbox

CANARIES = {
    "env-password": "cnry-env-pw-6d1f0a93e2",
    "env-token": "cnry-env-tok-b84c27e15f",
    "extra-var": "cnry-extravar-3e9a7c1d04",
    "summary": "cnry-summary-a0f3b2c9d8",
    "artifact-text": "cnry-arttext-71e4c0ab55",
    "declared-value": "cnry-declared-5c2e9f7b31",
    "task-message": "cnry-message-e3b1d94a06",
    "no-log": "cnry-nolog-0f8d6e2b7c",
}

PLAYBOOK = """\
- name: Canary play for the secrets test
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Echo every canary, hidden by no_log
      ansible.builtin.command: >-
        echo {{ harmless_looking }} {{ drkit_test_password }}
        {{ lookup('ansible.builtin.env', 'DRKIT_TEST_PASSWORD') }}
        {{ lookup('ansible.builtin.env', 'API_TOKEN') }}
      register: echoed
      changed_when: false
      no_log: true
    - name: Show what was echoed, hidden by no_log
      ansible.builtin.debug:
        var: echoed.stdout
      no_log: true
    - name: Say something harmless where everyone can see it
      ansible.builtin.debug:
        msg: the canaries were echoed
    - name: Fail with the canary in the message, hidden by no_log
      ansible.builtin.fail:
        msg: "failed while holding {{ harmless_looking }}"
      no_log: true
"""


def find(roots: list[Path], needles: list[str]) -> tuple[list[tuple[str, str]], int]:
    """(canary, file) for every hit, and how many files were searched (symlinks not followed:
    a store never has any)."""
    hits, n = [], 0
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_symlink() or not p.is_file():
                continue
            n += 1
            data = p.read_bytes()
            hits += [(c, str(p)) for c in needles if c.encode() in data]
    return hits, n


def test_the_search_finds_a_planted_canary(tmp_path: Path) -> None:
    # A search that cannot find anything would make the zero below meaningless.
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "leak.html").write_text(f"<p>{CANARIES['no-log']}</p>")
    (tmp_path / "a" / "clean.json").write_text("{}")
    hits, n = find([tmp_path], list(CANARIES.values()))
    assert n == 2 and hits == [(CANARIES["no-log"], str(tmp_path / "a" / "b" / "leak.html"))]


def test_no_canary_reaches_any_file_or_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              figures: Any) -> None:
    c = CANARIES
    monkeypatch.setenv("DRKIT_TEST_PASSWORD", c["env-password"])
    monkeypatch.setenv("API_TOKEN", c["env-token"])
    monkeypatch.delenv("DRKIT_PLAN", raising=False)
    root = tmp_path / "sb"
    root.mkdir()
    plan = load_plan(make_sandbox(root))
    # The engine's private folders (extra vars, environment) made during this test, by name:
    # other sessions' drills make theirs in the same /tmp meanwhile.
    private: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(*args: Any, **kwargs: Any) -> str:
        made = real_mkdtemp(*args, **kwargs)
        if Path(made).name.startswith("drkit-run-"):
            private.append(Path(made))
        return made

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)

    # (d) a real playbook with no_log tasks, through the one door to Ansible.
    (root / "canary.yml").write_text(PLAYBOOK)
    artifacts = root / "runs" / "canary"
    result = run_playbook(root / "canary.yml", inventory=REPO / "inventories" / "lab" / "hosts.yml",
                          content_root=REPO, artifacts_dir=artifacts,
                          extravars={"drkit_test_password": c["extra-var"],
                                     "harmless_looking": c["no-log"]})
    # The playbook really ran: three tasks ok, the no_log failure last (hidden).
    assert [t.status for t in result.tasks] == ["ok", "ok", "ok", "failed"], result.tasks
    assert result.failure is not None and result.failure.task.startswith("Fail with")
    assert (artifacts / "stdout").is_file() and (artifacts / "job_events.jsonl").is_file()

    # (b), (c): the Recorder gets the run, named secrets, a declared secret value, messages.
    store = LocalStore(root / "evidence")
    rec = Recorder.open(store, kind="runbook", name="cert-rotation", environment="lab",
                        plan=plan, secrets=[c["declared-value"]], files=[root / "canary.yml"])
    rec.add_phase("canary", status="failed", started_at=result.started_at,
                  ended_at=result.ended_at, run=result,
                  message=f"db_password={c['task-message']} and {c['declared-value']}")
    notes = root / "notes.txt"
    notes.write_text(f"client_secret: {c['artifact-text']}\nthe value {c['declared-value']}\n"
                     f'{{"api_key": "{c["artifact-text"]}"}}\n')
    rec.add_artifact(notes)
    record = rec.seal("fail", {
        "extra_vars": {"drkit_test_password": c["extra-var"], "region": "eu-central-1"},
        "environment": {"DRKIT_TEST_PASSWORD": c["env-password"], "API_TOKEN": c["env-token"]},
        "db_password": c["summary"],
        "smoke": [{"flow": "authorize", "ok": False,
                   "message": f"token={c['summary']} {c['declared-value']}"}],
        "reconciliation": {"note": f"secret: {c['summary']}"},
    })
    # What was redacted is said, by rule and key name, never by value.
    keys = {k for a in record.redaction.applied for k in a.keys}
    assert {"drkit_test_password", "db_password", "client_secret"} <= keys, keys

    # Exports and terminal output, through the CLI an auditor uses.
    out = tmp_path / "exports"
    out.mkdir()
    terminal = tmp_path / "terminal"
    terminal.mkdir()
    runner = CliRunner()
    common = ["--plan", str(root / "drkit.yml")]
    for fmt, ext in (("html", "html"), ("md", "md"), ("json", "json"), ("junit", "xml")):
        res = runner.invoke(app, ["evidence", "export", record.id, "--format", fmt, "-o",
                                  str(out / f"record.{ext}"), *common], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        (terminal / f"export-{fmt}.txt").write_text(res.output)
    for name, argv in (("list", ["evidence", "list"]), ("show", ["evidence", "show", "1"]),
                       ("show-json", ["evidence", "show", "1", "--json"]),
                       ("verify", ["evidence", "verify"])):
        res = runner.invoke(app, [*argv, *common], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        (terminal / f"{name}.txt").write_text(res.output)
    assert record.id in (terminal / "show.txt").read_text()  # the output is really there

    hits, searched = find([store.root, artifacts, out, terminal], list(c.values()))
    assert searched >= 15, searched
    assert hits == [], f"canary secrets leaked: {hits}"
    # The engine's private dir (extra vars, env) is gone too.
    assert private and not [p for p in private if p.exists()], private
    figures.add("canaries", len(c))
    figures.add("files_searched", searched)
