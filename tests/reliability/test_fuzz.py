"""Property-based fuzz of everything a user types: plan files and CLI arguments (issue 7).

Every case goes through the real Typer app in-process with catch_exceptions=False, so a
traceback fails the test. A bad plan must end in exit 2 and ONE line on stderr, `drkit: `
naming the file; a valid one in exit 0. Every generated argv carries at least one defect
(unknown option, bad duration or date, unknown name, missing value) and must end in exit 2:
none of them may reach a drill, a runbook or the lab (the sandbox fixture points every knob
at a temp dir, and its playbooks target no host).

Hypothesis is derandomized and keeps no example database, so CI sees the same cases each run.
"""

from __future__ import annotations

import copy
import re
import string
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from drkit.cli import app
from drkit.config import load_plan

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])


def invoke(argv: list[str]) -> Any:
    return CliRunner().invoke(app, argv, catch_exceptions=False)


def assert_one_line_error(res: Any, must_name: str | None = None) -> str:
    """Exit 2 and exactly one stderr line `drkit: ...` (the plan's file when given)."""
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    assert "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("drkit: "), res.stderr
    assert res.stdout == "", res.stdout
    if must_name is not None:
        assert must_name in lines[0], lines[0]
    return lines[0]


def validate(path: Path) -> Any:
    return invoke(["plan", "validate", "--plan", str(path)])


# ------------------------------------------------------------------------------- plan files

BASE: dict[str, Any] = yaml.safe_load("""\
version: 1
name: fuzz
regions: {primary: eu-west-1, secondary: eu-central-1}
environments:
  lab: {inventory: inventory.yml, lab: true}
  prod: {inventory: inventory.yml, protected: true, requires_approval: true}
lab: {state_dir: ./lab-state, port_base: 64900, instances: 2, replication: sync,
      cert_validity: 90d}
services:
  payments: {tier: 1, owner: oncall, rto: 30s, rpo: 0s, smoke: [authorize, balance]}
  ledger: {tier: 2, rto: 5m, rpo: 10s}
scenarios:
  region-failover:
    services: [payments, ledger]
    phases:
      - {name: preflight, playbook: pb/preflight.yml}
      - {name: inject-fault, playbook: pb/inject.yml, starts_clock: true}
      - {name: smoke, playbook: pb/smoke.yml, stops_clock: true}
    rollback: pb/rollback.yml
evidence: {store: ./evidence, retention: 30d, controls: [SOC 2 A1.3]}
policy: {drill_every: {1: 90d, 2: 180d}, finding_due: {high: 30d}, cert_min_validity: 30d}
""")

# Mappings whose keys are fields of a model (an unknown key there is an unknown field).
MODEL_MAPS = [(), ("regions",), ("lab",), ("environments", "lab"), ("services", "payments"),
              ("scenarios", "region-failover"), ("scenarios", "region-failover", "phases", 1),
              ("evidence",), ("policy",)]
FIELDS = {
    "version", "name", "regions", "environments", "lab", "services", "scenarios", "evidence",
    "policy", "notify", "blackouts", "primary", "secondary", "state_dir", "port_base",
    "instances", "replication", "os_user", "hostname", "cert_validity", "inventory",
    "protected", "requires_approval", "entry_url", "ca_file", "tier", "owner", "rto", "rpo",
    "smoke", "type", "description", "phases", "rollback", "holds", "playbook",
    "starts_clock", "stops_clock", "failback", "gate", "store", "signing_key", "public_key",
    "retention", "retention_class", "controls", "drill_every", "finding_due",
    "cert_min_validity"}
DURATIONS = [("services", "payments", "rto"), ("services", "payments", "rpo"),
             ("services", "ledger", "rto"), ("evidence", "retention"),
             ("policy", "cert_min_validity"), ("policy", "drill_every", 1),
             ("policy", "finding_due", "high"), ("lab", "cert_validity")]
FILES = [("environments", "lab", "inventory"), ("environments", "prod", "inventory"),
         ("scenarios", "region-failover", "phases", 0, "playbook"),
         ("scenarios", "region-failover", "phases", 2, "playbook"),
         ("scenarios", "region-failover", "rollback")]
REQUIRED = [("regions",), ("environments",), ("services",), ("scenarios",),
            ("regions", "primary"), ("environments", "lab", "inventory"),
            ("services", "payments", "tier"), ("services", "payments", "rto"),
            ("scenarios", "region-failover", "services"),
            ("scenarios", "region-failover", "phases", 0, "playbook")]
# (path, values that are out of range for it)
RANGES = [(("services", "payments", "rto"), [0, "0s", "0m", -1, "-5s", -0.5]),
          (("services", "payments", "rpo"), [-1, "-1s", -30.5]),
          (("services", "payments", "tier"), [0, -1, 5, 99]),
          (("lab", "port_base"), [0, -1, 80, 1023, 65001, 10**12]),
          (("lab", "instances"), [0, -3, 10]),
          # issue 16: bounds on every duration, names that are names, webhooks that stay safe
          (("services", "payments", "rto"), ["8d", 10**9, 1e32, "99999999999d", "169h"]),
          (("services", "payments", "rpo"), ["8d", 1e32]),
          (("evidence", "retention"), ["36501d", 1e32]),
          (("lab", "cert_validity"), ["826d", "1000000d"]),
          (("policy", "cert_min_validity"), ["826d"]),
          (("regions", "primary"), ["../../victim", "EU-WEST-1", "eu west 1", "eu-west-1/..",
                                    "{{ lookup('pipe', 'id') }}", ""]),
          (("lab", "hostname"), ["localhost", "-a.b", "a..b", "../x.y", "a b.c"]),
          (("lab", "os_user"), ["root;id", "Postgres", "../x", ""]),
          (("notify",), [["http://example.com/h"], ["file:///etc/passwd"],
                         ["https://169.254.169.254/latest/meta-data/"], ["http://[fe80::1]/"],
                         ["https://metadata.google.internal/x"], ["gopher://x.y/"]]),
          (("lab", "cert_validity"), ["0d", "0s"]),
          (("version",), [0, 2, -1])]


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _set(doc: Any, path: tuple, value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(
        doc, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out += _paths(v, prefix + (k,))
    return out


ALL_PATHS = _paths(BASE)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=20), st.sampled_from(["5 minutes", "soon", "-1s", "1w",
                                                           "2025-13-45", "~", "*x", "&a"]))
json_like = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8) | st.integers(), kids,
                                                max_size=4)), max_leaves=12)
word = st.text(string.ascii_lowercase + string.digits + "_-", min_size=1, max_size=12)
bad_duration = st.one_of(
    st.builds(lambda n, u: f"{n} {u}", st.integers(1, 999),
              st.sampled_from(["minutes", "hours", "seconds", "days", "min", "sec"])),
    st.builds(lambda n, u: f"{n}{u}", st.integers(1, 999), st.sampled_from(["w", "y", "M", "us",
                                                                             "mins", "hrs"])),
    st.builds(lambda n: f"-{n}s", st.integers(1, 10**6)),
    st.integers(-10**9, -1), st.floats(max_value=-0.001, allow_infinity=True),
    st.sampled_from(["", "soon", "forever", "never", "1h30m", "PT5M", "5:00", ".nan", "nan",
                     "inf"]),
    st.lists(st.integers(), max_size=2), st.booleans(), st.none())


class Plans:
    """Writes plan files into the sandbox (so relative playbook paths resolve there)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0

    def write(self, data: bytes | str | Any, raw: bool = False) -> Path:
        self.n += 1
        path = self.root / f"case-{self.n % 7}.yml"  # a few names: messages must name them
        if isinstance(data, bytes):
            path.write_bytes(data)
        elif raw:
            path.write_text(data, encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                            encoding="utf-8")
        return path


_PLANS: dict[str, Plans] = {}


def plans(sandbox: Path) -> Plans:
    return _PLANS.setdefault(str(sandbox), Plans(sandbox))


def test_the_base_plan_is_valid(sandbox: Path) -> None:
    # Every mutation below starts from this plan: it must itself validate, or "exit 2"
    # would prove nothing.
    res = validate(plans(sandbox).write(BASE))
    assert res.exit_code == 0 and "valid" in res.stdout, res.output


@settings(FUZZ, max_examples=120)
@given(doc=json_like)
def test_random_yaml_documents(sandbox: Path, figures: Any, doc: Any) -> None:
    figures.add("fuzz_plan")
    path = plans(sandbox).write(doc)
    assert_one_line_error(validate(path), str(path))


yaml_tokens = st.sampled_from([
    "a:", " b:", "- ", "-", ":", "? ", "&x ", "*x", "*y", "<<: *x", "{", "}", "[", "]", ",",
    "!!str ", "!!binary ", "!!python/object:os.system ", "!!set ", "!!timestamp ", "%YAML 1.1",
    "---", "...", "|", ">", "'", '"', "\\", "#", "\t", "  ", "\n", "\r\n", "\n  ", "2025-13-45",
    "2025-02-30 10:00:00", ".nan", ".inf", "0x1F", "0o9", "1_000", "~", "null", "yes", "é",
    "\u2028", "\ufeff", "\x85", "\x07", "regions:", "services:", "rto: 5 minutes", "tier: -1",
    "environments: {lab: {inventory: nowhere}}", "scenarios: []", "version: 1",
])


@settings(FUZZ, max_examples=120)
@given(tokens=st.lists(yaml_tokens, min_size=1, max_size=30))
def test_random_yaml_text(sandbox: Path, figures: Any, tokens: list[str]) -> None:
    figures.add("fuzz_plan")
    path = plans(sandbox).write("".join(tokens), raw=True)
    assert_one_line_error(validate(path), str(path))


@settings(FUZZ, max_examples=80)
@given(data=st.binary(min_size=0, max_size=2048))
def test_random_bytes(sandbox: Path, figures: Any, data: bytes) -> None:
    figures.add("fuzz_plan")
    path = plans(sandbox).write(data)
    assert_one_line_error(validate(path), str(path))


@st.composite
def mutated_plan(draw: st.DrawFn) -> tuple[str, dict, str]:
    """(kind, plan, a substring the message must hold). Each kind is a sure defect."""
    doc = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["wrong-type", "unknown-key", "bad-duration", "out-of-range",
                                 "unknown-service", "missing-file", "missing-field"]))
    if kind == "wrong-type":
        # A list or a mapping where the plan has a scalar (or the reverse) is never valid.
        path = draw(st.sampled_from(ALL_PATHS))
        old = _get(doc, path)
        if isinstance(old, dict | list):
            value = draw(st.one_of(st.integers(), st.text(min_size=1, max_size=8).filter(
                lambda s: s.strip() not in ("", "~", "null")), st.floats()))
        else:
            value = draw(st.one_of(st.lists(st.integers(), min_size=1, max_size=3),
                                   st.dictionaries(word, st.integers(), min_size=1,
                                                   max_size=2)))
        _set(doc, path, value)
        return kind, doc, str(path[0])
    if kind == "unknown-key":
        where = draw(st.sampled_from(MODEL_MAPS))
        key = draw(word.filter(lambda k: k not in FIELDS))
        _get(doc, where)[key] = draw(json_like)
        return kind, doc, "unknown field"
    if kind == "bad-duration":
        path = draw(st.sampled_from(DURATIONS))
        _set(doc, path, draw(bad_duration))
        return kind, doc, str(path[0])
    if kind == "out-of-range":
        path, values = draw(st.sampled_from(RANGES))
        _set(doc, path, draw(st.sampled_from(values)))
        return kind, doc, str(path[0])
    if kind == "unknown-service":
        name = draw(word.filter(lambda w: w not in doc["services"]))
        doc["scenarios"]["region-failover"]["services"].append(name)
        return kind, doc, "unknown service"
    if kind == "missing-file":
        path = draw(st.sampled_from(FILES))
        _set(doc, path, "nowhere/" + draw(word) + draw(st.sampled_from(["", ".yml", "/"])))
        return kind, doc, "does not exist"
    path = draw(st.sampled_from(REQUIRED))
    del _get(doc, path[:-1])[path[-1]]
    return kind, doc, "is required but missing"


@settings(FUZZ, max_examples=250)
@given(case=mutated_plan())
def test_mutated_plans(sandbox: Path, figures: Any, case: tuple[str, dict, str]) -> None:
    figures.add("fuzz_plan")
    _kind, doc, expect = case
    path = plans(sandbox).write(doc)
    line = assert_one_line_error(validate(path), str(path))
    # A random value holding NUL or {{ is refused before the schema looks at it (issue 16).
    assert expect in line or "holds a NUL byte" in line or "Jinja template" in line, line


plain_name = word.filter(lambda w: w[0].isalnum())  # names start with a letter or digit
STRING_PATHS = [p for p in ALL_PATHS if isinstance(_get(BASE, p), str)]
NAMED_MAPS = ("environments", "services", "scenarios")


@settings(FUZZ, max_examples=200)
@given(path=st.sampled_from(STRING_PATHS), before=st.text(max_size=10),
       marker=st.sampled_from(["{{", "{%"]), after=st.text(max_size=10))
def test_a_template_anywhere_is_refused(sandbox: Path, figures: Any, path: tuple, before: str,
                                       marker: str, after: str) -> None:
    # Plan values are data: Ansible would run {{ }} as Jinja (issue 16).
    figures.add("fuzz_plan")
    doc = copy.deepcopy(BASE)
    _set(doc, path, before + marker + after)
    line = assert_one_line_error(validate(plans(sandbox).write(doc)))
    assert "looks like a Jinja template" in line or "NUL byte" in line, line


@settings(FUZZ, max_examples=200)
@given(where=st.sampled_from(NAMED_MAPS),
       name=st.text(min_size=1, max_size=70).filter(
           lambda t: not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$", t)))
def test_names_that_are_not_names_are_refused(sandbox: Path, figures: Any, where: str,
                                              name: str) -> None:
    # Names become paths (pg/<region>/data, runs/<id>-<scenario>): `..`, `/`, spaces, control
    # characters and templates are refused, with the line.
    figures.add("fuzz_plan")
    doc = copy.deepcopy(BASE)
    mapping = doc[where]
    first = next(iter(mapping))
    mapping[name] = mapping.pop(first)
    if where == "services":
        doc["scenarios"]["region-failover"]["services"] = [name, "ledger"] if first == \
            "payments" else ["payments", name]
    line = assert_one_line_error(validate(plans(sandbox).write(doc)))
    assert where in line, line


any_value = st.one_of(st.text(max_size=40), st.integers(-10**40, 10**40),
                     st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                     st.lists(st.text(max_size=8), max_size=3),
                     st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))


@settings(FUZZ, max_examples=1000)
@given(edits=st.lists(st.tuples(st.sampled_from(ALL_PATHS), any_value), min_size=1,
                      max_size=4),
       key=st.one_of(st.none(), st.tuples(st.sampled_from(NAMED_MAPS), st.text(max_size=70))))
def test_the_plan_loader_on_thousands_of_plans(sandbox: Path, figures: Any, edits: list,
                                               key: tuple[str, str] | None) -> None:
    # The loader itself (no CLI), thousands of times: any value at any place, and any name for
    # an environment, service or scenario. It returns a Plan or raises PlanError: never
    # another exception, and a Plan only when every name is a name and no value is a template.
    from drkit.config import _NAME, Plan
    from drkit.errors import PlanError

    figures.add("fuzz_plan")
    doc = copy.deepcopy(BASE)
    for path, value in edits:
        try:
            _set(doc, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced a parent
    if key is not None and isinstance(doc.get(key[0]), dict) and doc[key[0]]:
        mapping = doc[key[0]]
        mapping[key[1]] = mapping.pop(next(iter(mapping)))
    path = plans(sandbox).write(doc)
    try:
        plan = load_plan(path)
    except PlanError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path)), str(e)
        return
    assert isinstance(plan, Plan)
    m = plan.model
    for names in (m.environments, m.services, m.scenarios):
        assert all(_NAME.match(n) for n in names)
    text = path.read_text(encoding="utf-8")
    assert "{{" not in text and "{%" not in text and "\x00" not in text


@st.composite
def harmless_variation(draw: st.DrawFn) -> dict:
    """Changes that keep the plan valid: the fuzz must not just be a machine for exit 2."""
    doc = copy.deepcopy(BASE)
    # Within the plan's bounds (an RTO or RPO is at most 7d; issue 16).
    good = st.one_of(st.builds(lambda n, u: f"{n}{u}", st.integers(1, 7),
                               st.sampled_from(["ms", "s", "m", "h", "d"])),
                     st.builds(lambda n, u: f"{n}{u}", st.integers(1, 10**4),
                               st.sampled_from(["ms", "s", "m"])),
                     st.integers(1, 7 * 86400), st.floats(0.001, 7 * 86400))
    doc["services"]["payments"]["rto"] = draw(good)
    doc["services"]["ledger"]["rpo"] = draw(st.one_of(good, st.just(0), st.just("0s")))
    doc["evidence"]["retention"] = draw(good)
    doc["lab"]["port_base"] = draw(st.integers(1024, 65000))
    name = draw(plain_name)
    doc["environments"][name] = {"inventory": "inventory.yml",
                                 "protected": draw(st.booleans())}
    doc["services"]["payments"]["owner"] = draw(st.text(min_size=1, max_size=30).filter(
        lambda t: "{{" not in t and "{%" not in t and "\x00" not in t))
    doc["scenarios"][draw(plain_name)] = copy.deepcopy(doc["scenarios"]["region-failover"])
    return doc


@settings(FUZZ, max_examples=40)
@given(doc=harmless_variation())
def test_valid_variations_validate(sandbox: Path, figures: Any, doc: dict) -> None:
    figures.add("fuzz_plan")
    path = plans(sandbox).write(doc)
    res = validate(path)
    assert res.exit_code == 0, res.output
    assert res.stderr == "" and "valid" in res.stdout
    load_plan(path)  # and the library agrees


# ------------------------------------------------------------------------------- argv

names = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=16)
odd = st.text(min_size=1, max_size=12).filter(lambda s: not s.startswith("-"))
unknown_env = names.filter(lambda s: s not in ("lab", "prod")) | odd.filter(
    lambda s: s not in ("lab", "prod"))
unknown_scenario = names.filter(lambda s: s != "region-failover") | odd.filter(
    lambda s: s != "region-failover")
unknown_runbook = names.filter(lambda s: s not in ("cert-rotation", "rolling-patch"))
unknown_option = st.builds(lambda w: f"--zz-{w}", st.text(string.ascii_lowercase, min_size=1,
                                                            max_size=8))
bad_date = st.one_of(st.text(string.ascii_letters + " ", min_size=1, max_size=12),
                     st.sampled_from(["2025-13-45", "2025-02-30", "31/12/2025", "yesterday",
                                      "99999999999d", "9999-12-31T23:59:59-23:59",
                                      "0001-01-01T00:00:00+23:59", "1e9d", "-5d", "2025-1-1x"]))
bad_every = st.one_of(st.text(string.ascii_letters, min_size=1, max_size=10).filter(
    lambda s: s.lower() not in ("weekly", "monthly", "daily", "hourly")),
    st.sampled_from(["5 minutes", "@reboot", "* * * *", "61 * * * *", "*/0 * * * *",
                     "0 0 31 2 *", "0 25 * * *", "0 0 0 * *", "0 0 * 13 *", "0 0 * * 8x"]))
bad_dur_text = bad_duration.map(str).filter(lambda s: not s.startswith("-") or s[1:2].isdigit())
missing_value_opts = {
    ("drill", "run"): ["--env", "--smoke-timeout", "--confirm", "--request", "--store"],
    ("drill", "check"): ["--env", "--scenario"], ("drill", "recover"): ["--env", "--scenario"],
    ("drill", "approve"): ["--expires"], ("drill", "request"): ["--env", "--reason"],
    ("evidence", "list"): ["--since", "--kind", "--store"],
    ("evidence", "verify"): ["--store", "--public-key"],
    ("evidence", "export"): ["--format", "--output"], ("certs", "check"): ["--within", "--env"],
    ("schedule",): ["--every", "--format", "--env"], ("report",): ["--since", "--until"],
    ("status",): ["--env", "--store"], ("runbook", "run"): ["--env", "--limit", "--extra-var"],
    ("findings", "assign"): ["--owner"], ("findings", "accept"): ["--reason"],
    ("plan", "validate"): ["--plan"], ("lab", "status"): ["--plan"],
}


@st.composite
def bad_argv(draw: st.DrawFn) -> list[str]:
    """One command line with at least one defect that must stop it before anything runs."""
    env, sc = draw(unknown_env), draw(unknown_scenario)
    sure = draw(st.sampled_from([
        # (argv, why it must fail)
        ["drill", "run", sc, "--env", "lab"],
        ["drill", "run", "region-failover", "--env", env],
        ["drill", "run", "region-failover", "--env", "lab", "--smoke-timeout", draw(bad_dur_text)],
        ["drill", "check", "--env", env],
        ["drill", "check", "--env", "lab", "--scenario", sc],
        ["drill", "recover", "--env", env],
        ["drill", "recover", "--env", "lab", "--scenario", sc],
        ["drill", "resume", draw(names)],
        ["drill", "request", sc, "--env", "lab", "--reason", "fuzz"],
        ["drill", "request", "region-failover", "--env", env, "--reason", "fuzz"],
        ["drill", "approve", draw(names)],
        ["drill", "approve", draw(names), "--expires", draw(bad_dur_text)],
        ["certs", "check", "--env", env],
        ["certs", "check", "--env", "lab", "--within", draw(bad_dur_text)],
        ["evidence", "list", "--since", draw(bad_date)],
        ["evidence", "list", "--kind", draw(names.filter(lambda s: s not in ("drill",
                                                                             "runbook")))],
        ["evidence", "show", draw(names)],
        ["evidence", "export", draw(names)],
        ["evidence", "export", "1", "--format", draw(names.filter(
            lambda s: s not in ("html", "md", "json", "junit")))],
        ["evidence", "verify", "--public-key", "no/such/key.pub"],
        ["runbook", "run", draw(unknown_runbook), "--env", "lab"],
        ["runbook", "run", "cert-rotation", "--env", env],
        ["runbook", "run", "cert-rotation", "--env", "lab", "--extra-var", draw(st.sampled_from(
            ["novalue", "=x", "1x=2", "a b=c", "-=1", ""]))],
        ["schedule", sc, "--env", "lab", "--every", "weekly", "--format", "cron"],
        ["schedule", "region-failover", "--env", env, "--every", "weekly", "--format", "cron"],
        ["schedule", "region-failover", "--env", "lab", "--every", draw(bad_every),
         "--format", "cron"],
        ["schedule", "region-failover", "--env", "lab", "--every", "weekly", "--format",
         draw(names.filter(lambda s: s not in ("systemd", "cron", "github-actions",
                                               "gitlab-ci")))],
        ["report", "--since", draw(bad_date)],
        ["report", "--since", "2025-01-01", "--until", draw(bad_date)],
        ["status", "--env", env],
        ["findings", "show", draw(names)],
        ["findings", "assign", draw(names), "--owner", "x"],
        ["findings", "accept", draw(names), "--reason", "x"],
        ["plan", "validate", "--plan", "no/such/plan.yml"],
        ["lab", draw(st.sampled_from(["up", "down", "status"])), "--plan", "no/such/plan.yml"],
    ]))
    argv = list(sure)
    # Then more trouble on top, any of it: an unknown option, an option left without a value,
    # a stray argument, or a bad --plan.
    extra = draw(st.lists(st.sampled_from(["unknown", "stray", "json", "plan"]), max_size=2))
    for e in extra:
        if e == "unknown":
            argv.insert(draw(st.integers(1, len(argv))), draw(unknown_option))
        elif e == "stray":
            argv.append(draw(odd))
        elif e == "json" and argv[0] not in ("schedule",):
            argv.append("--json")
        elif e == "plan":
            argv += ["--plan", "no/such/plan.yml"]
    if draw(st.booleans()):
        key = next((k for k in missing_value_opts if tuple(argv[:len(k)]) == k), None)
        if key is not None:
            argv.append(draw(st.sampled_from(missing_value_opts[key])))
    return argv


@settings(FUZZ, max_examples=250)
@given(argv=bad_argv())
def test_bad_command_lines_exit_2_without_a_traceback(sandbox: Path, figures: Any,
                                                      argv: list[str]) -> None:
    figures.add("fuzz_argv")
    res = invoke(argv)
    assert res.exit_code == 2, (argv, res.exit_code, res.output)
    assert "Traceback" not in res.output
    err = res.stderr.splitlines()
    # Our own errors are one `drkit:` line; click's usage errors end in an `Error:` line.
    assert err and (len(err) == 1 and err[0].startswith("drkit: ")
                    or err[-1].startswith("Error: ")), (argv, res.stderr)
    assert not (sandbox / "lab-state").exists(), "a fuzz case reached the lab"


@settings(FUZZ, max_examples=60)
@given(group=st.sampled_from(["plan", "lab", "drill", "evidence", "runbook", "certs",
                              "schedule", "status", "report", "findings", ""]),
       first=unknown_option,
       junk=st.lists(st.one_of(unknown_option, st.sampled_from(["-", "--", "-x", "--=", "-e",
                                                                "---", "--plan="])),
                     max_size=3))
def test_unknown_options_anywhere(sandbox: Path, figures: Any, group: str, first: str,
                                  junk: list[str]) -> None:
    figures.add("fuzz_argv")
    argv = ([group] if group else []) + [first] + junk
    res = invoke(argv)
    assert res.exit_code == 2, (argv, res.output)
    assert "Traceback" not in res.output
