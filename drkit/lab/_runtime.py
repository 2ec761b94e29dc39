"""The probes the lab's Ansible modules use, imported for drkit's own use.

`drkit lab status` must be fast and must agree with the modules on what "running" means (pid
files, zombies, recycled pids, the HAProxy runtime API), so both use the very same code: the
module_utils of drkit's collection (drkit.dr), which ships inside the drkit package and so
imports as an ordinary module (they are standard library only; psycopg is imported lazily).
"""

from __future__ import annotations

from ansible_collections.drkit.dr.plugins.module_utils import daemonutil as daemons
from ansible_collections.drkit.dr.plugins.module_utils import pgutil, runtime

__all__ = ["daemons", "pgutil", "runtime"]
