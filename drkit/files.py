"""Files that matter are written atomically: a reader, or a crash, sees the old or the new."""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder.

    The temporary name is random (two threads of one process may write side by side), created
    with O_EXCL and O_NOFOLLOW (never through a planted link), and given `mode` with fchmod
    (O_CREAT's mode is filtered by the umask).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextmanager
def locked(path: str | os.PathLike[str], *, wait: bool = True,
           follow: bool = False) -> Iterator[int]:
    """Hold an exclusive flock on the file `path` (created 0600 if missing) for the block;
    yield its descriptor (a lock file may also hold who holds it: drkit.envlock).

    The one lock helper of drkit (issue 13: the registers, the evidence stores, the metrics
    textfile and the environment lock each had a copy). flock excludes separate open() calls
    even inside one process, so threads are covered too; closing the descriptor releases it,
    so a process that dies never leaves it held. `wait=False` raises BlockingIOError at once
    when another holds it. `follow=False` refuses a symlink planted at `path` (O_NOFOLLOW).
    OSError from opening propagates: the caller names the file in its own error."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


# ---------------------------------------------------------------------------------------------
# File arguments (issue 16): every path a user gives is checked before it is opened, and opened
# so that a FIFO, a device or /proc cannot hang drkit, feed it without end, or be replaced.

PATH_MAX = 4096  # Linux's limit on a whole path
NAME_MAX = 255  # and on one component
_SPECIAL_ROOTS = ("/proc", "/sys", "/dev")


def _bad(message: str) -> Exception:
    from drkit.errors import BadInput

    return BadInput(message)


def _shown(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    return text if len(text) <= 80 else f"{text[:60]}...({len(text)} characters)"


def check_path(path: str | os.PathLike[str], what: str) -> Path:
    """`path` as a Path, or BadInput (exit 2) when it cannot name a file drkit should touch:
    a NUL byte, longer than the kernel allows, or under /proc, /sys or /dev."""
    text = os.fspath(path)
    if "\x00" in text:
        shown = _shown(text.replace("\x00", "\\0"))
        raise _bad(f"{what} {shown}: a path cannot hold a NUL byte (give a plain file path)")
    if any(ord(c) < 32 or c == "\x7f" for c in text):
        shown = _shown(text.encode("unicode_escape").decode("ascii"))
        raise _bad(f"{what} {shown}: a path with control characters (a newline, an escape) "
                   "is refused; rename it")
    if len(text.encode("utf-8", "surrogateescape")) >= PATH_MAX:
        raise _bad(f"{what} {_shown(text)}: the path is longer than {PATH_MAX} bytes")
    if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX for part in text.split("/")):
        raise _bad(f"{what} {_shown(text)}: a name in the path is longer than {NAME_MAX} bytes")
    absolute = os.path.abspath(text)
    for root in _SPECIAL_ROOTS:
        if absolute == root or absolute.startswith(root + "/"):
            raise _bad(f"{what} {_shown(text)}: is under {root}, not a regular file (give a "
                       "file on a filesystem)")
    return Path(text)


def read_regular(path: str | os.PathLike[str], *, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; BadInput (exit 2) for anything
    else. O_NONBLOCK: opening a FIFO returns at once (it is then refused by fstat) instead of
    waiting for a writer; the read is bounded even if the size changes while it is read."""
    p = check_path(path, what)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise _bad(f"{what} {_shown(p)} not found") from None
    except OSError as e:
        raise _bad(f"{what} {_shown(p)}: cannot open it ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _bad(f"{what} {_shown(p)}: is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise _bad(f"{what} {_shown(p)}: {st.st_size} bytes is too large (the limit is "
                       f"{limit})")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise _bad(f"{what} {_shown(p)}: more than {limit} bytes (the limit)")
        return b"".join(chunks)
    except OSError as e:
        raise _bad(f"{what} {_shown(p)}: cannot read it ({e.strerror})") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output(path: str | os.PathLike[str], what: str = "output") -> Path | None:
    """Where an output goes: None for `-` (stdout); else a path whose target, if it exists, is
    a regular file (a rename over a FIFO or a device node would replace it, and as root
    `-o /dev/null` would break the host), in an existing directory. BadInput otherwise."""
    text = os.fspath(path)
    if text == "-":
        return None
    p = check_path(text, what)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise _bad(f"{what} {_shown(p)}: cannot use it ({e.strerror})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise _bad(f"{what} {_shown(p)}: is {_kind(st.st_mode)}; drkit writes only regular "
                   "files (use -o - for stdout)")
    return p


def under(parent: Path, *names: str) -> Path:
    """parent/names..., refused (BadInput) unless it stays under `parent`: names from a plan or
    a command line must not climb out with `..` or an absolute path."""
    path = parent.joinpath(*names)
    base = os.path.normpath(os.path.abspath(parent))
    full = os.path.normpath(os.path.abspath(path))
    if full != base and not full.startswith(base.rstrip("/") + "/") or any(
            n in ("", ".", "..") or "/" in n or "\x00" in n for n in names):
        raise _bad(f"{'/'.join(names)!r} would leave {parent} (names cannot hold '/', '..' or "
                   "NUL)")
    return path
