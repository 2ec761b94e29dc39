"""Evidence stores: where records, artifacts and the index live.

Layout (the same keys in a local directory and under an S3 prefix):

    records/<seq:08d>-<id>.json   sealed records, immutable (local: mode 0600; S3: Object Lock)
    artifacts/<id>/<name>         a record's artifacts, redacted, immutable
    index.jsonl                   one summary line per sealed record (a cache for `list`)
    open/<id>.json                records of runs in progress (outside the chain)
    .lock                         local only: the fcntl lock that serialises sealing

A store never reads or writes outside its root: every key is checked component by component,
symlinks are refused (O_NOFOLLOW), and ids and artifact names with separators or `..` are
rejected before they become keys.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import os
import re
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from drkit import files
from drkit.errors import BadInput, RunFailed
from drkit.files import atomic_write

MAX_RECORD_BYTES = 8 * 1024 * 1024  # a record is a few KiB; anything this big is hostile
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}\Z")  # \Z: `$` lets a final newline in
RECORD_FILE = re.compile(r"^(\d{8,})-([A-Za-z0-9][A-Za-z0-9._-]{0,127})\.json\Z")


SMALL_FILE = 1024 * 1024


def _read_all(fd: int, size_hint: int) -> bytes:
    """Everything from fd (the file may have grown or shrunk since fstat)."""
    want = max(size_hint, 0) + 1
    first = os.read(fd, want)
    if len(first) < want:  # a short read of a regular file is its end: no second syscall
        return first
    chunks = [first]
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


class FileProblem(RunFailed):
    """A store file that cannot be trusted as it is: missing, a symlink, not a file, too big.

    verify catches it and reports an issue; anywhere else it reaches the CLI as a RunFailed
    (one line, exit 3), e.g. `evidence show` on a store whose records/ is a symlink.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class AlreadyExists(RunFailed):
    """An immutable key is taken (another writer sealed that sequence number first)."""


def safe_name(name: str, what: str = "name") -> str:
    """An id or artifact name that is one path component: no separators, no `..`, no dotfile."""
    if not isinstance(name, str) or not _PART.match(name) or ".." in name:
        raise BadInput(f"invalid evidence {what} {name!r} (use letters, digits, '.', '_', '-', "
                       "'+'; no '/', no '..', not starting with '.')")
    return name


def check_key(key: str) -> str:
    parts = key.split("/")
    for p in parts:
        if not _PART.match(p) or ".." in p:
            if p in ("index.jsonl",) or (len(parts) == 1 and p == ".lock"):
                continue
            raise BadInput(f"invalid store key {key!r}")
    return key


def record_key(seq: int, rid: str) -> str:
    return f"records/{seq:08d}-{rid}.json"


def _open_regular(path: str, key: str, *,
                  dir_fd: int | None = None) -> tuple[int, os.stat_result]:
    """Open an evidence file for reading, never through a link, and only a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        raise FileProblem(key, "missing") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileProblem(key, "is a symlink (evidence files must be regular files "
                              "inside the store)") from None
        raise FileProblem(key, f"cannot be read: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileProblem(key, "is not a regular file")
    return fd, st


class Store(ABC):
    """The small interface the ledger needs; LocalStore and S3Store implement it."""

    url: str
    retention_s: float | None = None

    @abstractmethod
    def read(self, key: str, *, limit: int | None = MAX_RECORD_BYTES) -> bytes:
        """The bytes at key; raises FileProblem (missing, symlink, not a file, too large)."""

    @abstractmethod
    def write(self, key: str, data: bytes, *, immutable: bool = True) -> None:
        """Store data at key. Immutable keys are never overwritten (and WORM-locked on S3)."""

    @abstractmethod
    def delete_open(self, key: str) -> None:
        """Remove a key under open/ (the only thing a store ever deletes)."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Names directly under a folder key (records, open, artifacts/<id>)."""

    @abstractmethod
    def append_index(self, data: bytes) -> None:
        """Append lines to index.jsonl."""

    @abstractmethod
    def lock(self) -> AbstractContextManager[None]:
        """Exclusive lock held while a record is sealed (sequence number + prev_hash)."""

    def digest(self, key: str) -> tuple[str, int]:
        """SHA-256 hex and size of the object at key."""
        data = self.read(key, limit=None)
        return hashlib.sha256(data).hexdigest(), len(data)

    def describe(self) -> str:
        return self.url

    # builtins.list: in this class body `list` already names the method above.
    def digest_many(
        self, folder: str, names: builtins.list[str]
    ) -> builtins.list[tuple[str, int] | FileProblem]:
        """digest() of several files of one folder: (sha256, size), or the problem."""
        out: list[tuple[str, int] | FileProblem] = []
        for n in names:
            try:
                out.append(self.digest(f"{folder}/{n}"))
            except FileProblem as e:
                out.append(e)
        return out

    def digest_folder(self, folder: str, names: builtins.list[str]
                      ) -> tuple[builtins.list[tuple[str, int] | FileProblem], builtins.list[str]]:
        """digest_many() of the names, and every name the folder holds (planted files too).
        Raises FileProblem when the folder itself is missing or not a real folder."""
        try:
            present = self.list(folder)
        except FileProblem:
            raise
        if not present and names:
            raise FileProblem(folder, "missing")
        return self.digest_many(folder, names), present

    @contextmanager
    def reader(self, folder: str) -> Iterator[Callable[[str], bytes]]:
        """A function name -> bytes for the files of one folder (read(), limit included)."""
        yield lambda name: self.read(f"{folder}/{name}")

    def refresh(self) -> None:  # noqa: B027 - optional hook: most stores cache nothing
        """Forget anything cached about the store's files (before verifying it)."""

    def list_folders(self, prefix: str) -> set[str]:
        """Names of the folders directly under a folder key (artifacts/<id>)."""
        return set(self.list(prefix))

    def top_level(self) -> set[str]:
        """Names (files and folders) at the store's root."""
        return set()


class LocalStore(Store):
    def __init__(self, root: Path, *, retention_s: float | None = None) -> None:
        self.root = Path(os.path.abspath(root))
        self.url = str(self.root)
        self.retention_s = retention_s
        self._dirs_ok: set[str] = set()

    def refresh(self) -> None:
        self._dirs_ok.clear()

    # -- safety: every folder between the root and a file must be a real folder, no symlink
    def _dir(self, rel: str, *, create: bool = False) -> str:
        full = os.path.join(self.root, rel) if rel else str(self.root)
        if rel in self._dirs_ok and not create:  # writes always re-check: they must not escape
            return full
        parent, _, last = rel.rpartition("/")
        if rel and (parent in self._dirs_ok) and not create:
            todo = [(full, last)]  # the parent was checked: only the last step is new
        else:
            todo, path = [(str(self.root), "")], str(self.root)
            for part in rel.split("/") if rel else []:
                path = os.path.join(path, part)
                todo.append((path, part))
        for path, _part in todo:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    raise FileProblem(rel or ".", "missing") from None
                os.makedirs(path, mode=0o700, exist_ok=True)
                st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                raise FileProblem(rel or ".", f"{path} is a symlink (evidence folders must be "
                                  "real folders inside the store)")
            if not stat.S_ISDIR(st.st_mode):
                raise FileProblem(rel or ".", f"{path} is not a folder")
        self._dirs_ok.add(rel)
        if parent or rel:
            self._dirs_ok.add(parent)
        return full

    def _open(self, key: str) -> tuple[int, os.stat_result]:
        check_key(key)
        folder, _, _name = key.rpartition("/")
        return _open_regular(os.path.join(self._dir(folder), _name), key)

    def read(self, key: str, *, limit: int | None = MAX_RECORD_BYTES) -> bytes:
        fd, st = self._open(key)
        try:
            if limit is not None and st.st_size > limit:
                raise FileProblem(key, f"is {st.st_size} bytes, more than a record can be "
                                  f"({limit})")
            return _read_all(fd, st.st_size)
        finally:
            os.close(fd)

    def digest(self, key: str) -> tuple[str, int]:
        fd, st = self._open(key)
        try:
            if st.st_size <= SMALL_FILE:  # one read, no buffered-file overhead (verify's hot path)
                data = _read_all(fd, st.st_size)
                return hashlib.sha256(data).hexdigest(), len(data)
            with os.fdopen(fd, "rb", closefd=False) as f:
                h = hashlib.file_digest(f, "sha256")
                return h.hexdigest(), f.tell()
        finally:
            os.close(fd)

    # -- verify's hot path: one checked folder descriptor, then openat() per file: no path
    # resolution per file, and nothing can swap a folder for a symlink half way.
    def _open_dir(self, rel: str) -> int:
        full = self._dir(rel)
        try:
            return os.open(full, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise FileProblem(rel, f"cannot be opened: {e.strerror}") from None

    def _open_at(self, dfd: int, name: str, key: str) -> tuple[int, os.stat_result]:
        if not _PART.match(name) or ".." in name:
            raise FileProblem(key, "is not a valid evidence file name")
        return _open_regular(name, key, dir_fd=dfd)

    def digest_many(self, folder: str, names: list[str]) -> list[tuple[str, int] | FileProblem]:
        try:
            dfd = self._open_dir(folder)
        except FileProblem as e:
            return [FileProblem(f"{folder}/{n}", e.reason) for n in names]
        out: list[tuple[str, int] | FileProblem] = []
        try:
            for n in names:
                key = f"{folder}/{n}"
                try:
                    fd, st = self._open_at(dfd, n, key)
                except FileProblem as e:
                    out.append(e)
                    continue
                try:
                    if st.st_size <= SMALL_FILE:
                        data = _read_all(fd, st.st_size)
                        out.append((hashlib.sha256(data).hexdigest(), len(data)))
                    else:
                        with os.fdopen(fd, "rb", closefd=False) as f:
                            out.append((hashlib.file_digest(f, "sha256").hexdigest(), f.tell()))
                finally:
                    os.close(fd)
        finally:
            os.close(dfd)
        return out

    def digest_folder(self, folder: str, names: list[str]
                      ) -> tuple[list[tuple[str, int] | FileProblem], list[str]]:
        # One folder descriptor: listed through it (planted files) and files opened under it.
        dfd = self._open_dir(folder)
        try:
            present = os.listdir(dfd)
            out: list[tuple[str, int] | FileProblem] = []
            for n in names:
                key = f"{folder}/{n}"
                try:
                    fd, st = self._open_at(dfd, n, key)
                except FileProblem as e:
                    out.append(e)
                    continue
                try:
                    if st.st_size <= SMALL_FILE:
                        data = _read_all(fd, st.st_size)
                        out.append((hashlib.sha256(data).hexdigest(), len(data)))
                    else:
                        with os.fdopen(fd, "rb", closefd=False) as f:
                            out.append((hashlib.file_digest(f, "sha256").hexdigest(), f.tell()))
                finally:
                    os.close(fd)
            return out, present
        finally:
            os.close(dfd)

    @contextmanager
    def reader(self, folder: str) -> Iterator[Callable[[str], bytes]]:
        dfd = self._open_dir(folder)

        def read(name: str) -> bytes:
            key = f"{folder}/{name}"
            fd, st = self._open_at(dfd, name, key)
            try:
                if st.st_size > MAX_RECORD_BYTES:
                    raise FileProblem(key, f"is {st.st_size} bytes, more than a record can be "
                                      f"({MAX_RECORD_BYTES})")
                return _read_all(fd, st.st_size)
            finally:
                os.close(fd)

        try:
            yield read
        finally:
            os.close(dfd)

    def write(self, key: str, data: bytes, *, immutable: bool = True) -> None:
        check_key(key)
        folder, _, name = key.rpartition("/")
        try:
            path = Path(self._dir(folder, create=True)) / name
        except OSError as e:
            raise RunFailed(f"evidence store {self.root}: cannot create {folder or 'it'}: "
                            f"{e.strerror}") from e
        except FileProblem as e:
            raise RunFailed(f"evidence store {self.root}: {e}") from None
        if immutable and (path.exists() or path.is_symlink()):
            raise AlreadyExists(f"evidence store {self.root}: {key} already exists and evidence is "
                            "never overwritten")
        try:
            atomic_write(path, data, mode=0o600)
        except OSError as e:
            raise RunFailed(f"evidence store {self.root}: cannot write {key}: {e.strerror}") from e

    def delete_open(self, key: str) -> None:
        if not key.startswith("open/"):
            raise RunFailed(f"evidence store: refusing to delete {key} (only open records go)")
        check_key(key)
        try:
            os.unlink(os.path.join(self._dir("open"), key.removeprefix("open/")))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        try:
            return os.listdir(self._dir(prefix))
        except FileProblem as e:
            if e.reason == "missing":
                return []
            raise

    def list_folders(self, prefix: str) -> set[str]:
        return {n for n in self.list(prefix) if not n.startswith(".")}

    def top_level(self) -> set[str]:
        try:
            return set(os.listdir(self._dir("")))
        except FileProblem as e:
            if e.reason == "missing":
                return set()
            raise

    def append_index(self, data: bytes) -> None:
        try:
            fd = os.open(os.path.join(self._dir("", create=True), "index.jsonl"),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise RunFailed(f"evidence store {self.root}: cannot append to index.jsonl: "
                            f"{e.strerror}") from e

    @contextmanager
    def lock(self) -> Iterator[None]:
        held = ExitStack()
        try:
            held.enter_context(files.locked(os.path.join(self._dir("", create=True), ".lock")))
        except OSError as e:
            raise RunFailed(f"evidence store {self.root}: cannot lock it: {e.strerror} (is it "
                            "read-only?)") from e
        with held:
            yield
