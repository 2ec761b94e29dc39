"""drkit.dr.route53_failover: point a Route53 failover pair at the active and standby regions.

Issue 19: the flip was four amazon.aws.route53 module runs (two writes, one read back), each a
module start (about 0.4 s on an idle 2-core machine, 2-6 s under load), on the failover, smoke
and failback paths. This action runs on the controller with boto3: one ChangeBatch UPSERTs
both records (the PRIMARY one with `identifier` primary, carrying the health check when one is
given; the SECONDARY one with `identifier` secondary), atomically, then the records are read
back from Route53 (ListResourceRecordSets), so the task's caller checks Route53's own answer,
not what was sent. Records are told by role (identifier), never by region (see conventions).

Options: zone (the hosted zone's name), record (the name), type (default CNAME), ttl (30),
active (value of the PRIMARY record), standby (value of the SECONDARY record), health_check
(id, optional), endpoint_url (optional). Returns changed, zone_id, and `seen`: {primary: value,
secondary: value} as Route53 answers (None when a record is missing). Check mode: reads only.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase


def _dot(name: str) -> str:
    return name if name.endswith(".") else name + "."


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: Any = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec={
            "zone": {"type": "str", "required": True},
            "record": {"type": "str", "required": True},
            "type": {"type": "str", "default": "CNAME"},
            "ttl": {"type": "int", "default": 30},
            "active": {"type": "str", "required": True},
            "standby": {"type": "str", "required": True},
            "health_check": {"type": "str"},
            "endpoint_url": {"type": "str"},
        })
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        kw = {"endpoint_url": args["endpoint_url"]} if args["endpoint_url"] else {}
        try:
            r53 = boto3.client("route53", **kw)
            zone = _dot(args["zone"])
            zones = r53.list_hosted_zones_by_name(DNSName=zone)["HostedZones"]
            zone_id = next((z["Id"].split("/")[-1] for z in zones if z["Name"] == zone), None)
            if zone_id is None:
                result.update(failed=True, msg="no hosted zone %s" % zone)
                return result
            before = self._read(r53, zone_id, args)
            want = {"primary": args["active"], "secondary": args["standby"]}
            changed = any(_dot(before.get(k) or "") != _dot(v) for k, v in want.items())
            if changed and not self._task.check_mode:
                changes = []
                for ident, failover in (("primary", "PRIMARY"), ("secondary", "SECONDARY")):
                    rr: dict[str, Any] = {
                        "Name": args["record"], "Type": args["type"], "TTL": args["ttl"],
                        "SetIdentifier": ident, "Failover": failover,
                        "ResourceRecords": [{"Value": want[ident]}]}
                    if failover == "PRIMARY" and args["health_check"]:
                        rr["HealthCheckId"] = args["health_check"]
                    changes.append({"Action": "UPSERT", "ResourceRecordSet": rr})
                r53.change_resource_record_sets(HostedZoneId=zone_id,
                                                ChangeBatch={"Changes": changes})
            seen = self._read(r53, zone_id, args)
        except (BotoCoreError, ClientError) as e:
            result.update(failed=True, msg="Route53 %s: %s" % (args["record"], e))
            return result
        result.update(changed=changed, zone_id=zone_id, seen=seen)
        return result

    @staticmethod
    def _read(r53: Any, zone_id: str, args: dict[str, Any]) -> dict[str, str | None]:
        """{identifier: value} of the pair, as Route53 lists it now."""
        name = _dot(args["record"]).lower()
        sets = r53.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=name,
                                             StartRecordType=args["type"])["ResourceRecordSets"]
        seen: dict[str, str | None] = {"primary": None, "secondary": None}
        for rr in sets:
            if _dot(rr["Name"]).lower() != name or rr["Type"] != args["type"]:
                continue
            ident = rr.get("SetIdentifier")
            if ident in seen and rr.get("ResourceRecords"):
                seen[ident] = rr["ResourceRecords"][0]["Value"]
        return seen
