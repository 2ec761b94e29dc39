#!/usr/bin/python
"""drkit.dr.alb_listener: read or switch the certificate of a load balancer's listener.

Why a module of our own: amazon.aws.elb_application_lb changes listeners only as part of the
whole load balancer's definition (subnets, security groups, every listener and rule), which a
certificate rotation must not restate; no shipped module calls ModifyListener alone.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: alb_listener
short_description: Read or switch a listener's default certificate, checked by a describe
description:
  - Without O(certificate_arn), describes the listener (a probe; never changes anything).
  - With O(certificate_arn), calls ModifyListener with that certificate as the listener's
    default certificate (nothing else changes), unless it already is; then describes the
    listener again and fails unless the describe names it (drkit issue 14, "describe after
    every act").
options:
  listener_arn:
    description: The listener (HTTPS).
    type: str
    required: true
  certificate_arn:
    description: The certificate (ACM or IAM ARN) to serve; omit to only describe.
    type: str
author: drkit maintainers (@drkit)
extends_documentation_fragment:
  - drkit.dr.aws
"""

EXAMPLES = r"""
- name: Serve the new certificate
  drkit.dr.alb_listener:
    listener_arn: arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/pay/1/2
    region: eu-west-1
    certificate_arn: arn:aws:acm:eu-west-1:123456789012:certificate/0000
"""

RETURN = r"""
before:
  description: The listener's default certificate before the call (empty when none).
  returned: always
  type: str
certificate_arn:
  description: The default certificate as the describe after the call shows it.
  returned: always
  type: str
protocol:
  description: The listener's protocol.
  returned: always
  type: str
port:
  description: The listener's port.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drkit.dr.plugins.module_utils.aws import aws_client, aws_errors


def main():
    module = AnsibleModule(
        argument_spec={
            "listener_arn": {"type": "str", "required": True},
            "region": {"type": "str", "required": True},
            "endpoint_url": {"type": "str"},
            "certificate_arn": {"type": "str"},
        },
        supports_check_mode=True,
    )
    p = module.params
    arn, want = p["listener_arn"], p["certificate_arn"]
    elb = aws_client(module, "elbv2")
    client_error, botocore_error = aws_errors()

    def describe():
        listener = elb.describe_listeners(ListenerArns=[arn])["Listeners"][0]
        certs = listener.get("Certificates") or []
        return listener, (certs[0]["CertificateArn"] if certs else "")

    try:
        listener, before = describe()
        out = {"before": before, "protocol": listener.get("Protocol", ""),
               "port": int(listener.get("Port", 0))}
        if want is None or want == before:
            module.exit_json(changed=False, certificate_arn=before, **out)
        if listener.get("Protocol") != "HTTPS":
            module.fail_json(msg=f"listener {arn} is {listener.get('Protocol')}, not HTTPS: it "
                                 "serves no certificate", certificate_arn=before, **out)
        if module.check_mode:
            module.exit_json(changed=True, certificate_arn=before, **out)
        elb.modify_listener(ListenerArn=arn, Certificates=[{"CertificateArn": want}])
        listener, after = describe()
    except (client_error, *botocore_error) as e:
        module.fail_json(msg=f"listener {arn} in {p['region']}: {e}")
    if after != want:
        module.fail_json(msg=f"listener {arn}: expected certificate {want} after ModifyListener, "
                             f"seen {after or 'none'}", certificate_arn=after, **out)
    module.exit_json(changed=True, certificate_arn=after, **out)


if __name__ == "__main__":
    main()
