"""Options every drkit.dr AWS module documents the same way (one copy, not one a module)."""

from __future__ import annotations


class ModuleDocFragment:
    # drkit.dr.aws: the region to call and the endpoint to call it at.
    DOCUMENTATION = r"""
options:
  region:
    description: Its AWS region.
    type: str
    required: true
  endpoint_url:
    description: Alternative endpoint (an emulated control plane).
    type: str
"""

    # drkit.dr.aws.endpoint: the endpoint only (the module says what its region means).
    ENDPOINT = r"""
options:
  endpoint_url:
    description: Alternative endpoint (an emulated control plane).
    type: str
"""
