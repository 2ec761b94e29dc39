"""The error hierarchy. Each error carries the exit code the CLI returns for it.

Exit codes: 0 ok, 1 a target or check failed (or tampering found), 2 bad input, 3 could not run.
Messages say what is wrong, where, and how to fix it, in one line.
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """`text` with newlines and other control characters escaped (`\\n`), so a message that
    quotes user input (a plan key, a path, a YAML reader error) stays one line on stderr."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode()
                   for c in text)


class DrkitError(Exception):
    """Base of every error drkit raises on purpose. `exit_code` is what the CLI exits with."""

    exit_code = 3

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        message = one_line(message)
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class BadInput(DrkitError):
    """Usage, plan, inventory or argument errors: the user can fix them (exit 2)."""

    exit_code = 2


class PlanError(BadInput):
    """The plan file (drkit.yml) is missing, unreadable or invalid."""


class CheckFailed(DrkitError):
    """The run completed, but a target or check failed (exit 1)."""

    exit_code = 1


class EnvironmentProblem(DrkitError):
    """The environment is not in a state to run: port in use, binaries missing (exit 3)."""

    exit_code = 3


class RunFailed(DrkitError):
    """A playbook or an operation could not complete (exit 3)."""

    exit_code = 3


class Interrupted(DrkitError):
    """The run was stopped by a signal (exit 3)."""

    exit_code = 3
