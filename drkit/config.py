"""The plan file (drkit.yml): load, validate, and turn into typed, frozen objects.

A bad plan raises PlanError with one line: file, line, field, what is wrong and how to fix it.
Paths in the plan are relative to the plan file's directory (the content root).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from drkit.errors import PlanError

DEFAULT_PLAN = "drkit.yml"
MAX_PLAN_BYTES = 1024 * 1024
MAX_YAML_NODES = 100_000  # bounds alias expansion ("billion laughs") long before memory does

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_HINT = "use a number with a unit, like 90s, 5m, 1h or 30d"


def parse_duration(value: Any) -> float:
    """'90s' -> 90.0. Bare numbers are seconds. Raises ValueError with the fix."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration ({DURATION_HINT})")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration ({DURATION_HINT})")
    if not math.isfinite(seconds):  # YAML's .nan/.inf would make every target check meaningless
        raise ValueError(f"{value!r} is not a duration ({DURATION_HINT})")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative (durations are 0 or more)")
    return seconds


def format_duration(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


# ---------------------------------------------------------------------------------------------
# Names are names (issue 16). Plan values reach file paths (pg/<region>/data,
# runs/<id>-<scenario>) and Ansible: a name is a plain token, never a path or a template.

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)
NAME_HINT = "letters, digits, - and _, starting with a letter or digit, at most 63"
# eu-west-1, us-gov-west-1, ap-southeast-2, cn-north-1, us-isob-east-1
_AWS_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$")
_OS_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
TEMPLATE_MARKERS = ("{{", "{%")

# Bounds on every duration and count: a plan is reviewed by people, and a typo such as
# `1e32d` must not turn a target or a retention into "never".
MAX_RTO_S = 7 * 86400.0  # an RTO or RPO over a week is not a recovery target
MAX_CERT_VALIDITY_S = 825 * 86400.0  # the longest TLS certificate life browsers ever accepted
MAX_POLICY_S = 5 * 365 * 86400.0  # drill cadence, finding deadlines
MAX_RETENTION_S = 100 * 365 * 86400.0  # evidence retention (S3 Object Lock)
MAX_ITEMS = 100  # environments, services, scenarios, blackouts, ...
MAX_PHASES = 50


def check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not {what} drkit accepts ({NAME_HINT} characters)")
    return value


def check_hostname(value: str) -> str:
    labels = value.split(".")
    if len(value) > 253 or len(labels) < 2 or not all(_HOST_LABEL.match(x) for x in labels):
        raise ValueError(f"{value!r} is not a DNS name with a zone (like payments.example.com)")
    return value


def check_plan_path(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a path cannot hold a NUL byte")
    return value


def bounded(value: Any, limit: float) -> Any:
    seconds = parse_duration(value) if isinstance(value, str) else float(value)
    if seconds > limit:
        raise ValueError(f"{format_duration(seconds) if seconds < 1e15 else value!r} is more "
                         f"than the {format_duration(limit)} this field allows")
    return value


_METADATA_HOSTS = {"169.254.169.254", "fd00:ec2::254", "100.100.100.200",
                   "metadata.google.internal", "metadata", "instance-data",
                   "metadata.azure.com"}


def webhook_problem(url: str) -> str | None:
    """Why `url` may not be a webhook, or None. https, or http to loopback only; never a
    link-local or cloud metadata address (a plan must not make drkit read instance
    credentials), never file:// or another scheme."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        return f"{url[:40]!r} is not a URL ({e})"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        return (f"{scheme or 'no'} scheme in a webhook URL: use https://host/path (http only "
                "to 127.0.0.1 or localhost)")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    loopback = host == "localhost" or (ip is not None and ip.is_loopback)
    if host in _METADATA_HOSTS or (ip is not None and (ip.is_link_local or ip.is_unspecified
                                                        or ip.is_multicast)):
        return f"webhook host {host} is a link-local or cloud metadata address: refused"
    if scheme == "http" and not loopback:
        return f"webhook to {host} over http: use https (http is allowed only to loopback)"
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Seconds, parsed from '90s'-style strings by the validators below. The JSON Schema takes what
# the loader takes (a number of seconds, or a string like 90s), so editors accept the plans we
# ship (issue 11: the shipped drkit.yml failed its own schema with 10 errors).
DURATION_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "number", "minimum": 0},
              {"type": "string", "pattern": _DURATION.pattern}],
    "description": "a duration: 90s, 5m, 1h, 30d (or a number of seconds)"}
Duration = Annotated[float, WithJsonSchema(DURATION_JSON_SCHEMA)]


def _dur(v: Any) -> float:
    return parse_duration(v)


class Regions(_Model):
    primary: str = Field(description="AWS region that serves traffic in normal operation")
    secondary: str = Field(description="AWS region a drill recovers into")
    declared: tuple[str, ...] = Field((), max_length=20, description=(
        "region names that are not AWS-style (a data centre, a site): each a plain name"))

    @field_validator("declared")
    @classmethod
    def _declared(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            check_name(name, "a declared region")
        return v

    @model_validator(mode="after")
    def _differ(self) -> Regions:
        for key in ("primary", "secondary"):
            value = getattr(self, key)
            if not (_AWS_REGION.match(value) or value in self.declared):
                raise ValueError(
                    f"{key}: {value!r} is not an AWS region name (like eu-west-1); a site that "
                    "is not an AWS region must be listed in regions.declared")
        if self.primary == self.secondary:
            raise ValueError("primary and secondary must be different regions")
        return self


class LabSettings(_Model):
    """Settings of the embedded lab. Environment variables override them (tests, CI)."""

    state_dir: str = Field("/var/tmp/drkit-lab", description="where the lab keeps all its state")
    port_base: int = Field(17400, ge=1024, le=65000, description="first of the lab's ports")
    instances: int = Field(4, ge=1, le=9, description="payments API instances per region")
    replication: Literal["sync", "async"] = "sync"
    os_user: str = Field("postgres", description="unprivileged user that runs PostgreSQL")
    hostname: str = Field("payments.drkit.lab", description="the payments DNS name")
    cert_validity: str = Field("90d", description="validity of the entry point certificate")
    # issue 17: regions as network namespaces, hosts over SSH (drkit.lab.netns); `local` keeps
    # every region on the controller's loopback; `auto` picks namespaces where the machine can
    # create them (drkit.lab.netns.resolve). DRKIT_LAB_TOPOLOGY overrides it.
    topology: Literal["auto", "local", "namespaces"] = Field(
        "auto", description="auto: namespaces where this machine can create them (root, `ip "
        "netns add` works), else local; local: regions on loopback; namespaces: a network "
        "namespace per region, hosts reached over SSH (needs root)")
    netns_cidr: str = Field("10.213.0.0/24", description="private /24 whose addresses the "
                            "namespaced lab uses, only inside its own namespaces")

    @field_validator("netns_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        from drkit.lab.netns import check_cidr

        return check_cidr(v)

    @field_validator("cert_validity")
    @classmethod
    def _validity(cls, v: str) -> str:
        if parse_duration(v) <= 0:
            raise ValueError("must be more than 0")
        return bounded(v, MAX_CERT_VALIDITY_S)

    @field_validator("os_user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not _OS_USER.match(v):
            raise ValueError(f"{v!r} is not a user name (lower-case letters, digits, _ and -)")
        return v

    @field_validator("hostname")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_hostname(v)

    @field_validator("state_dir")
    @classmethod
    def _dir(cls, v: str) -> str:
        return check_plan_path(v)


class StateBackend(_Model):
    """Where controllers share an environment's drill lease, journal and results (issue 18)."""

    s3: str = Field(description="s3://bucket/prefix (the bucket exists; drkit writes with "
                    "conditional requests)")
    region: str = Field(description="the bucket's AWS region: neither of the regions a drill "
                        "fails over")
    endpoint_url: str | None = Field(None, description="another S3 endpoint (e.g. the lab's "
                                     "moto); else $AWS_ENDPOINT_URL or AWS")
    lease: Duration = Field(300.0, description="how long a lease lasts unless its holder "
                            "renews it (a third of it between renewals)")

    @field_validator("s3")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith("s3://") or not v[5:].split("/", 1)[0]:
            raise ValueError(f"{v!r} is not an S3 location (use s3://bucket/prefix)")
        return v

    @field_validator("lease", mode="before")
    @classmethod
    def _lease(cls, v: Any) -> float:
        seconds = parse_duration(v)
        if not 5 <= seconds <= 86400:
            raise ValueError(f"{v!r} must be between 5s and 1d")
        return seconds


class ExecutionNode(_Model):
    """A machine in a region that runs the environment's playbooks (`ansible-runner worker`
    over SSH, as Automation Controller's execution nodes do): drkit must be installed on it."""

    host: str = Field(description="SSH address of the node")
    user: str = Field("root", description="SSH user")
    port: int = Field(22, ge=1, le=65535)
    identity_file: str | None = Field(None, description="SSH private key (path on the "
                                      "controller)")
    ssh_executable: str = Field("ssh", description="the ssh client to use")
    ssh_options: tuple[str, ...] = Field((), max_length=30, description="extra `-o` options, "
                                         "e.g. UserKnownHostsFile=/etc/drkit/known_hosts")
    python: str = Field("python3", description="the node's Python that has drkit and "
                        "ansible-runner (a virtualenv's bin/python)")
    content_root: str | None = Field(None, description="where drkit's content (playbooks, "
                                     "collections) is on the node; default: the same path as "
                                     "on the controller")
    state_dir: str = Field("/var/tmp/drkit-node", description="the node's working folder "
                           "(runs' folders, detached drivers' logs)")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v or v.startswith("-") or any(c.isspace() for c in v):
            raise ValueError(f"{v!r} is not a host name or address")
        return v

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        if not _OS_USER.match(v):
            raise ValueError(f"{v!r} is not a user name (lower-case letters, digits, _ and -)")
        return v

    @field_validator("ssh_options")
    @classmethod
    def _opts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for o in v:
            if "=" not in o or o.startswith("-") or any(c in o for c in "\n\r"):
                raise ValueError(f"{o!r} is not an ssh option like Name=value")
        return v


# ---------------------------------------------------------------------------------------------
# Flow packs (issue 14): the smoke flows and the RPO canary of one payments API, declared in a
# file an environment names (flows/payments-lab.yml is the lab's). drkit.flows runs them.

FlowVar = Annotated[str | int | float | bool, Field(description="a value for ${name}")]
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Set by drkit.flows when a flow runs or the canary writes (see flows/payments-lab.yml).
FLOW_BUILTINS = ("uuid", "flow", "run_id", "state_dir")
CANARY_BUILTINS = ("reference", "seq", "prefix", "run_id", "state_dir")
MAX_STEPS = 20


class FlowRequest(_Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str = Field(pattern=r"^/", max_length=2000, description="below the entry URL, /...")
    body: Any = Field(None, description="a JSON body (any YAML value)")
    headers: dict[str, str] = Field({}, max_length=50)


class FlowExpect(_Model):
    status: int | tuple[int, ...] = Field(200, description="the status, or statuses, that pass")
    # "json" in the file; another name here (BaseModel has a json method).
    fields: dict[str, Any] = Field({}, alias="json", max_length=50, description=(
        "dotted field of the JSON answer (charge.id, items.0.ref) -> the value it must have"))

    @field_validator("status")
    @classmethod
    def _status(cls, v: int | tuple[int, ...]) -> int | tuple[int, ...]:
        codes = (v,) if isinstance(v, int) else v
        if not codes:
            raise ValueError("give at least one status")
        for code in codes:
            if not 100 <= code <= 599:
                raise ValueError(f"{code} is not an HTTP status (100-599)")
        return v


class FlowStep(_Model):
    name: str | None = None
    request: FlowRequest
    expect: FlowExpect = FlowExpect()
    capture: dict[str, str] = Field({}, max_length=20, description=(
        "variable -> dotted field of the answer, for later steps (${variable})"))

    @field_validator("capture")
    @classmethod
    def _captures(cls, v: dict[str, str]) -> dict[str, str]:
        for var in v:
            if not _VAR_NAME.match(var):
                raise ValueError(f"{var!r} is not a variable name (letters, digits, _)")
        return v


class FlowSpec(_Model):
    detail: str = Field("", description="the message when it passes, with ${variables}")
    steps: tuple[FlowStep, ...] = Field(min_length=1, max_length=MAX_STEPS)


class SecretSource(_Model):
    """A credential, read from an environment variable or a file when the flows run; never
    written to the run folder, the evidence or a report."""

    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = None
    required: bool = True

    @model_validator(mode="after")
    def _one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (a variable name) or file (a path)")
        return self


class CanaryReadBack(FlowStep):
    items: str = Field("", description="dotted field holding the list ('': the answer itself)")
    reference: str = Field("reference", description="each item's field with the reference")


class CanaryLedger(FlowStep):
    balanced: str = Field(description="dotted field that is true when the ledger balances")
    debits_cents: str | None = None
    credits_cents: str | None = None
    entries: str | None = None


class CanarySpec(_Model):
    """The RPO canary needs a write endpoint (numbered payments with ${reference}, each
    acknowledged with an id it captures) and a read-back endpoint (the payments whose
    reference starts with ${prefix}); a ledger endpoint, if declared, is checked after failover
    (without one the verdict says the ledger was not read)."""

    write: FlowStep
    read_back: CanaryReadBack
    ledger: CanaryLedger | None = None

    @field_validator("write")
    @classmethod
    def _acked(cls, v: FlowStep) -> FlowStep:
        if len(v.capture) != 1:
            raise ValueError("capture exactly one field: the acknowledged payment's id "
                             "(e.g. capture: {payment_id: id})")
        return v


class FlowPackModel(_Model):
    version: Literal[1] = 1
    name: str
    description: str = ""
    vars: dict[str, FlowVar] = Field({}, max_length=MAX_ITEMS)
    secrets: dict[str, SecretSource] = Field({}, max_length=20)
    headers: dict[str, str] = Field({}, max_length=50, description=(
        "sent with every request; ${secret.NAME} only here"))
    flows: dict[str, FlowSpec] = Field(min_length=1, max_length=MAX_ITEMS)
    canary: CanarySpec | None = Field(None, description=(
        "without one RPO is not measured: a drill with an RPO target is inconclusive"))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "a flow pack name")

    @field_validator("flows")
    @classmethod
    def _flow_names(cls, v: dict[str, FlowSpec]) -> dict[str, FlowSpec]:
        for name in v:
            check_name(name, "a flow name")
        return v

    @model_validator(mode="after")
    def _secrets_declared(self) -> FlowPackModel:
        for key, tmpl in self.headers.items():
            for ref in _PLACEHOLDER.findall(tmpl):
                if ref.startswith("secret.") and ref[7:] not in self.secrets:
                    raise ValueError(f"headers.{key}: ${{{ref}}} is not a declared secret "
                                     f"(secrets: {', '.join(self.secrets) or 'none'})")
        return self

    def undefined(self, extra: Iterable[str] = ()) -> str | None:
        """The first ${...} of a flow or the canary that nothing defines, as a message."""
        known = set(self.vars) | set(extra)

        def refs(value: Any) -> list[str]:
            if isinstance(value, str):
                return _PLACEHOLDER.findall(value)
            if isinstance(value, dict):
                return [r for k, v in value.items() for r in refs(k) + refs(v)]
            if isinstance(value, list | tuple):
                return [r for v in value for r in refs(v)]
            return []

        def check(step: FlowStep, where: str, have: set[str]) -> str | None:
            req = step.request
            for ref in refs([req.path, req.body, dict(req.headers), dict(step.expect.fields)]):
                if ref.startswith("secret."):
                    return (f"{where}: ${{{ref}}}: a secret goes only in the pack's headers "
                            "(never in a path, body or expectation)")
                if ref not in have:
                    return (f"{where}: ${{{ref}}} is not defined (vars, the environment's "
                            "flow_vars, an earlier step's capture, or a built-in: "
                            f"{', '.join(FLOW_BUILTINS)})")
            return None

        for name, flow in self.flows.items():
            have = known | set(FLOW_BUILTINS)
            for i, step in enumerate(flow.steps):
                if problem := check(step, f"flows.{name}.steps.{i}", have):
                    return problem
                have |= set(step.capture)
            for ref in _PLACEHOLDER.findall(flow.detail):
                if ref not in have:
                    return f"flows.{name}.detail: ${{{ref}}} is not defined"
        if self.canary is not None:
            have = known | set(CANARY_BUILTINS)
            for part in ("write", "read_back", "ledger"):
                step = getattr(self.canary, part)
                if step is not None and (problem := check(step, f"canary.{part}", have)):
                    return problem
        return None


class Environment(_Model):
    inventory: str = Field(description="inventory path, relative to the plan file")
    protected: bool = Field(False, description="needs --confirm NAME, a change id for runbooks")
    lab: bool = Field(False, description="this environment is the embedded lab")
    requires_approval: bool = False
    entry_url: str | None = Field(None, description="public entry point (the lab derives it)")
    ca_file: str | None = Field(None, description="CA bundle for the entry point, if private")
    # issue 18: shared run state and execution nodes (drkit.state, drkit.remote)
    state: StateBackend | None = Field(None, description="shared lease, journal and results "
                                       "for several controllers (default: this machine's lock)")
    execution_nodes: dict[str, ExecutionNode] = Field(
        {}, max_length=10, description="per region (primary/secondary region name), the node "
        "that runs playbooks there; a drill runs on the surviving region's node")
    # issue 14: what it runs on, and the flow pack its smoke flows and canary come from
    target: Literal["lab", "aws"] | None = Field(None, description=(
        "what it runs on; aws: the evidence records the AWS caller identity (STS) that ran it"))
    flows: str | None = Field(None, description=(
        "flow pack (smoke flows, canary) for its API, relative to the plan; a lab environment "
        "defaults to flows/payments-lab.yml"))
    flow_vars: dict[str, FlowVar] = Field({}, max_length=MAX_ITEMS, description=(
        "values for the pack's ${variables}: test merchant and account ids"))


DEFAULT_FLOW_PACK = "flows/payments-lab.yml"


class Service(_Model):
    tier: int = Field(ge=1, le=4)
    owner: str = "unassigned"
    rto: Duration
    rpo: Duration
    smoke: tuple[str, ...] = Field((), max_length=MAX_ITEMS, description=(
        "the flows that prove it, by name in each environment's flow pack (default: all)"))

    _rto = field_validator("rto", "rpo", mode="before")(classmethod(lambda cls, v: _dur(v)))

    @field_validator("rto")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be more than 0s (the time the business can be down)")
        return bounded(v, MAX_RTO_S)

    @field_validator("rpo")
    @classmethod
    def _rpo_bound(cls, v: float) -> float:
        return bounded(v, MAX_RTO_S)

    @field_validator("smoke")
    @classmethod
    def _flows(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for flow in v:
            check_name(flow, "a flow name")
        return v


class Phase(_Model):
    name: str
    playbook: str
    starts_clock: bool = False
    stops_clock: bool = False
    failback: bool = Field(False, description="skipped with --no-failback")
    gate: bool = Field(False, description="pause for a human before this phase")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "a phase name")

    @field_validator("playbook")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_plan_path(v)


class Scenario(_Model):
    type: str = "region-failover"
    description: str = ""
    services: tuple[str, ...] = Field(max_length=MAX_ITEMS)
    phases: tuple[Phase, ...] = Field(max_length=MAX_PHASES)
    rollback: str | None = Field(None, description="playbook that restores service on abort")
    holds: str | None = Field(None, description="playbook that re-checks finished phases "
                              "before `drkit drill resume` continues")
    requires_approval: bool = False

    @model_validator(mode="after")
    def _clock(self) -> Scenario:
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError("phase names must be unique")
        starts = [i for i, p in enumerate(self.phases) if p.starts_clock]
        stops = [i for i, p in enumerate(self.phases) if p.stops_clock]
        if len(starts) > 1 or len(stops) > 1:
            raise ValueError("at most one phase starts and one stops the recovery clock")
        if starts and stops and stops[0] < starts[0]:
            raise ValueError("the clock must start before it stops")
        return self


# S3 Object Lock retention below this is refused for an S3 store or anchor (docs/evidence.md):
# `retention: 0s` would mean no lock at all. One day is a floor against mistakes, not a
# recommendation: regulators ask for years (the default is 7).
MIN_S3_RETENTION_S = 86400.0


class Evidence(_Model):
    store: str = "./evidence"
    signing_key: str | None = Field(None, description="Ed25519 private key (PEM), plan-relative")
    public_key: str | None = None
    kms_key: str | None = Field(None, description="AWS KMS key (ARN, id or alias) that signs "
                                "records: ECC_NIST_P256, ECDSA_SHA_256; replaces signing_key")
    kms_region: str | None = Field(None, description="region of kms_key (default: the ARN's)")
    trusted_keys: tuple[str, ...] = Field((), description="SHA-256 fingerprints of the public "
                                          "keys whose records verify accepts (pinned)")
    anchor: str | None = Field(None, description="where each seal publishes the chain head: an "
                               "append-only file (plan-relative) or s3://bucket/prefix "
                               "(Object Lock)")
    tsa_url: str | None = Field(None, description="RFC 3161 time-stamping authority URL")
    tsa_ca: str | None = Field(None, description="CA certificate (PEM) that verifies the TSA's "
                               "tokens, plan-relative")
    retention: Duration = Field(7 * 365 * 86400, description="S3 Object Lock retention")
    retention_class: str = "dr-test-evidence"
    controls: tuple[str, ...] = ()

    @field_validator("trusted_keys")
    @classmethod
    def _fingerprints(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from drkit.errors import BadInput
        from drkit.evidence.signing import normalise_fingerprint

        try:
            return tuple(normalise_fingerprint(f) for f in v)
        except BadInput as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _retention_floor(self) -> Evidence:
        on_s3 = self.store.startswith("s3://") or (self.anchor or "").startswith("s3://")
        if on_s3 and self.retention < MIN_S3_RETENTION_S:
            raise ValueError(f"retention {format_duration(self.retention)} is below the floor "
                             f"of {format_duration(MIN_S3_RETENTION_S)} for S3 Object Lock "
                             "(records must stay locked; regulators ask for years: use e.g. "
                             "2555d)")
        return self

    _ret = field_validator("retention", mode="before")(classmethod(lambda cls, v: _dur(v)))

    @field_validator("retention")
    @classmethod
    def _ret_bound(cls, v: float) -> float:
        return bounded(v, MAX_RETENTION_S)


class Policy(_Model):
    drill_every: dict[int, Duration] = Field(
        default_factory=lambda: {1: 90 * 86400.0, 2: 180 * 86400.0, 3: 365 * 86400.0},
        description="per tier: a passing drill is due this often",
    )
    finding_due: dict[str, Duration] = Field(
        default_factory=lambda: {"high": 30 * 86400.0, "medium": 90 * 86400.0,
                                 "low": 180 * 86400.0},
    )
    cert_min_validity: Duration = 30 * 86400.0

    @field_validator("drill_every", "finding_due", mode="before")
    @classmethod
    def _durs(cls, v: Any) -> Any:
        if isinstance(v, dict):
            if len(v) > MAX_ITEMS:
                raise ValueError(f"at most {MAX_ITEMS} entries")
            return {k: bounded(_dur(d), MAX_POLICY_S) for k, d in v.items()}
        return v

    _cmv = field_validator("cert_min_validity", mode="before")(classmethod(lambda cls, v: _dur(v)))

    @field_validator("cert_min_validity")
    @classmethod
    def _cmv_bound(cls, v: float) -> float:
        return bounded(v, MAX_CERT_VALIDITY_S)


class Blackout(_Model):
    """A time when runs must not start; formats per `every` in drkit.windows."""

    name: str
    start: str
    end: str
    timezone: str = "UTC"
    every: Literal["once", "day", "week", "month", "year"] = "once"
    business_days: bool = Field(False, description="every: month counts Monday-Friday days")

    @model_validator(mode="after")
    def _rule(self) -> Blackout:
        # Checked at load so a bad window is a plan error (file, line), not a surprise at 3 a.m.
        from drkit.windows import validate

        validate(self)
        return self


def _duration_schema(schema: dict[str, Any]) -> None:
    """A duration is written like 30m in the plan: the schema takes what the loader takes."""
    schema.pop("type", None)
    schema["anyOf"] = [{"type": "number", "minimum": 0},
                       {"type": "string", "pattern": _DURATION.pattern}]


class ChangeFreeze(_Model):
    """Runbooks are refused around drills (drkit.envlock): a drill always excludes any other
    change while it runs; the freeze also covers a drill that died half way (until `drill
    resume` or `drill recover` ends it) and a quiet time after a drill."""

    during_drills: bool = Field(False, description=(
        "refuse runbooks while a drill is unfinished (killed, not yet resumed or recovered) "
        "and for `after_drill` after one ends, unless --force-during-drill REASON (recorded)"))
    after_drill: Duration = Field(
        0.0, description="how long the freeze lasts after a drill ends, e.g. 30m",
        json_schema_extra=_duration_schema)

    _after = field_validator("after_drill", mode="before")(classmethod(lambda cls, v: _dur(v)))


class PlanModel(_Model):
    version: Literal[1] = 1
    name: str = "drkit"
    regions: Regions
    environments: dict[str, Environment] = Field(max_length=MAX_ITEMS)
    lab: LabSettings = LabSettings()
    services: dict[str, Service] = Field(max_length=MAX_ITEMS)
    scenarios: dict[str, Scenario] = Field(max_length=MAX_ITEMS)
    evidence: Evidence = Evidence()
    policy: Policy = Policy()
    notify: tuple[str, ...] = Field((), max_length=20, description=(
        "webhook URLs: https (http only to loopback); link-local and metadata hosts refused"))
    blackouts: tuple[Blackout, ...] = Field((), max_length=MAX_ITEMS)
    change_freeze: ChangeFreeze = ChangeFreeze()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "a plan name")

    @field_validator("notify")
    @classmethod
    def _hooks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, url in enumerate(v):
            problem = webhook_problem(url)
            if problem:
                raise ValueError(f"{i}: {problem}")
        return v

    @model_validator(mode="after")
    def _references(self) -> PlanModel:
        regions = (self.regions.primary, self.regions.secondary)
        for name, env in self.environments.items():
            if env.state is not None and env.state.region in regions:
                raise ValueError(
                    f"environments.{name}.state.region: {env.state.region!r} is a region a "
                    "drill fails over; keep the shared state in another region (e.g. "
                    "eu-north-1)")
            for region in env.execution_nodes:
                if region not in regions:
                    raise ValueError(
                        f"environments.{name}.execution_nodes: {region!r} is not the plan's "
                        f"primary or secondary region ({', '.join(regions)})")
        for name, sc in self.scenarios.items():
            for svc in sc.services:
                if svc not in self.services:
                    raise ValueError(
                        f"scenarios.{name}.services: unknown service {svc!r} "
                        f"(declared: {', '.join(self.services) or 'none'})"
                    )
        return self


@dataclass(frozen=True)
class Plan:
    """A validated plan and where it came from."""

    path: Path
    model: PlanModel
    sha256: str

    @property
    def root(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        p = Path(os.path.expanduser(relative))
        return p if p.is_absolute() else (self.root / p)

    def environment(self, name: str) -> Environment:
        try:
            return self.model.environments[name]
        except KeyError:
            raise PlanError(
                f"{self.path.name}: unknown environment {name!r} "
                f"(declared: {', '.join(self.model.environments)})"
            ) from None

    def scenario(self, name: str) -> Scenario:
        try:
            return self.model.scenarios[name]
        except KeyError:
            raise PlanError(
                f"{self.path.name}: unknown scenario {name!r} "
                f"(declared: {', '.join(self.model.scenarios)})"
            ) from None

    def inventory(self, env: str) -> Path:
        path = self.resolve(self.environment(env).inventory)
        if not path.exists():
            raise PlanError(
                f"{self.path.name}: environments.{env}.inventory: {path} does not exist "
                "(point it at an inventory file or directory)"
            )
        return path

    def flow_pack_path(self, env: str) -> Path | None:
        """The environment's flow pack file (a lab environment that names none: the shipped
        flows/payments-lab.yml), else None. A relative path not found next to the plan is
        looked for among drkit's shipped packs, as the content is (a plan kept elsewhere)."""
        e = self.environment(env)
        name = e.flows or (DEFAULT_FLOW_PACK if e.lab else None)
        if name is None:
            return None
        here = self.resolve(name)
        shipped = Path(__file__).resolve().parents[1] / name
        return shipped if not here.exists() and not Path(name).is_absolute() and ".." not in \
            Path(name).parts \
            and shipped.is_file() else here

    def flow_pack(self, env: str) -> FlowPackModel | None:
        """The environment's validated flow pack (None: it declares none)."""
        path = self.flow_pack_path(env)
        return load_flow_pack(path) if path is not None else None

    def smoke_flows(self, env: str, services: Iterable[str]) -> list[str]:
        """The flows the services name (each service's `smoke`, or every flow of the
        environment's pack when it names none), in order, once each."""
        pack = self.flow_pack(env)
        out: list[str] = []
        for s in services:
            names = self.model.services[s].smoke or (tuple(pack.flows) if pack else ())
            out += [f for f in names if f not in out]
        return out

    def lab_environment(self) -> str:
        for name, env in self.model.environments.items():
            if env.lab:
                return name
        raise PlanError(f"{self.path.name}: no environment has 'lab: true'")


def plan_path(given: str | Path | None = None) -> Path:
    return Path(given or os.environ.get("DRKIT_PLAN") or DEFAULT_PLAN)


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key, and bounds expansion."""


_CParser: Any
try:
    from yaml._yaml import CParser as _CParser
except ImportError:  # PyYAML built without libyaml: the pure-Python loader alone
    _CParser = None

if _CParser is not None:

    class _FastLineLoader(
            yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver,
            _CParser):
        """The same safe loader with libyaml's scanner and parser: a plan, a flow pack or an
        inventory is read by every drkit command (a drill: a dozen times), and the
        pure-Python scanner was most of a short command's CPU (7x slower, issue 13). The
        composer (nodes with their marks, bounded by _compose_bounded), the resolver and the
        constructor stay PyYAML's Python ones, so values and recursion limits are the same.
        Only valid YAML is taken from it: on any YAMLError the pure-Python loader reads the
        text again, so the message a user gets does not change."""

        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load(text)`, read by libyaml when it can (the same values and errors)."""
    if _CParser is not None:
        loader = _FastLineLoader(text)
        try:
            return loader.get_single_data()
        except yaml.YAMLError:
            pass  # the pure-Python loader below raises it with its own message
        finally:
            loader.dispose()
    return yaml.safe_load(text)


def _compose_bounded(loader: Any) -> yaml.Node | None:
    node = loader.get_single_node()
    if node is None:
        return None
    # Count nodes reachable through aliases too: anchors can multiply a small file
    # into billions of nodes.
    seen = 0
    stack = [node]
    memo: dict[int, int] = {}
    while stack:
        n = stack.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            raise PlanError(
                f"{loader.name}: the YAML expands to more than {MAX_YAML_NODES} nodes "
                "(aliases/anchors that multiply); write the plan out plainly"
            )
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack.extend((k, v))
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        memo[id(n)] = 1
    return node


def _load_with_lines(text: str, name: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    if _CParser is not None:
        try:
            return _read_with_lines(_FastLineLoader(text), name)
        except yaml.YAMLError:
            pass  # read again below: the pure-Python loader's message, as before
    return _read_with_lines(_LineLoader(text), name)


def _read_with_lines(loader: Any, name: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    loader.name = name
    try:
        node = _compose_bounded(loader)
        lines: dict[tuple[str, ...], int] = {}

        def walk(n: yaml.Node, path: tuple[str, ...]) -> None:
            if isinstance(n, yaml.MappingNode):
                first: dict[str, int] = {}
                for k, v in n.value:
                    key = str(k.value)
                    line = k.start_mark.line + 1
                    if key in first and k.tag != "tag:yaml.org,2002:merge":
                        # PyYAML keeps the last; a reviewer reads the first (issue 16).
                        where = ".".join(path + (key,))
                        raise PlanError(
                            f"{name}:{line} {where}: duplicate key (first at line "
                            f"{first[key]}); keep one")
                    first[key] = line
                    lines[path + (key,)] = line
                    walk(v, path + (key,))
            elif isinstance(n, yaml.SequenceNode):
                for i, v in enumerate(n.value):
                    lines[path + (str(i),)] = v.start_mark.line + 1
                    walk(v, path + (str(i),))

        if node is not None:
            walk(node, ())
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, lines


def _describe(err: ErrorDetails) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    if kind == "extra_forbidden":
        return "unknown field (check its spelling; `drkit plan schema` lists the fields)"
    if kind == "missing":
        return "is required but missing"
    msg = msg.removeprefix("Value error, ")
    if msg.startswith("Input should be"):
        got = err.get("input")
        msg = f"{msg.replace('Input should be', 'should be')}, not {got!r}"
    return msg


def load_plan(path: str | Path | None = None) -> Plan:
    """Read and validate a plan. Every problem becomes a one-line PlanError (exit 2)."""
    from drkit.files import check_path, read_regular

    p = check_path(plan_path(path), "plan")
    if not p.exists():
        raise PlanError(
            f"{p}: plan file not found (run from the directory holding drkit.yml, or pass "
            "--plan PATH or set DRKIT_PLAN)"
        )
    if not p.is_file():
        raise PlanError(f"{p}: is not a file (give the path of drkit.yml)")
    size = p.stat().st_size
    if size > MAX_PLAN_BYTES:
        raise PlanError(f"{p}: {size} bytes is too large for a plan (the limit is 1 MiB)")
    raw = read_regular(p, limit=MAX_PLAN_BYTES, what="plan")
    if b"\x00" in raw:
        raise PlanError(f"{p}: is a binary file, not YAML (give the path of drkit.yml)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PlanError(f"{p}: is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    try:
        data, lines = _load_with_lines(text, str(p))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f":{mark.line + 1}" if mark else ""
        raise PlanError(f"{p}{where}: not valid YAML: {e.problem or e.context}") from None
    except (yaml.YAMLError, RecursionError) as e:
        raise PlanError(f"{p}: not valid YAML: {e}") from None
    except (ValueError, TypeError, OverflowError) as e:
        # The safe constructor raises these for values the resolver accepted, e.g. the
        # timestamp `2025-13-45` (month must be in 1..12): bad input, not a traceback.
        raise PlanError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise PlanError(f"{p}:1: the plan must be a mapping (regions:, environments:, ...)")
    _check_data(data, lines, p)
    try:
        model = PlanModel.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(str(x) for x in err.get("loc", ()))
        # pydantic puts `.after` validators' messages at the model; they carry their own path.
        line = 0
        for i in range(len(loc), -1, -1):
            if loc[:i] in lines:
                line = lines[loc[:i]]
                break
        field = ".".join(loc) if loc else "(top level)"
        where = f"{p}:{line}" if line else str(p)
        raise PlanError(f"{where} {field}: {_describe(err)}") from None
    except (TypeError, ValueError, RecursionError) as e:
        raise PlanError(f"{p}: invalid plan: {e}") from None
    plan = Plan(path=p.resolve(), model=model, sha256=hashlib.sha256(raw).hexdigest())
    try:
        _check_files(plan, lines)
        _check_flow_packs(plan, lines)
    except OSError as e:  # e.g. ENAMETOOLONG from a 5000-character inventory path
        raise PlanError(f"{p}: cannot check a path the plan names: {e.strerror} (fix the "
                        "inventory and playbook paths)") from None
    return plan


_NAMED_MAPS: dict[tuple[str, ...], str] = {
    ("environments",): "an environment name", ("services",): "a service name",
    ("scenarios",): "a scenario name"}


def _check_data(data: Any, lines: dict[tuple[str, ...], int], p: Path) -> None:
    """Before the schema: no NUL byte and no template anywhere (keys and values), and the
    names of environments, services and scenarios are names. One line, with the line number."""

    def fail(path: tuple[str, ...], what: str) -> PlanError:
        line = 0
        for i in range(len(path), -1, -1):
            if path[:i] in lines:
                line = lines[path[:i]]
                break
        where = f"{p}:{line}" if line else str(p)
        return PlanError(f"{where} {'.'.join(path) or '(top level)'}: {what}")

    def text(value: str, path: tuple[str, ...]) -> None:
        if "\x00" in value:
            raise fail(path, "holds a NUL byte (plan values are plain text)")
        if any(m in value for m in TEMPLATE_MARKERS):
            raise fail(path, f"{value[:60]!r} looks like a Jinja template: plan values are "
                       "data, never templated (remove the {{ }} or {% %})")

    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            kind = _NAMED_MAPS.get(path)
            for k, v in node.items():
                key = str(k)
                text(key, path + (key,))
                if kind and not _NAME.match(key):
                    raise fail(path + (key,), f"{key!r} is not {kind} drkit accepts "
                               f"({NAME_HINT} characters)")
                stack.append((v, path + (key,)))
        elif isinstance(node, list):
            stack.extend((v, path + (str(i),)) for i, v in enumerate(node))
        elif isinstance(node, str):
            text(node, path)


def _check_files(plan: Plan, lines: dict[tuple[str, ...], int]) -> None:
    """Playbooks and inventories the plan names must exist: say which, and where."""
    m = plan.model
    for name, env in m.environments.items():
        if not plan.resolve(env.inventory).exists():
            line = lines.get(("environments", name, "inventory"), 0)
            raise PlanError(
                f"{plan.path}:{line} environments.{name}.inventory: {env.inventory} "
                "does not exist (point it at an inventory file or directory)"
            )
    for name, sc in m.scenarios.items():
        for i, ph in enumerate(sc.phases):
            if not plan.resolve(ph.playbook).is_file():
                line = lines.get(("scenarios", name, "phases", str(i), "playbook"), 0)
                raise PlanError(
                    f"{plan.path}:{line} scenarios.{name}.phases.{i}.playbook: {ph.playbook} "
                    "does not exist (create it or fix the path; paths are relative to the plan)"
                )
        for key in ("rollback", "holds"):
            value = getattr(sc, key)
            if value and not plan.resolve(value).is_file():
                line = lines.get(("scenarios", name, key), 0)
                raise PlanError(
                    f"{plan.path}:{line} scenarios.{name}.{key}: {value} does not exist"
                )


def load_flow_pack(path: Path) -> FlowPackModel:
    """Read and validate a flow pack file; a bad one is one PlanError line (file:line field)."""
    from drkit.files import read_regular

    if not path.is_file():
        raise PlanError(f"{path}: flow pack not found (point environments.NAME.flows at a "
                        "file like flows/payments-lab.yml)")
    raw = read_regular(path, limit=MAX_PLAN_BYTES, what="flow pack")
    try:
        data, lines = _load_with_lines(raw.decode("utf-8"), str(path))
    except UnicodeDecodeError as e:
        raise PlanError(f"{path}: is not UTF-8 text (byte {e.start})") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise PlanError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML: "
                        f"{e.problem or e.context}") from None
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as e:
        raise PlanError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise PlanError(f"{path}:1: a flow pack is a mapping (name:, flows:, canary:)")
    _check_data(data, lines, path)
    try:
        return FlowPackModel.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(str(x) for x in err.get("loc", ()))
        line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), 0)
        where = f"{path}:{line}" if line else str(path)
        raise PlanError(f"{where} {'.'.join(loc) or '(top level)'}: {_describe(err)}") from None


def _check_flow_packs(plan: Plan, lines: dict[tuple[str, ...], int]) -> None:
    """Each environment's flow pack is valid, defines every ${variable} it uses, and has the
    flows the services name."""
    for env_name, env in plan.model.environments.items():
        path = plan.flow_pack_path(env_name)
        if path is None:
            continue
        if not path.is_file():
            line = lines.get(("environments", env_name, "flows"), 0)
            raise PlanError(f"{plan.path}:{line} environments.{env_name}.flows: {path} does "
                            "not exist (a flow pack file, relative to the plan)")
        pack = load_flow_pack(path)
        extra = tuple(env.flow_vars)
        if problem := pack.undefined(extra):
            raise PlanError(f"{path}: {problem}")
        for svc_name, svc in plan.model.services.items():
            for i, flow in enumerate(svc.smoke):
                if flow not in pack.flows:
                    line = lines.get(("services", svc_name, "smoke", str(i)),
                                     lines.get(("services", svc_name, "smoke"), 0))
                    raise PlanError(
                        f"{plan.path}:{line} services.{svc_name}.smoke: unknown smoke flow "
                        f"{flow!r} in environment {env_name}'s pack {path.name} (it defines: "
                        f"{', '.join(pack.flows)})")


def json_schema() -> dict[str, Any]:
    schema = PlanModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "drkit plan (drkit.yml)"
    return schema


@dataclass(frozen=True)
class LabConfig:
    """The lab's resolved settings: plan values, overridden by DRKIT_LAB_* variables."""

    state_dir: Path
    port_base: int
    instances: int
    replication: str
    os_user: str
    hostname: str
    cert_validity_days: int
    primary_region: str
    secondary_region: str
    topology: str = "local"  # drkit.lab.netns.Topology (auto is resolved here)
    netns_cidr: str = "10.213.0.0/24"
    topology_reason: str = ""  # why this topology (lab status shows it)

    @property
    def ports(self) -> dict[str, int]:
        b = self.port_base
        ports = {"moto": b, "https": b + 1, "pg_primary": b + 2, "pg_secondary": b + 3,
                 "stats": b + 4}
        for i in range(1, self.instances + 1):
            ports[f"api_primary_{i}"] = b + 10 + i
            ports[f"api_secondary_{i}"] = b + 30 + i
        return ports


def lab_config(plan: Plan) -> LabConfig:
    s = plan.model.lab
    env = os.environ
    try:
        port_base = int(env.get("DRKIT_LAB_PORT_BASE", s.port_base))
        instances = int(env.get("DRKIT_LAB_INSTANCES", s.instances))
    except ValueError as e:
        raise PlanError(f"DRKIT_LAB_PORT_BASE/DRKIT_LAB_INSTANCES: not a number: {e}") from None
    if not 1024 <= port_base <= 65000:
        raise PlanError(f"lab port base {port_base} is out of range (use 1024-65000)")
    if not 1 <= instances <= 9:  # the port layout holds 9 per region; status probes each
        raise PlanError(f"lab instances {instances} is out of range (use 1-9; "
                        "DRKIT_LAB_INSTANCES or lab.instances)")
    from drkit.files import check_path

    state_dir = check_path(env.get("DRKIT_LAB_DIR", s.state_dir), "lab state dir")
    replication = env.get("DRKIT_LAB_REPLICATION", s.replication)
    if replication not in ("sync", "async"):
        raise PlanError(f"DRKIT_LAB_REPLICATION={replication!r}: use sync or async")
    topology = env.get("DRKIT_LAB_TOPOLOGY", s.topology)
    if topology not in ("auto", "local", "namespaces"):
        raise PlanError(f"DRKIT_LAB_TOPOLOGY={topology!r}: use auto, local or namespaces")
    from drkit.lab.netns import check_cidr, resolve

    topology, topology_reason = resolve(
        topology, "DRKIT_LAB_TOPOLOGY" if "DRKIT_LAB_TOPOLOGY" in env else "lab.topology",
        state_dir.resolve())

    try:
        netns_cidr = check_cidr(env.get("DRKIT_LAB_NETNS_CIDR", s.netns_cidr))
    except ValueError as e:
        raise PlanError(f"DRKIT_LAB_NETNS_CIDR: {e}") from None
    return LabConfig(
        state_dir=state_dir.resolve(),
        port_base=port_base,
        instances=instances,
        replication=replication,
        os_user=s.os_user,
        hostname=s.hostname,
        cert_validity_days=max(1, int(parse_duration(s.cert_validity) // 86400)),
        primary_region=plan.model.regions.primary,
        secondary_region=plan.model.regions.secondary,
        topology=topology,
        netns_cidr=netns_cidr,
        topology_reason=topology_reason,
    )
