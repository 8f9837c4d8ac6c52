# tests: tests/e2e/test_lifecycle.py, tests/test_instance.py
"""The single-instance lock: `flock` on .aiwg/daemon/.lock, held for the daemon's life.

The kernel drops an flock when its holder dies, so a `kill -9` never blocks
the next start, and a stale pid file means nothing. Readers ask "is the lock
held, and by which pid?" without trusting the pid file. Stdlib only: the CLI
uses it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from aiwg import procfs
from aiwg.errors import AlreadyRunning
from aiwg.paths import ProjectPaths

#: A probe holds a shared lock for microseconds; a starting daemon retries this
#: long before it concludes that another daemon owns the project.
ACQUIRE_PATIENCE_SECONDS = 0.5


def ensure_dirs(paths: ProjectPaths) -> None:
    """Create .aiwg/daemon (0700) with actions/ and events/ inside."""
    paths.aiwg_dir.mkdir(mode=0o755, exist_ok=True)
    for directory in (paths.daemon_dir, paths.actions_dir, paths.events_dir):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)


def acquire(paths: ProjectPaths, patience: float = ACQUIRE_PATIENCE_SECONDS) -> int:
    """Take the project's lock for this process and record our pid in it.

    Returns the open descriptor, which must stay open for the daemon's life.
    Raises AlreadyRunning naming the holder when another daemon has it.
    """
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
            if time.monotonic() >= deadline:
                pid = _read_pid(fd)
                os.close(fd)
                raise AlreadyRunning(pid) from None
            time.sleep(0.02)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def holds(fd: int, paths: ProjectPaths) -> bool:
    """Whether the lock file on disk is still the one `fd` locks: deleting or
    replacing it would let a second daemon take the project."""
    try:
        on_disk = os.stat(paths.lock_file)
    except OSError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def socket_answers(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket `path`: a
    daemon, even one whose lock file was deleted. A refused or missing socket is
    a dead daemon's, or none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1.0)
    try:
        sock.connect(os.fspath(path))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def refuse_if_answering(paths: ProjectPaths) -> None:
    """Raise AlreadyRunning if a daemon answers on the project's socket, though
    nobody held the lock: its lock file was deleted under it."""
    if socket_answers(paths.bind_socket()):
        pid = read_pid_file(paths)
        raise AlreadyRunning(pid if pid is not None and pid_alive(pid) else None)


def running_pid(paths: ProjectPaths) -> int | None:
    """The pid of this project's daemon (0 if it has not written it yet), or None.
    The lock says so; if the lock file was deleted under a daemon, the pid file
    names it while the socket still answers."""
    pid = holder(paths)
    if pid is not None:
        return pid
    recorded = read_pid_file(paths)
    if recorded is not None and pid_alive(recorded) and socket_answers(paths.bind_socket()):
        return recorded
    return None


def release(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder(paths: ProjectPaths) -> int | None:
    """The pid of the daemon holding this project's lock, or None if nobody holds it.

    Returns 0 when the lock is held but the holder has not written its pid yet.
    """
    try:
        fd = os.open(paths.lock_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _read_pid(fd) or 0
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def read_pid_file(paths: ProjectPaths) -> int | None:
    try:
        return int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; an exited process not yet reaped (a zombie) is not alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = procfs.stat_fields(pid)
    return fields is None or fields[0] != b"Z"
