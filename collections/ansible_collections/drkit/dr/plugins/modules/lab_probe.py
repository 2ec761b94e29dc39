#!/usr/bin/python
"""drkit.dr.lab_probe: what of the lab already runs, in one read-only task.

Why custom: the lab's own health (pid files, ports, moto, HAProxy) in one read-only task;
nothing generic knows the lab.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: lab_probe
short_description: Probe every component of the drkit lab at once (read-only)
description:
  - Reports, for the lab's state directory and ports, which components exist and run, so the
    lab's playbook can skip whole units that are already in place (a second C(drkit lab up) on
    a running lab must finish in seconds; each Ansible task costs about 0.3 s).
  - The control plane (moto) is asked for the CloudFormation stacks and the Route53 records
    (plain HTTP, since importing boto3 would cost more than the calls).
  - Never changes anything; runs in check mode.
options:
  state_dir: {description: The lab's state directory., type: path, required: true}
  ports: {description: The lab's ports (drkit_lab_ports)., type: dict, required: true}
  instances: {description: Payments API instances per region., type: int, required: true}
  primary_region: {description: Primary region., type: str, required: true}
  secondary_region: {description: Secondary region., type: str, required: true}
  hostname: {description: The payments DNS name., type: str, required: true}
  zone: {description: The Route53 zone holding O(hostname)., type: str, required: true}
  stack_name: {description: The regional CloudFormation stack's name., type: str, required: true}
  template: {description: The regional stack's template file., type: path, required: true}
  aws_endpoint_url: {description: The moto server's URL., type: str, required: true}
  min_cert_days: {description: The entry certificate must be valid this many more days., type: int,
    default: 1}
  haproxy_template:
    description: The HAProxy configuration's template (to tell whether haproxy.cfg is current).
    type: path
  parts:
    description: What to probe; C(aws) asks moto, C(services) the rest. Keys of parts not probed
      are returned as false.
    type: list
    elements: str
    choices: [aws, services]
    default: [aws, services]
author: drkit maintainers (@drkit)
"""

EXAMPLES = r"""
- name: Probe what of the lab is already up
  drkit.dr.lab_probe:
    state_dir: "{{ drkit_lab_state_dir }}"
    ports: "{{ drkit_lab_ports }}"
    instances: "{{ drkit_lab_instances }}"
    primary_region: "{{ drkit_lab_primary_region }}"
    secondary_region: "{{ drkit_lab_secondary_region }}"
    hostname: "{{ drkit_lab_hostname }}"
    zone: "{{ drkit_lab_zone }}"
    stack_name: "{{ drkit_stack_name }}"
    template: "{{ drkit_stack_template }}"
    aws_endpoint_url: "{{ drkit_aws_endpoint_url }}"
  register: drkit_lab_now
"""

RETURN = r"""
layout: {description: The state directory's sub-directories exist., returned: always, type: bool}
moto: {description: The moto server runs., returned: always, type: bool}
aws: {description: Both stacks are complete with the current template and the Route53 failover
  records exist., returned: always, type: bool}
aws_detail: {description: What is missing in the control plane., returned: always, type: str}
pg: {description: "{primary: {running, initialized, in_recovery}, secondary: {running,
  initialized, in_recovery, streaming}}", returned: always, type: dict}
db_ready: {description: "The app role, database and schema exist and the standby streams.",
  returned: always, type: bool}
tls: {description: "CA and entry certificate exist, match and are valid.", returned: always,
  type: bool}
map: {description: The active-region map file exists., returned: always, type: bool}
haproxy: {description: HAProxy runs., returned: always, type: bool}
haproxy_cfg: {description: haproxy.cfg is rendered from the current template for these ports.,
  returned: always, type: bool}
services: {description: "{name: running} for every payments instance.", returned: always,
  type: dict}
all_up: {description: Everything above is in place., returned: always, type: bool}
"""

import os
from datetime import UTC

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.daemonutil import current_pid
from ansible_collections.drkit.dr.plugins.module_utils.pgutil import (
    PgError,
    is_initialized,
    postmaster_pid,
    query,
    standby_signal,
)
from ansible_collections.drkit.dr.plugins.module_utils.runtime import (
    MotoError,
    moto_call,
    port_open,
)

LAYOUT = ("aws", "ca", "tls", "secrets", "pg", "services", "haproxy", "moto", "runs")


def daemon_running(pidfile):
    return current_pid(pidfile) is not None


def probe_pg(state_dir, region, port, want_standby):
    pgdata = os.path.join(state_dir, "pg", region, "data")
    pid = postmaster_pid(pgdata)
    res = {"running": pid is not None, "initialized": is_initialized(pgdata),
           "in_recovery": standby_signal(pgdata) if pid else None, "streaming": False}
    if pid and want_standby and res["in_recovery"]:
        try:
            rows = query(port, "SELECT status FROM pg_stat_wal_receiver", timeout=2)
            res["streaming"] = bool(rows) and rows[0]["status"] == "streaming"
        except PgError:
            pass
    return res


def probe_db(port):
    """The payments role and database exist and hold a schema."""
    try:
        rows = query(port, "SELECT 1 FROM pg_roles WHERE rolname IN ('payments', 'replication')",
                     timeout=2)
        if len(rows) != 2:
            return False
        rows = query(port, "SELECT count(*) AS n FROM pg_tables WHERE tableowner = 'payments'",
                     dbname="payments", timeout=2)
        return rows[0]["n"] > 0
    except PgError:
        return False
    except Exception:
        return False


def probe_tls(state_dir, hostname, min_days):
    """CA and entry certificate exist, chain, cover the lab's names and are valid long enough."""
    from datetime import datetime, timedelta

    try:
        from cryptography import x509
    except ImportError:
        return False
    paths = {n: os.path.join(state_dir, *n.split("/")) for n in
             ("ca/ca.crt", "ca/ca.key", "tls/entry.pem", "tls/entry.pem.key")}
    if not all(os.path.isfile(p) for p in paths.values()):
        return False
    try:
        with open(paths["ca/ca.crt"], "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        with open(paths["tls/entry.pem"], "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        now = datetime.now(UTC)
        if cert.not_valid_after_utc < now + timedelta(days=min_days):
            return False
        if cert.issuer != ca.subject or ca.not_valid_after_utc < now:
            return False
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = set(san.get_values_for_type(x509.DNSName))
        ips = set(str(i) for i in san.get_values_for_type(x509.IPAddress))
        return hostname in names and "localhost" in names and "127.0.0.1" in ips
    except Exception:
        return False


def probe_haproxy_cfg(p, template):
    """haproxy.cfg was rendered from the current template, for these ports and instances.

    Rendering it again costs a task (about a second on a busy 2-core box): a second `lab up`
    checks the file instead. The template's hash is in the file's header.
    """
    import hashlib

    sd, ports = p["state_dir"], p["ports"]
    try:
        with open(template, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        with open(os.path.join(sd, "haproxy", "haproxy.cfg"), encoding="utf-8") as f:
            cfg = f.read()
    except OSError:
        return False
    lines = set(line.strip() for line in cfg.splitlines())
    wanted = ["# drkit-template-sha256: %s" % digest,
              "bind 127.0.0.1:%s ssl crt %s/tls/entry.pem alpn http/1.1" % (ports["https"], sd),
              "bind unix@%s/haproxy/stats.sock mode 600" % sd]
    servers = 0
    for role, region in (("primary", p["primary_region"]), ("secondary", p["secondary_region"])):
        for i in range(1, p["instances"] + 1):
            wanted.append("server %s-%d 127.0.0.1:%s check"
                          % (region, i, ports["api_%s_%d" % (role, i)]))
    servers = sum(1 for line in lines if line.startswith("server "))
    return all(w in lines for w in wanted) and servers == 2 * p["instances"] and \
        ("%s/haproxy/active.map" % sd) in cfg


def probe_aws(p):
    """Both stacks complete with the current template, and the failover records exist."""
    ep = p["aws_endpoint_url"]
    try:
        with open(p["template"], encoding="utf-8") as f:
            template = f.read()
    except OSError as e:
        return False, "template %s: %s" % (p["template"], e.strerror)
    try:
        for region in (p["primary_region"], p["secondary_region"]):
            stack = moto_call(ep, "cloudformation", region, form={
                "Action": "DescribeStacks", "Version": "2010-05-15",
                "StackName": p["stack_name"]})
            status = stack.findtext(".//StackStatus")
            if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
                return False, "stack %s in %s is %s" % (p["stack_name"], region,
                                                        status or "missing")
            body = moto_call(ep, "cloudformation", region, form={
                "Action": "GetTemplate", "Version": "2010-05-15",
                "StackName": p["stack_name"]}).findtext(".//TemplateBody") or ""
            if body.strip() != template.strip():
                return False, "stack %s in %s has an older template" % (p["stack_name"], region)
        zones = moto_call(ep, "route53", "us-east-1",
                          "/2013-04-01/hostedzonesbyname?dnsname=%s" % p["zone"])
        zone_id = None
        for z in zones.iter("HostedZone"):
            if (z.findtext("Name") or "").rstrip(".") == p["zone"]:
                zone_id = (z.findtext("Id") or "").rsplit("/", 1)[-1]
        if not zone_id:
            return False, "zone %s missing" % p["zone"]
        rrs = moto_call(ep, "route53", "us-east-1", "/2013-04-01/hostedzone/%s/rrset" % zone_id)
        failover = set(r.findtext("Failover") for r in rrs.iter("ResourceRecordSet")
                       if (r.findtext("Name") or "").rstrip(".") == p["hostname"]
                       and r.findtext("Failover"))
        if failover != {"PRIMARY", "SECONDARY"}:
            return False, "failover records for %s missing" % p["hostname"]
        if not os.path.isfile(os.path.join(p["state_dir"], "aws", "outputs.json")):
            return False, "stack outputs not saved"
    except MotoError as e:
        return False, str(e)
    return True, ""


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state_dir=dict(type="path", required=True),
            ports=dict(type="dict", required=True),
            instances=dict(type="int", required=True),
            primary_region=dict(type="str", required=True),
            secondary_region=dict(type="str", required=True),
            hostname=dict(type="str", required=True),
            zone=dict(type="str", required=True),
            stack_name=dict(type="str", required=True),
            template=dict(type="path", required=True),
            aws_endpoint_url=dict(type="str", required=True),
            min_cert_days=dict(type="int", default=1),
            haproxy_template=dict(type="path"),
            parts=dict(type="list", elements="str", choices=["aws", "services"],
                       default=["aws", "services"]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    sd, ports = p["state_dir"], p["ports"]
    r = dict(layout=False, moto=False, aws=False, aws_detail="not probed", pg={},
             db_ready=False, tls=False, map=False, haproxy=False, haproxy_cfg=False,
             services={})
    r["layout"] = all(os.path.isdir(os.path.join(sd, d)) for d in LAYOUT)
    if "aws" in p["parts"]:
        r["moto"] = (daemon_running(os.path.join(sd, "moto", "moto.pid"))
                     and port_open(ports["moto"]))
        r["aws"], r["aws_detail"] = probe_aws(p) if r["moto"] else (False, "moto is not running")
    if "services" in p["parts"]:
        primary = probe_pg(sd, p["primary_region"], ports["pg_primary"], False)
        secondary = probe_pg(sd, p["secondary_region"], ports["pg_secondary"], True)
        r["pg"] = {"primary": primary, "secondary": secondary}
        dsn_ok = all(
            os.path.isfile(os.path.join(sd, "services", "%s.dsn" % reg))
            for reg in (p["primary_region"], p["secondary_region"]))
        r["db_ready"] = bool(
            primary["running"] and not primary["in_recovery"] and secondary["streaming"]
            and dsn_ok and probe_db(ports["pg_primary"]))
        r["tls"] = probe_tls(sd, p["hostname"], p["min_cert_days"])
        r["map"] = os.path.isfile(os.path.join(sd, "haproxy", "active.map"))
        r["haproxy"] = daemon_running(os.path.join(sd, "haproxy", "haproxy.pid"))
        if p["haproxy_template"]:
            r["haproxy_cfg"] = probe_haproxy_cfg(p, p["haproxy_template"])
        for region in (p["primary_region"], p["secondary_region"]):
            for i in range(1, p["instances"] + 1):
                name = "%s-%d" % (region, i)
                r["services"][name] = daemon_running(
                    os.path.join(sd, "services", name + ".pid"))
    r["all_up"] = bool(r["layout"] and r["moto"] and r["aws"] and r["db_ready"] and r["tls"]
                       and r["map"] and r["haproxy"] and r["services"]
                       and all(r["services"].values()))
    module.exit_json(changed=False, **r)


if __name__ == "__main__":
    main()
