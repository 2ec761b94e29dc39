"""Hostile evidence (issue 7): damaged, huge, odd and escaping files in a store, through the CLI.

tests/evidence/ checks the library's verify on hostile files; here every case goes through
`drkit evidence verify`, `list` and `show` in-process (a traceback fails the test): verify
must report the damage (exit 1, naming it), list and show must end in one `drkit:` line or
succeed, never crash. Then the other direction: whatever names a caller passes, and whatever
symlinks someone plants, a store never writes outside its own directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drkit.cli import app
from drkit.config import load_plan
from drkit.errors import BadInput, DrkitError
from drkit.evidence import LocalStore, Recorder
from drkit.evidence.record import canonical
from drkit.evidence.signing import load_private_key, sign

from .conftest import make_sandbox


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sandbox with two sealed records (one artifact each), copied for every case."""
    root = tmp_path_factory.mktemp("evidence-template") / "sb"
    root.mkdir()
    plan = load_plan(make_sandbox(root))
    store = LocalStore(root / "evidence")
    for i in range(2):
        rec = Recorder.open(store, kind="runbook", name="cert-rotation", environment="lab",
                            plan=plan)
        (root / "note.txt").write_text(f"artifact {i}\n")
        rec.add_artifact(root / "note.txt")
        # A pass needs a phase that passed (verify checks a record against itself).
        rec.add_phase("cert-rotation", status="ok", started_at="2025-03-01T02:00:00Z",
                      ended_at="2025-03-01T02:00:01Z")
        rec.seal("pass", {"note": f"run {i}"})
    (root / "note.txt").unlink()
    return root


def ev(root: Path) -> Path:
    return root / "evidence"


def first_record(root: Path) -> Path:
    return sorted((ev(root) / "records").iterdir())[0]


def first_artifacts(root: Path) -> Path:
    return sorted((ev(root) / "artifacts").iterdir())[0]


def resign(root: Path, change: Callable[[dict], None]) -> None:
    """Edit the first record AND re-hash and re-sign it with the real key: only the edit
    itself (a surprise field, a hostile artifact name) is left for verify to find."""
    f = first_record(root)
    d = json.loads(f.read_text())
    change(d)
    d.pop("hash", None)
    d.pop("signature", None)
    canon = canonical(d)
    d["hash"] = hashlib.sha256(canon).hexdigest()
    d["signature"] = sign(load_private_key(root / "keys" / "evidence.key"), canon)
    f.write_text(json.dumps(d))


def _truncate(f: Path, size: int) -> None:
    with open(f, "r+b") as h:
        h.truncate(size)


def _replace_dir_with_symlink(d: Path, elsewhere: Path) -> None:
    shutil.copytree(d, elsewhere)
    shutil.rmtree(d)
    d.symlink_to(elsewhere)


def _fifo(f: Path) -> None:
    f.unlink()
    os.mkfifo(f)  # opened without O_NONBLOCK this would hang verify forever


def _to_dir(f: Path) -> None:
    f.unlink()
    f.mkdir()


def _symlink_outside(root: Path, f: Path) -> None:
    shutil.copy(f, root / "outside.json")  # a perfect copy: only its place is wrong
    f.unlink()
    f.symlink_to(root / "outside.json")


def _open_symlinked(root: Path) -> None:
    shutil.rmtree(ev(root) / "open", ignore_errors=True)
    (root / "o").mkdir()
    (ev(root) / "open").symlink_to(root / "o")


def _open_record(root: Path, doc: bytes) -> None:
    (ev(root) / "open").mkdir(exist_ok=True)
    (ev(root) / "open" / "20250101T000000Z-deadbeef.json").write_bytes(doc)


DEAD_WRITER = json.dumps({"writer": {"pid": 2**22 + 12345, "host": os.uname().nodename,
                                     "signing_key": "keys/evidence.key"},
                          "record": {"id": 5, "surprise": [1]}}).encode()

# name -> (how to damage the copy, what verify's report must say; None: the chain is intact
# and verify notes the open run instead)
CASES: dict[str, tuple[Callable[[Path], Any], str | None]] = {
    "record-not-json": (lambda r: first_record(r).write_bytes(b"\x00\xff{not json"),
                        "not valid JSON"),
    "record-truncated": (lambda r: _truncate(first_record(r), 100), "not valid JSON"),
    "record-empty": (lambda r: _truncate(first_record(r), 0), "not valid JSON"),
    "record-huge": (lambda r: _truncate(first_record(r), 9 * 1024 * 1024),
                    "more than a record can be"),
    "record-nested-100k-deep": (lambda r: first_record(r).write_text("[" * 100_000
                                                                     + "]" * 100_000),
                                "not valid JSON"),
    "record-a-json-list": (lambda r: first_record(r).write_text("[1, 2, 3]"), "not a JSON object"),
    "record-unexpected-field": (lambda r: resign(r, lambda d: d.update(surprise={"x": [1]})),
                                "unexpected-field"),
    "record-wrong-types": (lambda r: resign(r, lambda d: d.update(
        phases="not a list", targets={"x": 1}, artifacts=7)), "artifacts is not a list"),
    "record-edited": (lambda r: first_record(r).write_text(
        first_record(r).read_text().replace('"pass"', '"fail"', 1)), "modified"),
    "record-symlink-outside": (lambda r: _symlink_outside(r, first_record(r)), "symlink"),
    "record-is-a-directory": (lambda r: _to_dir(first_record(r)), "not a regular file"),
    "record-is-a-fifo": (lambda r: _fifo(first_record(r)), "not a regular file"),
    "stray-file-in-records": (lambda r: (ev(r) / "records" / "notes.txt").write_text("hi"),
                              "unexpected-file"),
    "records-dir-symlinked": (lambda r: _replace_dir_with_symlink(ev(r) / "records",
                                                                  r / "elsewhere"), "symlink"),
    "records-dir-is-a-file": (lambda r: (shutil.rmtree(ev(r) / "records"),
                                         (ev(r) / "records").write_text("x")), "not a folder"),
    "open-dir-symlinked": (_open_symlinked, "symlink"),
    "artifact-symlink-to-etc-passwd": (lambda r: (
        (first_artifacts(r) / "note.txt").unlink(),
        (first_artifacts(r) / "note.txt").symlink_to("/etc/passwd")), "symlink"),
    "artifact-dir-symlinked": (lambda r: _replace_dir_with_symlink(first_artifacts(r),
                                                                   r / "arts"), "symlink"),
    "artifacts-root-symlinked": (lambda r: _replace_dir_with_symlink(
        ev(r) / "artifacts", r / "all-arts"), "symlink"),
    "artifact-name-dot-dot": (lambda r: resign(r, lambda d: d["artifacts"][0].update(
        name="../../../../etc/passwd")), "is invalid"),
    "artifact-huge": (lambda r: _truncate(first_artifacts(r) / "note.txt", 20 * 1024 * 1024),
                      "artifact-changed"),
    "index-symlink": (lambda r: ((ev(r) / "index.jsonl").unlink(),
                                 (ev(r) / "index.jsonl").symlink_to("/etc/passwd")), "index"),
    "index-garbage": (lambda r: (ev(r) / "index.jsonl").write_bytes(
        b'[1,2]\n"x"\n{"seq": "a"}\nnull\n{}\n\xff\xfe\n'), "index"),
    "index-huge-line": (lambda r: (ev(r) / "index.jsonl").open("ab").write(
        b"{" * (9 * 1024 * 1024)), "index"),
    # Open records are signed by the signer that opened them (issue 15): anything else under
    # open/ was planted, and is reported (drkit never seals it).
    "open-record-not-json": (lambda r: _open_record(r, b"\x00\xff{"), "not signed"),
    "open-record-dead-writer-garbage-body": (lambda r: _open_record(r, DEAD_WRITER),
                                             "not signed"),
    "open-record-symlink": (lambda r: ((ev(r) / "open").mkdir(exist_ok=True),
                                       (ev(r) / "open" / "y.json").symlink_to("/etc/passwd")),
                            "not signed"),
}


def invoke(argv: list[str]) -> Any:
    return CliRunner().invoke(app, argv, catch_exceptions=False)


def assert_clean_failure(res: Any) -> None:
    """Success, or `drkit:` lines on stderr and a documented exit code: never a traceback."""
    assert "Traceback" not in res.output
    assert res.exit_code in (0, 1, 2, 3), res.output
    if res.exit_code not in (0, 1):
        lines = res.stderr.splitlines()
        assert lines and all(line.startswith("drkit: ") for line in lines), res.stderr


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_store_is_reported_never_crashes(name: str, template: Path, tmp_path: Path,
                                                 figures: Any) -> None:
    root = tmp_path / "sb"
    shutil.copytree(template, root, symlinks=True)
    damage, expected = CASES[name]
    damage(root)
    plan = ["--plan", str(root / "drkit.yml")]
    verify = invoke(["evidence", "verify", *plan])
    assert_clean_failure(verify)
    if expected is None:
        # The chain itself is intact; the open/ entry is outside it and noted, not trusted.
        assert verify.exit_code == 0, verify.output
        assert "under open/" in verify.stdout, verify.stdout
    else:
        assert verify.exit_code == 1, verify.output
        assert "TAMPERED or damaged" in verify.stderr
        assert expected in verify.stderr, verify.stderr
    for argv in (["evidence", "list", *plan], ["evidence", "show", "1", *plan],
                 ["evidence", "show", "2", *plan], ["evidence", "list", "--json", *plan],
                 ["evidence", "export", "2", "--format", "json", *plan]):
        assert_clean_failure(invoke(argv))
    assert "root:x:0:0" not in verify.output, "a symlink target's content reached the report"
    figures.add("hostile_store")


def test_an_intact_copy_verifies(template: Path, tmp_path: Path) -> None:
    # The control: without damage the same checks pass, so each case's exit 1 is its damage.
    root = tmp_path / "sb"
    shutil.copytree(template, root, symlinks=True)
    res = invoke(["evidence", "verify", "--plan", str(root / "drkit.yml")])
    assert res.exit_code == 0 and "intact: 2 records, 4 artifacts" in res.stdout, res.output


# ------------------------------------------------------------------ nothing written outside

HOSTILE_NAMES = ["../escaped", "../../escaped", "/tmp/escaped-abs", "a/../../escaped", "..",
                 ".", ".hidden", "x\x00y", "a/b", "..\\..\\escaped", "", " ", "-rf",
                 "name\n.json", "trailing-newline\n", "é" * 300, "ok/../../../escaped"]


def snapshot(parent: Path, store_root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `parent` except the store itself: (size, mtime_ns), symlinks as links."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(parent):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if p == store_root or store_root in p.parents:
                continue
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def test_hostile_names_never_write_outside_the_store(tmp_path: Path, figures: Any) -> None:
    root = tmp_path / "sb"
    root.mkdir()
    plan = load_plan(make_sandbox(root))
    (tmp_path / "outside").mkdir()  # a neighbour that must stay exactly as it is
    (tmp_path / "outside" / "keep.txt").write_text("untouched\n")
    src = root / "payload.txt"
    src.write_text("payload\n")
    store = LocalStore(root / "evidence")
    rec = Recorder.open(store, kind="runbook", name="../../x", environment="../../y", plan=plan)
    before = snapshot(tmp_path, store.root)
    refused = 0
    for name in HOSTILE_NAMES:
        if name:  # add_artifact(src, "") means "the source's own name"
            with pytest.raises(BadInput, match="invalid evidence"):
                rec.add_artifact(src, name)
            refused += 1
        with pytest.raises(BadInput, match="invalid evidence"):
            rec.add_artifact_bytes(b"payload", name)
        refused += 1
    for key in ("../escaped", "records/../../escaped", "/tmp/escaped", "artifacts/../../x",
                "open/../../escaped.json", "records/sub/../../../x"):
        with pytest.raises(BadInput, match="invalid store key"):
            store.write(key, b"payload")
        with pytest.raises(BadInput, match="invalid store key"):
            store.read(key)
        refused += 2
    with pytest.raises(DrkitError):
        store.delete_open("records/00000001-x.json")  # only open records are ever deleted
    record = rec.seal("pass")
    assert snapshot(tmp_path, store.root) == before
    assert not list(tmp_path.rglob("*escaped*"))
    assert record.seq == 1 and record.name == "../../x"  # names are data, never paths
    figures.add("hostile_names", refused)


@pytest.mark.parametrize("plant", ["artifacts-dir", "open-dir", "records-dir", "store-root"])
def test_planted_symlinks_do_not_redirect_writes(plant: str, tmp_path: Path,
                                                 figures: Any) -> None:
    """Someone swaps a store folder for a symlink to a folder outside, mid-run: every write
    after that is refused, and the outside folder stays empty."""
    root = tmp_path / "sb"
    root.mkdir()
    plan = load_plan(make_sandbox(root))
    evidence = root / "evidence"
    store = LocalStore(evidence)
    rec = Recorder.open(store, kind="runbook", name="cert-rotation", environment="lab",
                        plan=plan)
    src = root / "payload.txt"
    src.write_text("payload\n")
    rec.add_artifact(src, "first.txt")
    trap = tmp_path / f"trap-{plant}"
    trap.mkdir()
    victim = {"artifacts-dir": evidence / "artifacts" / rec.id, "open-dir": evidence / "open",
              "records-dir": evidence / "records", "store-root": evidence}[plant]
    if victim.exists():
        shutil.move(str(victim), str(tmp_path / f"moved-{plant}"))
    victim.symlink_to(trap, target_is_directory=True)
    with pytest.raises(DrkitError):
        rec.add_artifact(src, "second.txt")
        rec.seal("pass")
    assert list(trap.iterdir()) == [], f"a write went through the planted symlink: {plant}"
    figures.add("hostile_symlinks")
