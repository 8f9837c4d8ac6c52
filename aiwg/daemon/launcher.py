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

from twisted.scripts._twistd_unix import ServerOptions, UnixApplicationRunner

from aiwg.paths import ProjectPaths

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
    options.parseOptions(twistd_argv(paths, config, foreground))
    runner = _Runner(options)
    runner.on_report = on_report  # type: ignore[method-assign]
    runner.run()
    return 0
