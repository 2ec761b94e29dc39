"""The wrapper's cost: `drkit runbook run` against plain `ansible-playbook`, same playbook.

A trivial runbook (one `ansible.builtin.ping` per host, so every host really runs a module) over
200 local-connection inventory hosts, generated into a temporary directory with its own plan,
signing key and evidence store. Runs alternate (ansible-playbook, drkit, ...) so that both
see the same load on a shared machine; median of 3 each. drkit's side includes everything an
operator gets: guard rails (inventory resolved in-process), live progress, the evidence record
(opened, then sealed with 200 task results and the run's artifacts). Target: ratio <= 1.05.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, VENV_BIN, machine, median, timed, write_section  # noqa: E402

HOSTS = 200
RUNS = 3

PLAN = """\
version: 1
name: bench
regions: {primary: eu-west-1, secondary: eu-central-1}
environments:
  bench: {inventory: hosts.ini}
services:
  payments: {tier: 1, rto: 30s, rpo: 0s}
scenarios:
  noop:
    services: [payments]
    phases:
      - {name: smoke, playbook: runbooks/trivial.yml, stops_clock: true}
evidence:
  store: ./evidence
  signing_key: keys/evidence.key
"""

RUNBOOK = """\
---
# purpose: Ping every host (the wrapper's benchmark).
# risk: low - reads only
- name: Ping every host
  hosts: all
  gather_facts: false
  tasks:
    - name: Ping the host
      ansible.builtin.ping:
"""


def setup(root: Path) -> None:
    from drkit.evidence import generate_keypair

    (root / "runbooks").mkdir()
    (root / "runbooks" / "trivial.yml").write_text(RUNBOOK)
    (root / "drkit.yml").write_text(PLAN)
    py = VENV_BIN / "python"
    (root / "hosts.ini").write_text("[all]\n" + "".join(
        f"h{i:03d} ansible_connection=local ansible_python_interpreter={py}\n"
        for i in range(HOSTS)))
    generate_keypair(root / "keys" / "evidence.key")


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="drkit-bench-runbook-"))
    setup(root)
    env = {"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "DRKIT_LAB_DIR": str(root / "state")}
    plain_cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(root / "hosts.ini"),
                 str(root / "runbooks" / "trivial.yml")]
    drkit_cmd = [str(VENV_BIN / "drkit"), "runbook", "run", "trivial", "--env", "bench",
                 "--plan", str(root / "drkit.yml")]
    plain, wrapped = [], []
    for _ in range(RUNS):
        plain.append(timed(plain_cmd, env=env))
        wrapped.append(timed(drkit_cmd, env=env))
    p, w = median(plain), median(wrapped)
    ratio = w / p
    records = len(list((root / "evidence").rglob("*.json")))
    body = f"""## Runbook wrapper cost (bench/bench_runbook.py)

{machine()}; {HOSTS} local-connection hosts, one `ansible.builtin.ping` each, forks 10;
runs alternate, median of {RUNS} each (all runs: ansible-playbook
{', '.join(f'{x:.2f}' for x in plain)} s; drkit {', '.join(f'{x:.2f}' for x in wrapped)} s).

| command | median | |
|---|---|---|
| `ansible-playbook -i hosts.ini trivial.yml` (baseline) | {p:.2f} s | |
| `drkit runbook run trivial --env bench` (guard rails, progress, evidence) | {w:.2f} s | |
| ratio | {ratio:.3f} | target <= 1.05 {'(met)' if ratio <= 1.05 else '(MISSED)'} |

Evidence files written by the drkit runs: {records}.
"""
    write_section("runbook", body)
    print(body)
    if os.environ.get("DRKIT_BENCH_KEEP") != "1":
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
