#!/usr/bin/python
"""Validate a CloudFormation template with a region's control plane (ValidateTemplate).

Why custom: amazon.aws has no ValidateTemplate module; cloudformation's check mode creates a
change set.
"""

from __future__ import annotations

DOCUMENTATION = r"""
module: cfn_validate
short_description: Validate a CloudFormation template against a region's CloudFormation API
description:
  - Calls ValidateTemplate in the given region, proving both that the template is valid and that
    the region's control plane answers. Read-only, so it runs in check mode too.
options:
  template:
    description: Path of the template (YAML or JSON) on the controller.
    type: path
    required: true
  region:
    description: AWS region to ask.
    type: str
    required: true
author: drkit maintainers (@drkit)
extends_documentation_fragment:
  - drkit.dr.aws.endpoint
"""

EXAMPLES = r"""
- name: Validate the regional stack template
  drkit.dr.cfn_validate:
    template: playbooks/templates/regional-stack.yml
    region: eu-central-1
"""

RETURN = r"""
parameters:
  description: The template's parameter names.
  returned: success
  type: list
  elements: str
description:
  description: The template's description.
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "template": {"type": "path", "required": True},
            "region": {"type": "str", "required": True},
            "endpoint_url": {"type": "str"},
        },
        supports_check_mode=True,
    )
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        module.fail_json(msg="boto3 is required on the controller (it comes with drkit)")
    p = module.params
    try:
        with open(p["template"], encoding="utf-8") as f:
            body = f.read()
    except OSError as e:
        module.fail_json(msg=f"cannot read the template {p['template']}: {e}")
    client = boto3.client("cloudformation", region_name=p["region"],
                          endpoint_url=p["endpoint_url"] or None)
    try:
        answer = client.validate_template(TemplateBody=body)
    except botocore.exceptions.ClientError as e:
        module.fail_json(msg=f"template {p['template']} is not valid: {e}")
    except botocore.exceptions.BotoCoreError as e:
        module.fail_json(msg=f"region {p['region']} did not answer: {e}")
    module.exit_json(
        changed=False,
        parameters=[x["ParameterKey"] for x in answer.get("Parameters", [])],
        description=answer.get("Description", ""),
    )


if __name__ == "__main__":
    main()
