# tests: tests/test_paths.py
"""Where a project's daemon keeps its files.

The CLI, the Python client and the daemon all ask this module, so they agree
on every path without talking to each other. Stdlib only: the CLI imports it
on every call.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: sun_path is 108 bytes on Linux including the terminating NUL (104 on BSD).
SOCKET_PATH_MAX = 107 if os.uname().sysname == "Linux" else 103

SOCKET_ENV = "AIWG_DAEMON_SOCKET"
PROJECT_ENV = "AIWG_PROJECT"


def resolve_project(project: str | os.PathLike[str] | None = None) -> Path:
    """The project root: the given directory, else $AIWG_PROJECT, else the cwd."""
    chosen = project or os.environ.get(PROJECT_ENV) or os.getcwd()
    return Path(os.path.realpath(os.path.expanduser(os.fspath(chosen))))


def project_dir_problem(root: Path, explicit: bool) -> str | None:
    """What every command says of a project that is not a directory (`explicit`:
    named with --project, else taken from $AIWG_PROJECT); None if it is one."""
    if root.is_dir():
        return None
    return f"{'--project' if explicit else '$AIWG_PROJECT'} {root}: not a directory"


def fallback_socket_dirs() -> list[Path]:
    """Short, private directories for sockets whose in-project path is too long:
    $XDG_RUNTIME_DIR/aiwg when set, then /tmp/aiwg-$UID."""
    dirs = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        dirs.append(Path(runtime) / "aiwg")
    dirs.append(Path(f"/tmp/aiwg-{os.getuid()}"))
    return dirs


def _socket_name(root: Path) -> str:
    import hashlib  # only long project paths pay for it

    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]", "-", root.name)[:16] or "root"
    return f"{slug}-{digest}.sock"


def file_identity(path: str | os.PathLike[str], *, follow: bool = True) -> tuple[int, int] | None:
    """(device, inode) of what is at `path` now, or None if nothing is: tells a
    file apart from one deleted and made again under the same name."""
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def is_open_file(fd: int, path: str | os.PathLike[str]) -> bool:
    """Whether `path` still names the file that `fd` has open."""
    held = os.fstat(fd)
    return file_identity(path) == (held.st_dev, held.st_ino)


class ProjectPaths:
    """Every file of one project's daemon, derived from the project root.

    (A plain class, not a dataclass: importing dataclasses costs the CLI ~15 ms.)
    """

    __slots__ = ("root",)

    def __init__(self, root: Path) -> None:
        self.root = root

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProjectPaths) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"ProjectPaths({str(self.root)!r})"

    @classmethod
    def for_project(cls, project: str | os.PathLike[str] | None = None) -> "ProjectPaths":
        return cls(resolve_project(project))

    @property
    def aiwg_dir(self) -> Path:
        return self.root / ".aiwg"

    @property
    def daemon_dir(self) -> Path:
        return self.aiwg_dir / "daemon"

    @property
    def config_file(self) -> Path:
        return self.aiwg_dir / "daemon.json"

    @property
    def pid_file(self) -> Path:
        return self.aiwg_dir / "daemon.pid"

    @property
    def lock_file(self) -> Path:
        return self.daemon_dir / ".lock"

    @property
    def heartbeat_file(self) -> Path:
        return self.daemon_dir / "heartbeat"

    @property
    def state_file(self) -> Path:
        return self.daemon_dir / "state.json"

    @property
    def log_file(self) -> Path:
        return self.daemon_dir / "daemon.log"

    @property
    def actions_dir(self) -> Path:
        return self.daemon_dir / "actions"

    @property
    def events_dir(self) -> Path:
        return self.daemon_dir / "events"

    @property
    def tasks_db(self) -> Path:
        return self.daemon_dir / "tasks.db"

    @property
    def default_socket(self) -> Path:
        return self.daemon_dir / "daemon.sock"

    @property
    def socket_pointer(self) -> Path:
        """Names the real socket when it had to live outside the project."""
        return self.daemon_dir / "daemon.sock.path"

    def bind_socket(self) -> Path:
        """Where the daemon binds: in the project if the path fits, else a short private dir."""
        if len(os.fsencode(self.default_socket)) <= SOCKET_PATH_MAX:
            return self.default_socket
        name = _socket_name(self.root)
        for directory in fallback_socket_dirs():
            candidate = directory / name
            if len(os.fsencode(candidate)) <= SOCKET_PATH_MAX:
                return candidate
        return candidate

    def client_socket(self) -> Path:
        """Where a client connects: $AIWG_DAEMON_SOCKET, else where the daemon binds."""
        override = os.environ.get(SOCKET_ENV)
        if override:
            return Path(override)
        if len(os.fsencode(self.default_socket)) <= SOCKET_PATH_MAX:
            return self.default_socket
        try:
            pointed = self.socket_pointer.read_text().strip()
        except OSError:
            pointed = ""
        return Path(pointed) if pointed else self.bind_socket()
