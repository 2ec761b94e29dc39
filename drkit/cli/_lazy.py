"""Lazy command groups: `drkit --help` lists them without importing their modules."""

from __future__ import annotations

import importlib
from typing import Any

from typer.core import TyperGroup


class LazyGroup(TyperGroup):
    """A Typer group whose sub-groups (name -> (module, help)) are imported on first use."""

    lazy: dict[str, tuple[str, str]] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.lazy)

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in self.lazy:
            return None
        from typer.main import get_command

        module = importlib.import_module(self.lazy[name][0])
        cmd = get_command(module.app)
        cmd.name = name
        return cmd

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, info[1]) for name, info in self.lazy.items()])
