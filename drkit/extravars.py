"""Extra vars for Ansible, every string marked `!unsafe` (issue 16).

Ansible templates any string that holds `{{ }}` or `{% %}` when a play uses it, even in check
mode: a plan value, a run id or an `-e KEY=VALUE` from the command line would otherwise run as
Jinja (a lookup('pipe', ...) is a shell). `!unsafe` (AnsibleUnsafeText; "untrusted" in
ansible-core 2.19's data tagging) makes Ansible use the value as it is, never as a template.
ansible-runner writes a dict of extra vars to env/extravars as JSON, which cannot carry the tag,
so the engine writes that file itself, as YAML, with this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml


class _UnsafeDumper(yaml.SafeDumper):
    """Strings as `!unsafe "..."`, mapping keys (variable names) as plain strings."""


def _unsafe_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("!unsafe", value, style='"')


def _plain_key_map(dumper: yaml.SafeDumper, value: Mapping[Any, Any]) -> yaml.Node:
    pairs = [(yaml.SafeDumper.represent_str(dumper, str(k)), dumper.represent_data(v))
             for k, v in value.items()]
    return yaml.MappingNode("tag:yaml.org,2002:map", pairs, flow_style=False)


_UnsafeDumper.add_representer(str, _unsafe_str)
_UnsafeDumper.add_representer(dict, _plain_key_map)


def dump_unsafe(extravars: Mapping[str, Any]) -> str:
    """YAML for `ansible-playbook -e @FILE`: the same values ansible-runner would pass (through
    JSON: tuples become lists, paths strings), each string tagged `!unsafe`."""
    plain = json.loads(json.dumps(dict(extravars), default=str))
    return yaml.dump(plain, Dumper=_UnsafeDumper, allow_unicode=True, sort_keys=False,
                     width=4096)
