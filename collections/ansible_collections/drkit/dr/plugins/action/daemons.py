"""drkit.dr.daemons runs in the controller's worker when its host is reached with the local
connection (issue 19: no interpreter start per task); on any other connection it runs as a
module, unchanged. See plugins/plugin_utils/inprocess.py."""

from __future__ import annotations

from ansible_collections.drkit.dr.plugins.plugin_utils.inprocess import ActionModule

__all__ = ["ActionModule"]
