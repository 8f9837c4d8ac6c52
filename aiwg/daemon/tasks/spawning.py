# tests: tests/daemon/test_supervisor.py
"""Starting a child as the leader of a new session, and so of its own process
group: a timeout, a cancel or a stop then signals it and everything it started
as one group. Used for agents, loop checks and the daemon's own short commands.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sys
from typing import Any

from twisted.internet import process
from twisted.internet.protocol import ProcessProtocol

from aiwg import compat


#: Every signal whose disposition a child can inherit; all are reset to their
#: default in the agent.
_RESET_SIGNALS = tuple(sorted(set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}))
#: The child joins its task's cgroup, then becomes the agent ("$0": cgroup.procs).
_JOIN_CGROUP = '{ echo 0 > "$0"; } 2>/dev/null; exec "$@"'
#: Linux C libraries skip a posix_spawn close action whose descriptor is not open.
_CLOSE_IGNORES_EBADF = sys.platform.startswith("linux")


def _shuffled_fd_actions(fdmap: dict[int, int]) -> list[tuple[int, ...]]:
    """posix_spawn file actions for a map in which some descriptor must move to a
    number that another one occupies: Twisted's own ordering."""
    fd_state = []
    for fd in process._listOpenFDs():  # private: see aiwg/compat.py (session-spawn)
        try:
            fd_state.append((fd, bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)))
        except OSError:
            pass
    return process._getFileActions(fd_state, fdmap, doClose=os.POSIX_SPAWN_CLOSE, doDup2=os.POSIX_SPAWN_DUP2)


class CloexecFrom:
    """Mark every descriptor of this process from a number up close-on-exec in
    one call: Linux's close_range(first, ~0, CLOSE_RANGE_CLOEXEC) (5.11, glibc
    2.34). Nothing in the daemon hands a descriptor to a child by inheritance: a
    child gets what its spawn maps (posix_spawn's dup2 clears the flag on the
    copy), and Python opens everything close-on-exec anyway; this catches what C
    libraries open without the flag. Proved by behaviour on first use (a
    descriptor made inheritable must come back close-on-exec, one below it
    untouched); where it fails, spawns close each descriptor in the child."""

    _FLAG = 4  # CLOSE_RANGE_CLOEXEC, <linux/close_range.h>

    def __init__(self) -> None:
        self._call: Any = None
        self.problem: str | None = None
        self._checked = False

    def works(self) -> bool:
        if not self._checked:
            self._checked = True
            try:
                self._probe()
            except Exception as exc:  # any failure: fall back to per-descriptor closes
                self.problem = f"close_range(CLOSE_RANGE_CLOEXEC) unusable: {exc}"  # _call stays unset
        return self.problem is None

    def _probe(self) -> None:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).close_range
        call.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_int]
        call.restype = ctypes.c_int
        below, above = sorted(os.pipe())
        try:
            os.set_inheritable(below, True)
            os.set_inheritable(above, True)
            if call(above, above, self._FLAG) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            if os.get_inheritable(above) or not os.get_inheritable(below):
                raise RuntimeError("the flag did not land on exactly the descriptors asked for")
        finally:
            os.close(below)
            os.close(above)
        self._call = call

    def __call__(self, first: int) -> None:
        self._call(first, 0xFFFFFFFF, self._FLAG)


CLOEXEC_FROM = CloexecFrom()


class SessionLeaderProcess(process.Process):
    """Twisted's Process, with the child started as the leader of a new session
    (and so of a new process group), so that a timeout, a cancel or a stop can
    signal the agent and everything it started as one group — without paying
    for an extra exec of setsid(1) on every task. When Twisted forks instead of
    spawning, the child calls setsid() itself before exec.

    The posix_spawnp call is Twisted's, with `setsid=True` and two costs cut,
    because the daemon spawns on the reactor thread: Twisted asks Python about
    each of the 64 signals on every spawn to reset the ignored ones, where every
    signal is reset here (exec resets the handled ones anyway); and it asks
    whether each open descriptor is close-on-exec to plan the child's
    descriptors, where here the child simply closes every descriptor it is not
    given.
    """

    #: A cgroup's `cgroup.procs` the child moves itself into before it execs (the
    #: fork path: posix_spawn cannot), so that nothing it starts is ever outside it.
    cgroup_procs: str | None = None

    def __init__(self, *args: Any, cgroup_procs: str | None = None) -> None:
        self.cgroup_procs = cgroup_procs
        super().__init__(*args)

    def _trySpawnInsteadOfFork(self, path: Any, uid: Any, gid: Any, executable: Any,
                               args: Any, environment: Any, kwargs: Any) -> bool:
        if (
            uid is not None
            or gid is not None
            or (path is not None and os.path.abspath(path) != os.path.abspath("."))
            or getattr(self._reactor, "_neverUseSpawn", False)
        ):
            return False
        fdmap = kwargs["fdmap"]
        if self.cgroup_procs is not None:
            # posix_spawn cannot join a cgroup: a shell does it in the child and
            # execs the agent, same pid (about 1 ms in the child, none here).
            executable, args = "/bin/sh", ["sh", "-c", _JOIN_CGROUP, self.cgroup_procs, executable, *args[1:]]
        if not _CLOSE_IGNORES_EBADF or any(parent in fdmap for parent in fdmap.values()):
            actions = _shuffled_fd_actions(fdmap)  # the general case, as Twisted does it
        else:
            # Each given descriptor lands on its number in the child; no other one
            # reaches it: all from 3 up are made close-on-exec here in one system
            # call, or, where that call is missing, each is closed in the child
            # (cheaper than asking about each, but glibc checks the limit on
            # descriptors for every close action it is given).
            actions = [(os.POSIX_SPAWN_DUP2, parent, child) for child, parent in fdmap.items()]
            if CLOEXEC_FROM.works():
                CLOEXEC_FROM(3)
                actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in (0, 1, 2) if fd not in fdmap]
            else:
                actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in process._listOpenFDs() if fd not in fdmap]
        try:
            self.pid = os.posix_spawnp(
                executable, args, os.environ if environment is None else environment,
                file_actions=actions, setsigdef=_RESET_SIGNALS, setsid=True,
            )
            self.spawned_pid = self.pid  # Twisted clears pid if it reaps the child at once
        except NotImplementedError:  # no POSIX_SPAWN_SETSID here: fork, and setsid below
            return False
        self.status = -1
        return True

    def _setupChild(self, fdmap: Any) -> None:
        os.setsid()
        if self.cgroup_procs is not None:
            try:
                fd = os.open(self.cgroup_procs, os.O_WRONLY)
                try:
                    os.write(fd, b"0\n")  # this process, into its task's cgroup
                finally:
                    os.close(fd)
            except OSError:
                pass  # the daemon moves it from outside as well
        super()._setupChild(fdmap)


@compat.hook("session-spawn", "twisted",
             "process.Process._trySpawnInsteadOfFork, _setupChild, process._listOpenFDs, process._getFileActions")
def SESSION_SPAWN() -> None:
    """Both of Twisted's ways to start a child, through SessionLeaderProcess: the
    child must lead its own process group (posix_spawn with setsid, or fork then
    setsid)."""
    for cwd in (os.getcwd(), "/"):  # the daemon's own directory: posix_spawn; another: fork
        check_session_leader(cwd)


def spawn_session_leader(reactor: Any, protocol: Any, executable: str, argv: list[str], env: dict[str, str],
                         path: str, child_fds: dict[int, Any], cgroup_procs: str | None = None) -> Any:
    """Start `argv` as the leader of a new session: through SessionLeaderProcess
    while its Twisted hooks pass their check, else through the public spawnProcess
    with setsid(1) in front (one more exec: about 0.7 ms a spawn)."""
    if SESSION_SPAWN.works():
        return SessionLeaderProcess(reactor, executable, argv, env, path, protocol, None, None, child_fds,
                                    cgroup_procs=cgroup_procs)
    setsid = shutil.which("setsid")
    if setsid is None:  # no util-linux (macOS): the agent shares the daemon's group
        return reactor.spawnProcess(protocol, executable, argv, env, path, childFDs=child_fds)
    return reactor.spawnProcess(protocol, setsid, ["setsid", "-w", executable, *argv[1:]], env, path,
                                childFDs=child_fds)


class _Outcome(ProcessProtocol):
    code: int | None = None

    def processEnded(self, reason: Any) -> None:
        self.code = reason.value.exitCode


def check_session_leader(cwd: str) -> None:
    """Start a shell through SessionLeaderProcess in `cwd` and wait for it (a few
    milliseconds, on the calling thread): it exits 0 only if it leads its own
    process group. Raises compat.HookBroken otherwise."""
    shell = shutil.which("sh") or "/bin/sh"
    outcome = _Outcome()
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        child = SessionLeaderProcess(compat.NoIOReactor(), shell, ["sh", "-c", "kill -0 -$$"], {}, cwd, outcome,
                                     None, None, {0: devnull, 1: devnull, 2: devnull})
    finally:
        os.close(devnull)
    pid = child.pid if child.pid is not None else getattr(child, "spawned_pid", None)
    if pid is not None and process.reapProcessHandlers.get(pid) is child:  # not reaped while being registered
        process.unregisterReapProcessHandler(pid, child)
        _, status = os.waitpid(pid, 0)
        code: int | None = os.waitstatus_to_exitcode(status)
    else:  # it exited, and was reaped, before the spawn returned (its pid is gone with it)
        code = outcome.code
    compat.expect(code is not None or pid is not None, "no pid and no exit status for the spawned child")
    way = "posix_spawn" if os.path.abspath(cwd) == os.path.abspath(".") else "fork"
    compat.expect(code == 0, f"a child started by {way} does not lead its own process group (exit {code})")


def has_exited(pid: int) -> bool:
    """Has our child `pid` exited (a zombie not yet reaped)? Looks without reaping."""
    try:
        found = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped already, or not our child
        return False
    return found is not None and found.si_pid == pid


def reap_exited() -> None:
    """Let Twisted reap every child that has exited now, as its SIGCHLD handler
    would on its next turn: their processEnded runs before this returns."""
    process.reapAllProcesses()


def close_output_pipes(transport: Any) -> None:
    """Close our ends of a child's stdout and stderr: a descendant that keeps them
    open (it escaped the group, or ignores signals) must not hold its parent's
    end forever."""
    if transport is None:
        return
    for fd in (1, 2):
        try:
            transport.closeChildFD(fd)
        except Exception:
            pass
