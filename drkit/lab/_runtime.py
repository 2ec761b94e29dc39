"""Load the probes the lab's Ansible modules use (playbooks/module_utils) for drkit's own use.

`drkit lab status` must be fast and must agree with the modules on what "running" means (pid
files, zombies, recycled pids, the HAProxy runtime API), so both use the very same files. They
are plain standard-library modules kept under playbooks/module_utils because Ansible ships them
to its modules from there; this loader imports them under their own names.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

CONTENT_ROOT = Path(__file__).resolve().parents[2]
MODULE_UTILS = CONTENT_ROOT / "playbooks" / "module_utils"


def _load(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    path = MODULE_UTILS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with drkit
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


runtime = _load("drkit_runtime")
pgutil = _load("drkit_pgutil")
daemons = _load("drkit_daemonutil")
