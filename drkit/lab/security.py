"""Who may use the lab (issue 16): only the user who runs it.

    PostgreSQL     the superuser and replication connect by peer authentication over a unix
                   socket in pg/run/ (mode 0700, owned by lab.os_user; root enters too); the
                   payments role over TCP with its SCRAM password; nothing else is accepted
                   (inventories/lab/group_vars/all.yml: drkit_lab_pg_hba).
    payments API   every route but /healthz needs `Authorization: Bearer <token>`; the token is
                   secrets/api.token (mode 0600, in a 0700 folder), made by `lab up`, read by the
                   smoke flows, the canary, the load generator and the reconciliation.
    HAProxy        the entry point only; no stats page; the runtime API is a 0600 socket.
    moto           listens on 127.0.0.1 and accepts any request: a known limit of the lab (moto
                   has no authentication). It holds only the lab's emulated AWS state, never
                   real credentials; SECURITY.md says so.

And `lab down` removes only what `lab up` made: the state directory carries MARKER, written by
`lab up`; without it `lab down` stops processes but removes no folder.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drkit.config import LabConfig

MARKER = ".drkit-lab"
TOKEN_BYTES = 32
MAX_TOKEN_FILE = 4096


def pg_socket_dir(cfg: LabConfig) -> Path:
    return cfg.state_dir / "pg" / "run"


def api_token_file(state_dir: Path) -> Path:
    return state_dir / "secrets" / "api.token"


def ensure_api_token(state_dir: Path) -> None:
    """Create secrets/api.token (0600) once; an existing token is kept (services keep it)."""
    path = api_token_file(state_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secrets.token_urlsafe(TOKEN_BYTES) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_api_token(path: Path) -> str:
    """The bearer token in `path`: a regular file that only its owner can read. Raises
    BadInput naming the file (never the token)."""
    from drkit.errors import BadInput
    from drkit.files import read_regular

    data = read_regular(path, limit=MAX_TOKEN_FILE, what="API token file")
    mode = os.stat(path).st_mode
    if stat.S_IMODE(mode) & 0o077:
        raise BadInput(f"API token file {path} is readable by others (mode "
                       f"{stat.S_IMODE(mode):04o}): chmod 600 it")
    token = data.decode("ascii", "replace").strip()
    if not token or any(c.isspace() for c in token):
        raise BadInput(f"API token file {path} holds no token (one line, no spaces)")
    return token


def api_token(state_dir: Path) -> str | None:
    """The lab's token, or None when `lab up` has not made one yet."""
    path = api_token_file(state_dir)
    return read_api_token(path) if path.exists() else None


def write_marker(state_dir: Path) -> None:
    """Mark the state directory as the lab's, so `lab down` may remove what is in it."""
    path = state_dir / MARKER
    if not path.is_file():
        path.write_text("drkit lab state directory: `drkit lab down` removes the folders "
                        "drkit made here\n", encoding="utf-8")


def accepts(cfg: LabConfig) -> dict[str, str]:
    """What each kind of component accepts, for `drkit lab status`."""
    return {
        "postgres": (f"superuser and replication: peer over {pg_socket_dir(cfg)} (0700, "
                     f"{cfg.os_user} and root); payments role: SCRAM password over TCP"),
        "payments": f"bearer token ({api_token_file(cfg.state_dir)}, 0600); /healthz open",
        "haproxy": "TLS entry point only; no stats page; runtime API on a 0600 socket",
        "aws": "anyone on this host (moto has no authentication: a known limit of the lab)",
    }
