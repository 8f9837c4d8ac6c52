# tests: tests/e2e/test_lifecycle.py
"""`aiwg daemon start`: twistd's own daemonisation, run in-process with our plugin.

twistd forks twice; the original process waits on a status pipe until the
daemon's services have started (or failed) and only then exits — which is
what makes `Type=forking` units correct. We keep that machinery and add two
things to its ends: the daemon reports its full failure reason (twistd cuts
it to 100 bytes), and the waiting parent pings the socket and prints the
result before it exits.
"""

from __future__ import annotations

import os
import select
import traceback
from types import SimpleNamespace
from typing import Any, Callable

from twisted.scripts.twistd import ServerOptions, runApp

from aiwg import compat
from aiwg.paths import ProjectPaths

try:
    # twistd's Unix runner lives in a private module; _Runner overrides two of its
    # methods (aiwg/compat.py: twistd-runner). When they stop behaving as expected,
    # `aiwg daemon start` runs twistd as a child process instead, and the
    # foreground daemon runs through twistd's public runApp.
    from twisted.scripts._twistd_unix import UnixApplicationRunner
except ImportError:  # pragma: no cover - the check reports it
    UnixApplicationRunner = object  # type: ignore[assignment, misc]

#: How long the waiting parent waits for the daemon to report start-up.
START_REPORT_TIMEOUT = 60.0
_PIPE_MESSAGE_MAX = 4000  # below PIPE_BUF: one atomic write


class _Options(ServerOptions):
    """twistd's options with exactly one subcommand, ours: no plugin scan."""

    @property
    def subCommands(self) -> Any:  # type: ignore[override]
        from aiwg.daemon import tap

        self.loadedPlugins = {
            "aiwg": SimpleNamespace(tapname="aiwg", makeService=tap.makeService)
        }
        yield ("aiwg", None, tap.Options, "aiwg daemon")


class _Runner(UnixApplicationRunner):
    #: Called in the original process with (ok, message); returns the exit code.
    on_report: Callable[[bool, str], int] = staticmethod(lambda ok, message: 0 if ok else 1)

    def _formatChildException(self, exception: BaseException) -> bytes:
        line = traceback.format_exception_only(type(exception), exception)[-1].strip()
        if type(exception).__module__.startswith("aiwg."):
            line = f"{type(exception).__name__}: {exception}"
        return ("1 " + line).encode("utf-8", "backslashreplace")[:_PIPE_MESSAGE_MAX]

    def _waitForStart(self, readPipe: int) -> int:
        # The daemon writes its report in one write (< PIPE_BUF, so atomic);
        # EOF never comes, since this process also holds the write end.
        ready, _, _ = select.select([readPipe], [], [], START_REPORT_TIMEOUT)
        if not ready:
            return self.on_report(
                False, f"the daemon did not report start-up within {START_REPORT_TIMEOUT:.0f}s"
            )
        data = os.read(readPipe, 65536)
        if data == b"0":
            return self.on_report(True, "")
        message = data[2:].decode("utf-8", "replace") or "the daemon exited during start-up"
        return self.on_report(False, message)


def twistd_argv(paths: ProjectPaths, config: str | None, foreground: bool) -> list[str]:
    argv = [
        "--pidfile=",  # the daemon writes .aiwg/daemon.pid itself, under its lock
        "--logger=aiwg.daemon.logs.discard_observer",  # it writes daemon.log itself
        f"--rundir={paths.root}",
    ]
    if foreground:
        argv.append("--nodaemon")
    argv += ["aiwg", "--project", str(paths.root)]
    if config:
        argv += ["--config", config]
    if foreground:
        argv.append("--log-stdout")
    return argv


def run(
    paths: ProjectPaths,
    config: str | None,
    *,
    foreground: bool,
    on_report: Callable[[bool, str], int],
) -> int:
    """Run the daemon. Detached: returns only in the daemon process, after it stops
    (the waiting parent exits from inside twistd with on_report's code).
    Foreground: returns when the daemon stops; raises if it cannot start."""
    options = _Options()
    argv = twistd_argv(paths, config, foreground)
    options.parseOptions(argv)
    if foreground:
        if TWISTD_RUNNER.works():
            _Runner(options).run()  # as runApp, but a stop by signal exits 0
        else:
            runApp(options)  # twistd's public entry; a stop by SIGTERM exits by that signal
        return 0
    if not TWISTD_RUNNER.works():
        import sys

        sys.stderr.write(f"aiwg: warning: {TWISTD_RUNNER.problem}: running twistd as a child process\n")
        _run_twistd_child(argv, on_report)
    runner = _Runner(options)
    runner.on_report = on_report  # type: ignore[method-assign]
    runner.run()
    return 0


def _run_twistd_child(argv: list[str], on_report: Callable[[bool, str], int]) -> None:
    """The public way: twistd as a child process, which waits for the daemon's
    report itself (cut to 100 bytes, on its stderr). Exits this process with
    on_report's code."""
    import subprocess
    import sys

    code = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    done = subprocess.run([sys.executable, "-c", code, *argv], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True)
    if done.returncode == 0:
        status = on_report(True, "")
    else:
        text = " ".join((done.stderr or done.stdout).split())
        status = on_report(False, text or f"twistd exited with status {done.returncode}")
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    os._exit(status)


@compat.hook("twistd-runner", "twisted",
             "twisted.scripts._twistd_unix.UnixApplicationRunner (_waitForStart, _formatChildException)")
def TWISTD_RUNNER() -> None:
    check_runner()


class _Exited(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"os._exit({code})")
        self.code = code


def check_runner() -> None:
    """Prove, without forking, that twistd's runner still calls the two methods
    _Runner overrides: the waiting parent's exit code comes from _waitForStart,
    and a failed start is reported through _formatChildException. os.fork,
    os._exit and startApplication are stood in for while it runs (the CLI is
    single-threaded here). Raises compat.HookBroken."""
    options = _Options()
    options.parseOptions(["--pidfile=", "--nodaemon", "aiwg"])
    runner = _Runner(options)
    seen: dict[str, Any] = {}

    def wait_for_start(read_pipe: int) -> int:
        seen["waited"] = read_pipe
        return 7

    def exit_(code: int) -> None:
        raise _Exited(code)

    pipes: list[int] = []
    real_pipe, real_fork, real_exit = os.pipe, os.fork, os._exit

    def pipe() -> tuple[int, int]:
        r, w = real_pipe()
        pipes.extend((r, w))
        os.write(w, b"0")  # whatever reads the report finds one: nothing blocks
        return r, w

    runner._waitForStart = wait_for_start  # type: ignore[method-assign]
    os.pipe, os.fork, os._exit = pipe, (lambda: 4242), exit_  # type: ignore[assignment]
    try:
        try:
            runner.daemonize(object())
        except _Exited as exited:
            compat.expect(exited.code == 7 and "waited" in seen,
                          f"the waiting parent exited with {exited.code}, not _waitForStart's 7")
        else:
            raise compat.HookBroken("daemonize returned in the parent instead of exiting")
    finally:
        os.pipe, os.fork, os._exit = real_pipe, real_fork, real_exit
        for fd in pipes:
            try:
                os.close(fd)
            except OSError:
                pass
    r, w = os.pipe()
    try:
        runner.config["statusPipe"] = w
        runner.application = None
        runner.removePID = lambda pidfile: None  # type: ignore[method-assign]

        def fail_to_start(application: Any) -> None:
            raise ValueError("x" * 300)

        runner.startApplication = fail_to_start  # type: ignore[method-assign]
        try:
            runner.postApplication()
        except ValueError:
            pass
        report = os.read(r, 65536)
        compat.expect(report.startswith(b"1 ValueError: ") and len(report) > 200,
                      f"a failed start reported {report[:40]!r}... ({len(report)} bytes), "
                      "not through _formatChildException")
    finally:
        os.close(r)
        try:
            os.close(w)
        except OSError:
            pass  # postApplication closes it
