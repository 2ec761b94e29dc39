"""Where drkit's own Ansible content lives: the drkit.dr collection, installed with drkit.

The collection ships inside the drkit distribution (pyproject.toml), so it is found as a Python
package wherever drkit is installed: ansible-core finds it by scanning sys.path for
ansible_collections/, and drkit's engine also names the checkout's collections/ folder.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

COLLECTION = "drkit.dr"


@cache
def collection_dir() -> Path:
    """The folder of the drkit.dr collection (its galaxy.yml, plugins/ and roles)."""
    spec = importlib.util.find_spec("ansible_collections.drkit.dr")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - ships with drkit
        raise ImportError("drkit's collection drkit.dr is not installed; run scripts/install")
    return Path(next(iter(spec.submodule_search_locations))).resolve()
