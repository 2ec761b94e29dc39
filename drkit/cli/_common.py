"""Shared CLI plumbing: options every command takes, error mapping, output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from drkit.errors import DrkitError

T = TypeVar("T")

def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"drkit: {message}", err=True)
    return typer.Exit(code)


# ---------------------------------------------------------------------------------------------
# File arguments (issue 16): checked when parsed, so a NUL byte, an over-long name, /proc, a
# device or a FIFO gets one line and exit 2 before any command code opens it.


def input_file(what: str) -> Callable[[Any], Any]:
    """A Typer callback for a file to read: refused unless it is (or will be) a regular file.
    A path that does not exist passes (the command says 'not found' in its own words)."""

    def check(value: Any) -> Any:
        if value is None or (isinstance(value, str) and "://" in value):
            return value  # unset, or a URL (s3://...): not a local file
        import os
        import stat

        from drkit.errors import BadInput
        from drkit.files import check_path

        try:
            path = check_path(value, what)
            st = os.stat(path)  # stat, never open: a FIFO must not block here
        except BadInput as e:
            raise fail(str(e), 2) from None
        except (FileNotFoundError, NotADirectoryError):
            return value
        except OSError as e:
            raise fail(f"{what} {value}: cannot use it ({e.strerror})", 2) from None
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) \
                or stat.S_ISSOCK(st.st_mode):
            raise fail(f"{what} {value}: is not a regular file (a FIFO, device or socket)", 2)
        return value

    return check


def input_dir(what: str) -> Callable[[Any], Any]:
    """A Typer callback for a directory (or URL) argument: the path checks only."""

    def check(value: Any) -> Any:
        if value is None or (isinstance(value, str) and "://" in value):
            return value
        from drkit.errors import BadInput
        from drkit.files import check_path

        try:
            check_path(value, what)
        except BadInput as e:
            raise fail(str(e), 2) from None
        return value

    return check


def output_file(what: str, *, stdout: bool = True) -> Callable[[Any], Any]:
    """A Typer callback for a file to write: `-` is stdout (when `stdout`); anything that
    exists must be a regular file (a rename over a FIFO or a device would replace it)."""

    def check(value: Any) -> Any:
        if value is None:
            return value
        if str(value) == "-" and not stdout:
            raise fail(f"{what}: give a file path (this output cannot go to stdout)", 2)
        from drkit.errors import BadInput
        from drkit.files import check_output

        try:
            check_output(value, what)
        except BadInput as e:
            raise fail(str(e), 2) from None
        return value

    return check


PlanOption = Annotated[
    Path | None,
    typer.Option(
        "--plan",
        "-p",
        help="Plan file (default: ./drkit.yml, or $DRKIT_PLAN).",
        show_default=False,
        envvar="DRKIT_PLAN",
        callback=input_file("plan"),
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object for machines.")]


@contextmanager
def errors() -> Iterator[None]:
    """Turn DrkitError into one line on stderr and its exit code; never a traceback."""
    try:
        yield
    except DrkitError as e:
        raise fail(str(e), e.exit_code) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 3) from None


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with errors():
        return fn(*args, **kwargs)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def load_plan(plan: Path | None):  # noqa: ANN201 - returns drkit.config.Plan
    from drkit.config import load_plan as _load

    return call(_load, plan)


def new_app(help: str) -> typer.Typer:
    """A command group as every drkit group is: no completion noise, help on no arguments."""
    # rich_markup_mode=None: plain help; Typer's rich help formatter costs ~0.1 s of imports
    # on every `--help` (issue 19: under 0.15 s).
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode=None,
                       context_settings={"help_option_names": ["-h", "--help"]})


@contextmanager
def cancel_on_signals(cancel: Any) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP (a dropped SSH session) cancel the run (its rollback then
    runs) instead of killing drkit."""
    import signal

    def stop(signum: int, _frame: Any) -> None:
        cancel.cancel(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop)
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class LiveLines:
    """Progress output: on a terminal, lines above a live status line (rich); in a pipe, plain
    lines only. Subclasses call start_live() when the run starts and define _status()."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.tty = out.isatty()
        self._live: Any = None

    def start_live(self) -> None:
        if self.tty and self._live is None:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(file=self.out), refresh_per_second=8,
                              transient=True, get_renderable=self._status)
            self._live.start()

    def stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _status(self) -> Any:
        return ""

    def _line(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, highlight=False, markup=False)
        else:
            self.out.write(text + "\n")
            self.out.flush()
