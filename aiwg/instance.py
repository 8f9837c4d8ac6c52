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
import time

from aiwg import procfs
from aiwg.errors import AlreadyRunning
from aiwg.paths import ProjectPaths, is_open_file

#: A probe holds a shared lock for microseconds; a starting daemon retries this
#: long before it concludes that another daemon owns the project.
ACQUIRE_PATIENCE_SECONDS = 0.5


def ensure_dirs(paths: ProjectPaths) -> None:
    """Create .aiwg/daemon (0700) with actions/ and events/ inside."""
    paths.aiwg_dir.mkdir(mode=0o755, exist_ok=True)
    for directory in (paths.daemon_dir, paths.actions_dir, paths.events_dir):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)


def _lock(fd: int, patience: float) -> bool:
    """Take an exclusive flock on `fd`, retrying for `patience` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def acquire_project(paths: ProjectPaths, patience: float = ACQUIRE_PATIENCE_SECONDS) -> int | None:
    """Lock the project directory itself, which cannot be deleted along with the
    files in .aiwg/: with `.lock` (or all of .aiwg/daemon) removed under a
    running daemon, a second start still finds the project taken.

    Returns the open descriptor, or None where the file system cannot flock a
    directory (NFS emulates flock with write locks): then `.lock` alone guards.
    Raises AlreadyRunning when another process has it; its pid is not known
    here (anything may flock a directory, so the pid file is not trusted).
    """
    fd = os.open(paths.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        locked = _lock(fd, patience)
    except OSError as exc:
        os.close(fd)
        if exc.errno in _CANNOT_LOCK_DIRECTORY:
            return None
        raise
    if not locked:
        os.close(fd)
        raise AlreadyRunning(None)
    return fd


#: What flock(2) on a directory gives where the file system cannot do it.
_CANNOT_LOCK_DIRECTORY = {errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL}


def same_directory(fd: int, paths: ProjectPaths) -> bool:
    """Whether the project directory is still the one `fd` has open (it may have
    been deleted, or deleted and made again)."""
    return is_open_file(fd, paths.root)


def acquire(paths: ProjectPaths, patience: float = ACQUIRE_PATIENCE_SECONDS) -> int:
    """Take the project's lock file for this process and record our pid in it:
    what `holder` and people (`cat .aiwg/daemon/.lock`) read.

    Returns the open descriptor, which must stay open for the daemon's life.
    Raises AlreadyRunning naming the holder when another daemon has it.
    """
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        locked = _lock(fd, patience)
    except OSError:
        os.close(fd)
        raise
    if not locked:
        pid = _read_pid(fd)
        os.close(fd)
        raise AlreadyRunning(pid)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def holds(fd: int, paths: ProjectPaths) -> bool:
    """Whether the lock file on disk is still the one `fd` locks (it may have
    been deleted or replaced while the daemon ran)."""
    return is_open_file(fd, paths.lock_file)


def _project_locked(paths: ProjectPaths) -> bool:
    try:
        fd = os.open(paths.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        if exc.errno in _CANNOT_LOCK_DIRECTORY:
            return False
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def release(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder(paths: ProjectPaths) -> int | None:
    """The pid of the daemon holding this project's lock, or None if nobody holds it.

    Returns 0 when it is held but the holder's pid is not known: it has not
    written it yet, or its `.lock` was deleted and only the project directory's
    lock is held (by the daemon, until it puts `.lock` back, or by some other
    program: ask the daemon over its socket before trusting any pid).
    """
    pid = _lock_file_holder(paths)
    if pid is None and _project_locked(paths):
        return 0
    return pid


def _lock_file_holder(paths: ProjectPaths) -> int | None:
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
