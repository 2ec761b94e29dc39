"""`drkit evidence`: keys, and the ledger of signed, hash-chained DR test records."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from drkit.cli._common import (
    JsonOption,
    PlanOption,
    call,
    errors,
    fail,
    input_dir,
    input_file,
    new_app,
    output_file,
    print_json,
)

if TYPE_CHECKING:
    from drkit.config import Plan
    from drkit.evidence.store import Store

app = new_app("Signed, hash-chained DR evidence: keygen, list, show, verify, export.")

StoreOption = Annotated[
    str | None,
    typer.Option("--store", "-s", callback=input_dir("--store"),
                 help="Evidence store: a directory or s3://bucket/prefix "
                 "(default: the plan's evidence.store).", show_default=False),
]
PublicKeyOption = Annotated[
    Path | None,
    typer.Option("--public-key", "-k", callback=input_file("public key"),
                 help="Public key (PEM). Trusted itself only when no fingerprint is pinned "
                 "(evidence.trusted_keys, --trust). Default: the plan's "
                 "evidence.public_key, else the .pub beside its signing key.",
                 show_default=False),
]
TrustOption = Annotated[
    list[str] | None,
    typer.Option("--trust", help="SHA-256 fingerprint of a trusted signing key (repeatable); "
                 "added to the plan's evidence.trusted_keys. Get it with `openssl pkey -pubin "
                 "-in KEY.pub -outform DER | sha256sum`.", show_default=False),
]


def _plan(plan: Path | None, store: str | None) -> Plan | None:
    """The plan is needed unless --store names the store (an auditor has no plan)."""
    if store is not None and plan is None:
        return None
    from drkit.cli._common import load_plan

    return load_plan(plan)


def _store(plan: Plan | None, url: str | None) -> Store:
    from drkit.evidence.locator import open_store

    if url is not None and "://" not in url:
        url = str(Path(url).expanduser().absolute())  # relative to where the user stands
    return call(open_store, url, plan=plan)


# list, show, verify and export never write to the store (no signing oracle): runs whose
# writer died are sealed where runs start and by `drkit drill recover`, with the plan's signer.


def _public_key(plan: Plan | None, given: Path | None, *, required: bool = True) -> Path | None:
    from drkit.errors import BadInput
    from drkit.evidence.signing import public_path

    if given is not None:
        return given
    if plan is not None:
        ev = plan.model.evidence
        if ev.public_key:
            return plan.resolve(ev.public_key)
        pub = public_path(plan.resolve(ev.signing_key)) if ev.signing_key else None
        # A missing file beside the plan's key matters only when nothing else says which key
        # to trust: with pins (the plan's or --trust), v2 records carry their own key.
        if pub is not None and (pub.is_file() or (required and not ev.trusted_keys)):
            return pub
    if not required:
        return None  # v2 records carry their key; the pins say which to trust
    with errors():
        raise BadInput("no public key to verify with: pass --public-key FILE or --trust "
                       "SHA256 (or --plan with evidence.trusted_keys / evidence.public_key)")
    raise AssertionError  # unreachable: errors() turned the BadInput into an exit


def _pins(plan: Plan | None, given: list[str] | None) -> list[str]:
    from drkit.evidence.signing import normalise_fingerprint

    pins = list(plan.model.evidence.trusted_keys) if plan is not None else []
    for g in given or ():
        pins.append(call(normalise_fingerprint, g))
    return pins


@app.command()
def keygen(
    output: Annotated[Path, typer.Option("--output", "-o", callback=output_file(
        "key output", stdout=False), help="Private key path; the public "
                                         "key goes beside it with .pub.")] = Path(
                                             "keys/evidence.key"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing pair.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write an Ed25519 key pair for signing evidence (private key mode 0600)."""
    from drkit.evidence.signing import generate_keypair

    kp = call(generate_keypair, output, force=force)
    if as_json:
        print_json({"private_key": str(kp.private), "public_key": str(kp.public),
                    "key_id": kp.key_id, "fingerprint": kp.fingerprint})
        return
    typer.echo(f"wrote {kp.private} (private, mode 0600) and {kp.public} (public)\n"
               f"fingerprint {kp.fingerprint}\n"
               f"pin it in the plan: evidence.trusted_keys: [{kp.fingerprint}]\n"
               f"hand {kp.public} to auditors; keep {kp.private} secret")


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    from drkit.errors import BadInput

    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        # In UTC now: near year 1 or 9999 an offset overflows, later, in the comparison.
        return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        with errors():
            raise BadInput(f"--since {value!r} is not a date (use 2025-03-01 or "
                           "2025-03-01T12:00:00Z)") from None
        raise


@app.command("list")
def list_(
    kind: Annotated[str | None, typer.Option("--kind", help="drill or runbook.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Only runs started on or after "
                                              "this date (UTC).")] = None,
    scenario: Annotated[str | None, typer.Option("--scenario", "--name",
                                                 help="Scenario or runbook name.")] = None,
    environment: Annotated[str | None, typer.Option("--env", "-e", help="Environment.")] = None,
    store: StoreOption = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """List sealed records, newest last (reads index.jsonl only)."""
    from drkit.evidence import ledger

    if kind is not None and kind not in ("drill", "runbook"):
        raise fail(f"--kind {kind!r}: use drill or runbook", 2)
    cutoff = _since(since)
    p = _plan(plan, store)
    st = _store(p, store)
    entries = ledger.select(call(ledger.read_index, st), kind=kind, since=cutoff, name=scenario,
                            environment=environment)
    if as_json:
        from dataclasses import asdict

        print_json({"store": st.describe(), "records": [asdict(e) for e in entries]})
        return
    if not entries:
        typer.echo(f"no evidence records in {st.describe()}" + (" match" if any(
            (kind, since, scenario, environment)) else ""))
        return
    rows = [("SEQ", "ID", "KIND", "NAME", "ENV", "VERDICT", "STARTED (UTC)", "RTO")]
    rows += [(str(e.seq), e.id, e.kind, e.name, e.environment, e.verdict.upper(),
              e.started_at[:19].replace("T", " "),
              "-" if e.rto_ms is None else f"{e.rto_ms / 1000:g}s") for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    typer.echo("\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                         for r in rows))


UnverifiedOption = Annotated[
    bool, typer.Option("--unverified", help="Show or export a record that fails verification "
                       "or cannot be verified (no public key), with a warning, and exit 0.")]


def _integrity(st: Store, p: Plan | None, r: Any, public_key: Path | None) -> Any:
    """Verify the ledger before showing a record from it (drkit.evidence.verify): what holds
    for this record, never assumed (issue 11)."""
    from drkit.evidence.report import Integrity
    from drkit.evidence.signing import public_path
    from drkit.evidence.verify import verify as _verify

    key = public_key
    if key is None and p is not None:
        ev = p.model.evidence
        key = p.resolve(ev.public_key) if ev.public_key else (
            public_path(p.resolve(ev.signing_key)) if ev.signing_key else None)
    if (key is None or not key.is_file()) and p is not None and p.model.evidence.trusted_keys:
        key = None  # pinned: v2 records carry their keys
    elif key is None or not key.is_file():
        return Integrity(False, False, "no public key to verify it with (pass --public-key "
                         "FILE or --plan with evidence.public_key): verify it as shown below "
                         "before relying on it.")
    rep = call(_verify, st, key, trusted=_pins(p, None))
    mine = tuple(str(i) for i in rep.issues if i.seq == r.seq or i.record == r.id)
    ok = not mine and rep.ok
    summary = (f"Verified: hash, signature (key {rep.key_id[:16]}...), chain link and "
               f"{len(r.artifacts)} artifact digests are intact; the ledger holds "
               f"{rep.records} records.") if ok else (
        "NOT intact: " + (f"{len(mine)} problem(s) with this record" if mine else
                          f"the ledger has {len(rep.issues)} problem(s) elsewhere"))
    return Integrity(True, ok, summary, mine or tuple(str(i) for i in rep.issues[:5]))


@app.command()
def show(
    record: Annotated[str, typer.Argument(help="Record id, unique id prefix, or sequence number.")],
    store: StoreOption = None,
    public_key: PublicKeyOption = None,
    unverified: UnverifiedOption = False,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one record, verified first.

    Exit 0 when the record verifies intact; 1 when it fails verification or cannot be verified
    (no public key), with a warning at the top (exit 0 with --unverified)."""
    from drkit.evidence.ledger import load_record

    p = _plan(plan, store)
    st = _store(p, store)
    r = call(load_record, st, record)
    integrity = _integrity(st, p, r, public_key)
    code = 0 if integrity.ok or unverified else 1
    if as_json:
        data = r.to_dict()
        if integrity.banner:
            data = {"integrity_warning": {"banner": integrity.banner, "checked":
                                          integrity.checked, "ok": integrity.ok,
                                          "issues": list(integrity.issues)}, **data}
        print_json(data)
        raise typer.Exit(code)
    lines = [integrity.banner] if integrity.banner else []
    lines += [
        f"record #{r.seq}  {r.id}  schema v{r.schema_version}",
        f"{r.kind} {r.name} in {r.environment}: {str(r.verdict).upper()}",
        f"operator {r.operator}; approved by {r.approved_by or '-'}; change {r.change_id or '-'}",
        f"started {r.started_at}  ended {r.ended_at}  ({_d(r.duration_ms)})",
        f"git {r.git.commit or 'unknown'}{' (dirty)' if r.git.dirty else ''}; plan sha256 "
        f"{r.plan_sha256 or '-'}",
        "targets:" if r.targets else "targets: none",
    ]
    for t in r.targets:
        lines.append(f"  {t.service}: RTO {_d(t.rto_measured_ms)} / {_d(t.rto_target_ms)} "
                     f"{_met(t.rto_met)}; RPO {_d(t.rpo_measured_ms)} / {_d(t.rpo_target_ms)} "
                     f"{_met(t.rpo_met)}; lost payments "
                     f"{'-' if t.lost_payments is None else t.lost_payments}")
    lines.append("phases:")
    for ph in r.phases:
        lines.append(f"  {ph.name:<20} {ph.status:<12} {_d(ph.duration_ms):>9}  "
                     f"{len(ph.tasks)} tasks{'  (RTO clock)' if ph.counts_for_rto else ''}")
    if r.smoke:
        lines.append("smoke: " + ", ".join(f"{s.flow} {'pass' if s.status == 'ok' else s.status}"
                                           for s in r.smoke))
    lines.append("findings:" if r.findings else "findings: none")
    lines += [f"  [{f.severity}] {f.check}: {f.detail}" for f in r.findings]
    lines.append("controls: " + (", ".join(r.controls) or "-"))
    lines.append("artifacts:")
    lines += [f"  {a.name}  {a.size} bytes  sha256 {a.sha256}" for a in r.artifacts]
    lines.append(f"hash {r.hash}\nprev {r.prev_hash}\nkey  {r.key_id}")
    lines.append(f"integrity: {integrity.summary}")
    lines += [f"  {i}" for i in integrity.issues]
    typer.echo("\n".join(lines))
    raise typer.Exit(code)


def _d(v: int | None) -> str:
    return "-" if v is None else f"{v / 1000:g}s"


def _met(v: bool | None) -> str:
    return "(not measured)" if v is None else ("met" if v else "MISSED")


@app.command()
def verify(
    store: StoreOption = None,
    public_key: PublicKeyOption = None,
    trust: TrustOption = None,
    anchor: Annotated[str | None, typer.Option(
        "--anchor", help="The anchor to check the head against: a file or s3://bucket/prefix "
        "(default: the plan's evidence.anchor).", show_default=False)] = None,
    expect_seq: Annotated[int | None, typer.Option(
        "--expect-seq", min=0, help="Fail when the ledger ends before this record (the last "
        "one you saw).", show_default=False)] = None,
    tsa_ca: Annotated[Path | None, typer.Option(
        "--tsa-ca", help="Check RFC 3161 time stamps with this CA certificate (default: the "
        "plan's evidence.tsa_ca).", show_default=False)] = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check every record's hash, the chain, signatures against pinned keys, artifacts, the
    store's layout, each record's consistency, and the head against the anchor.

    Exit 0 when intact; 1 naming the first broken record and what is wrong. Never writes.
    The stand-alone auditor script `drkit-verify` (python3 + openssl) checks the same.
    """
    from drkit.evidence.anchor import anchor_for, open_anchor
    from drkit.evidence.verify import verify as _verify

    p = _plan(plan, store)
    st = _store(p, store)
    pins = _pins(p, trust)
    key = _public_key(p, public_key, required=not pins)
    anc = call(open_anchor, anchor) if anchor else call(anchor_for, st, p)
    ev = p.model.evidence if p is not None else None
    ca = tsa_ca if tsa_ca is not None else (
        p.resolve(ev.tsa_ca) if p is not None and ev is not None and ev.tsa_ca else None)
    report = call(_verify, st, key, trusted=pins, anchor=anc, expect_seq=expect_seq, tsa_ca=ca)
    if as_json:
        print_json(report.to_dict())
    elif report.ok:
        keys = ", ".join(k[:16] + "..." for k in (report.keys_used or report.trusted))
        head = f"; head #{report.head[0]} {report.head[1][:16]}..." if report.head else ""
        pinned = "pinned" if report.pinned else "NOT pinned: trusted because its file was named"
        typer.echo(f"{report.store}: intact: {report.records} records, {report.artifacts} "
                   f"artifacts, chain and signatures valid (key {keys}, {pinned}){head}"
                   + (f"; anchored in {report.anchor}" if report.anchor else ""))
        for n in report.notes:
            typer.echo(f"note: {n}")
    else:
        first = report.first
        typer.echo(f"{report.store}: TAMPERED or damaged: {len(report.issues)} problem(s) in "
                   f"{report.records} records", err=True)
        typer.echo(f"first broken: {first}", err=True)
        for i in report.issues[1:20]:
            typer.echo(f"  also: {i}", err=True)
        if len(report.issues) > 20:
            typer.echo(f"  ... and {len(report.issues) - 20} more (use --json)", err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def export(
    record: Annotated[str, typer.Argument(help="Record id, unique id prefix, or sequence number.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="html, md, json or junit.")] = "html",
    output: Annotated[Path | None, typer.Option("--output", "-o", callback=output_file(
        "export output"), help="File to write (default, or -: stdout).")] = None,
    store: StoreOption = None,
    public_key: PublicKeyOption = None,
    unverified: UnverifiedOption = False,
    plan: PlanOption = None,
) -> None:
    """Export one record as an offline HTML report, Markdown, JSON or JUnit XML, verified
    first.

    A record that fails verification or cannot be verified (no public key) gets a warning at
    the top of every format and exit 1 (the file is still written); --unverified exits 0."""
    from drkit.evidence.ledger import load_record
    from drkit.evidence.report import Format, render

    if fmt not in {f.value for f in Format}:
        raise fail(f"--format {fmt!r}: use html, md, json or junit", 2)
    p = _plan(plan, store)
    st = _store(p, store)
    r = call(load_record, st, record)
    integrity = _integrity(st, p, r, public_key)
    code = 0 if integrity.ok or unverified else 1
    hint = f"drkit evidence verify --store {st.describe()} --trust {r.key_id}"
    text = call(render, r, fmt, integrity, hint)
    if integrity.banner:
        typer.echo(f"drkit: {integrity.banner}", err=True)
    if output is None or str(output) == "-":
        typer.echo(text, nl=False)
        raise typer.Exit(code)
    from drkit.files import atomic_write

    with errors():
        try:
            atomic_write(output, text.encode("utf-8"), mode=0o644)
        except OSError as e:
            raise fail(f"cannot write {output}: {e.strerror}", 3) from None
    typer.echo(f"wrote {output} ({fmt}, record #{r.seq} {r.id})", err=True)
    raise typer.Exit(code)

