# tests: tests/daemon/test_commands.py
"""Short commands the daemon runs for itself and waits on: a rule's `command`
condition, a loop's git snapshot. Never on the reactor's time: each is spawned
and read asynchronously, in its own session so that a timeout (or the daemon's
stop) kills everything it started, with stdin on /dev/null and its output kept
up to a bound.
"""

from __future__ import annotations

import os
import shutil
import signal
from typing import Any, Mapping

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from aiwg.daemon.tasks.spawning import close_output_pipes, spawn_session_leader

#: Output kept per command (its end: where the verdict usually is).
OUTPUT_LIMIT = 256 * 1024
#: After SIGTERM, this long before SIGKILL.
KILL_GRACE_SECONDS = 2.0


@frozen
class CommandResult:
    """How a command ended. `exit_code` None: it did not finish by itself (timed
    out, killed by a signal, or could not start; `error` then says which)."""

    exit_code: int | None
    output: str
    duration: float
    timed_out: bool = False
    error: str | None = None
    #: Standard output alone, when it was asked for (`run(separate=True)`).
    stdout: str = ""

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


class _Command(ProcessProtocol):
    def __init__(self, runner: "CommandRunner", timeout: float, limit: int, separate: bool = False) -> None:
        self.runner = runner
        self.timeout = timeout
        self.limit = limit
        self.output = bytearray()
        self.stdout: bytearray | None = bytearray() if separate else None
        self.started = runner.reactor.seconds()
        self.done: Deferred = Deferred()
        self.exit_code: int | None = None
        self.error: str | None = None
        self.timed_out = False
        self.pid: int | None = None
        self.exited = False
        self.calls: list[Any] = []

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if self.stdout is not None:  # kept apart, and from its start: it is read
            if childFD == 1:
                self.stdout += data[: max(0, self.limit - len(self.stdout))]
                return
        self.output += data
        if len(self.output) > self.limit:
            del self.output[: len(self.output) - self.limit]

    def processExited(self, reason: Any) -> None:
        self.exited = True
        value = reason.value
        if isinstance(value, ProcessDone):
            self.exit_code = 0
        elif isinstance(value, ProcessTerminated):
            if value.signal is not None:
                self.error = self.error or f"killed by signal {value.signal}"
            else:
                self.exit_code = value.exitCode
        # Whatever it left running in its session would hold the pipes open.
        self.signal(signal.SIGKILL)
        self.calls.append(self.runner.reactor.callLater(1.0, close_output_pipes, self.transport))

    def processEnded(self, reason: Any) -> None:
        for call in self.calls:
            if call.active():
                call.cancel()
        self.runner._finished(self)
        text = bytes(self.output).decode("utf-8", "replace")
        if len(self.output) >= self.limit:
            text = "[… earlier output cut …]\n" + text
        self.done.callback(CommandResult(
            exit_code=None if self.timed_out else self.exit_code, output=text,
            duration=self.runner.reactor.seconds() - self.started,
            timed_out=self.timed_out, error=self.error,
            stdout=bytes(self.stdout).decode("utf-8", "replace") if self.stdout is not None else "",
        ))

    def expire(self) -> None:
        self.timed_out = True
        self.error = f"timed out after {self.timeout:g}s"
        self.stop()

    def stop(self) -> None:
        self.signal(signal.SIGTERM)
        self.calls.append(self.runner.reactor.callLater(KILL_GRACE_SECONDS, self.signal, signal.SIGKILL))

    def signal(self, signum: int) -> None:
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


class CommandRunner:
    """Runs commands and remembers the ones in flight, so a stop can end them."""

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._running: set[_Command] = set()
        self._stopped = False

    def pids(self) -> set[int]:
        """The pids of the commands in flight (the daemon's own children)."""
        return {command.pid for command in self._running if command.pid is not None}

    def run(self, argv: list[str], *, cwd: str | None, env: Mapping[str, str], timeout: float,
            limit: int = OUTPUT_LIMIT, separate: bool = False) -> Deferred:
        """Fires with a CommandResult; never errs (a command that cannot start is a
        result with `error` set; `cwd` None: where the daemon is). `separate`: standard output is kept apart (its
        first `limit` bytes, in `stdout`), and `output` holds standard error."""
        command = _Command(self, timeout, limit, separate)
        if self._stopped:
            command.done.callback(CommandResult(exit_code=None, output="", duration=0.0,
                                                error="not started: the daemon is stopping"))
            return command.done
        executable = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=env.get("PATH", os.defpath))
        if executable is None:
            command.done.callback(CommandResult(exit_code=None, output="", duration=0.0,
                                                error=f"{argv[0]!r} not found on PATH"))
            return command.done
        devnull = -1
        try:
            devnull = os.open(os.devnull, os.O_RDONLY)
            transport = spawn_session_leader(self.reactor, command, executable, argv, dict(env), cwd,
                                             {0: devnull, 1: "r", 2: "r"})
        except Exception as exc:
            command.done.callback(CommandResult(exit_code=None, output="", duration=0.0,
                                                error=f"could not start {argv[0]!r}: {exc}"))
            return command.done
        finally:
            if devnull >= 0:
                os.close(devnull)
        command.pid = transport.pid if transport.pid is not None else getattr(transport, "spawned_pid", None)
        if command.exited:  # reaped during the spawn, before its pid was known here
            command.signal(signal.SIGKILL)
        if not command.done.called:
            self._running.add(command)
            command.calls.append(self.reactor.callLater(timeout, command.expire))
        return command.done

    def shell(self, line: str, *, cwd: str, env: Mapping[str, str], timeout: float) -> Deferred:
        """Run a command line the user wrote, through their shell (`$SHELL -c`)."""
        return self.run([user_shell(env), "-c", line], cwd=cwd, env=env, timeout=timeout)

    def _finished(self, command: _Command) -> None:
        self._running.discard(command)

    @property
    def running(self) -> int:
        return len(self._running)

    def stop(self) -> list[Deferred]:
        """End every command in flight (SIGTERM, then SIGKILL) and start no more; the
        Deferreds fire as they end."""
        self._stopped = True
        waiting = []
        for command in list(self._running):
            command.error = command.error or "stopped: the daemon is stopping"
            command.stop()
            waiting.append(command.done)
        return waiting


def user_shell(env: Mapping[str, str]) -> str:
    """The shell a command line the user wrote runs in: theirs, else /bin/sh."""
    shell = env.get("SHELL") or os.environ.get("SHELL") or ""
    if shell and os.path.isabs(shell) and os.access(shell, os.X_OK):
        return shell
    return "/bin/sh"


def git_snapshot(runner: CommandRunner, root: str, env: Mapping[str, str], exclude: tuple[str, ...] = ()) -> Deferred:
    """`{"head": sha or None, "status": porcelain text}` of the project's work tree,
    or None when it is not a git repository (or git is not there). Takes no
    optional locks, so it never blocks a git command an agent runs meanwhile.
    `exclude`: paths (relative to `root`) left out of the status, such as the
    daemon's own directory."""
    env = {**env, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    result: dict[str, Any] = {}

    def status(outcome: CommandResult) -> Any:
        if outcome.exit_code != 0:
            return None
        result["status"] = outcome.output
        return runner.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root, env=env,
                          timeout=30).addCallback(head)

    def head(outcome: CommandResult) -> dict[str, Any]:
        text = outcome.output.strip()
        result["head"] = text if outcome.exit_code == 0 and text else None  # None: no commit yet
        return {"head": result["head"], "status": result["status"]}

    argv = ["git", "status", "--porcelain"]
    if exclude:
        argv += ["--", *(f":(exclude){path}" for path in exclude)]
    return runner.run(argv, cwd=root, env=env, timeout=30).addCallback(status)
