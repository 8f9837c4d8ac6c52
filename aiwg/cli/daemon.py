# tests: tests/e2e/test_lifecycle.py, tests/test_cli.py
"""`aiwg daemon …`: start, stop, restart, status, list, ping, reload, logs."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from aiwg import instance, registry
from aiwg.cli.render import (
    Context,
    duration,
    emit_json,
    fail,
    json_option,
    project_option,
)
from aiwg.cli.logfile import follow_lines, last_lines
from aiwg.cli.status import status_text
from aiwg.client import DaemonClient
from aiwg.errors import (
    EXIT_FAILURE,
    EXIT_NOT_CONFIGURED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_STATUS_NOT_RUNNING,
    EXIT_STATUS_UNKNOWN,
    EXIT_USAGE,
    AiwgError,
    ConfigError,
    DaemonNotRunning,
)
from aiwg.paths import SOCKET_ENV, ProjectPaths

pass_context = click.make_pass_decorator(Context, ensure=True)


@click.group()
def daemon() -> None:
    """Start, stop and inspect the project's daemon."""


# -- chat --------------------------------------------------------------------


@daemon.command("chat")
@click.option("--conversation", "-c", metavar="ID", help="Continue this conversation.")
@project_option
@pass_context
def chat_repl(ctx: Context, conversation: str | None) -> None:
    """Chat with the project's AI interactively (line editing, history, Ctrl-C cancels)."""
    from aiwg.cli import repl

    sys.exit(repl.run(ctx.paths, conversation))


# -- start -------------------------------------------------------------------


#: How long `daemon start` waits for the file watcher's watches to be in place.
WATCH_READY_SECONDS = 10.0


def _watcher_ready(client: DaemonClient, within: float) -> bool:
    """Wait until the file watcher (if enabled) has its watches in place, so a change
    made right after `aiwg daemon start` returns is seen."""
    import time

    deadline = time.monotonic() + within
    while True:
        watcher = client.call("daemon.status").get("subsystems", {}).get("file_watcher", {})
        if not watcher.get("enabled") or watcher.get("running") or watcher.get("error"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


@daemon.command()
@click.option("--config", "-c", "config", metavar="FILE", help="Configuration file (default .aiwg/daemon.json).")
@click.option("--foreground", "-f", is_flag=True, help="Stay in the foreground and log to stdout (containers, systemd Type=exec).")
@click.option("--tmux", "with_tmux", is_flag=True, help="Also open a tmux session (tmux.session, default aiwg-daemon) with the log, task output and the chat REPL.")
@project_option
@json_option
@pass_context
def start(ctx: Context, config: str | None, foreground: bool, with_tmux: bool = False) -> None:
    """Start the daemon for the project; returns once it answers on its socket
    and its file watches (if any) are in place."""
    paths = ctx.paths  # a project that is not a directory is refused there, as by every command
    if with_tmux and foreground:
        fail("--tmux runs the daemon in the background; drop --foreground", EXIT_USAGE)
    running = _running_pid(paths)
    if running is not None:
        if running == 0:  # held, pid not written yet (or being put back): give it a moment
            running = _running_pid(paths, wait=3.0) or 0
        _report_already_running(ctx, paths, running)
        if with_tmux:
            _tmux_for_running(ctx, paths, config)
        return
    from aiwg.configfile import load_config

    try:
        loaded = load_config(paths, config)
    except ConfigError as exc:
        fail(f"cannot start: {exc}", EXIT_NOT_CONFIGURED)
        return
    for warning in loaded.warnings:
        click.echo(f"aiwg: warning: {loaded.source}: {warning}", err=True)
    if with_tmux:
        from aiwg import tmux

        try:
            tmux.executable()
        except AiwgError as exc:
            fail(str(exc), EXIT_FAILURE)
    tmux_session = str(loaded.data["tmux"]["session"]) if with_tmux else None

    from aiwg.daemon import launcher

    if foreground:
        try:
            code = launcher.run(paths, config, foreground=True, on_report=lambda ok, m: 0)
        except AiwgError as exc:
            if exc.__class__.__name__ == "AlreadyRunning":
                _report_already_running(ctx, paths, _running_pid(paths, wait=3.0) or 0)
                return
            fail(f"failed to start: {exc}", EXIT_FAILURE)
            return
        except Exception as exc:
            fail(f"failed to start: {exc}", EXIT_FAILURE)
            return
        sys.exit(code)

    def on_report(ok: bool, message: str) -> int:
        # Runs in the original process, whose stdout twistd has redirected.
        out = sys.__stdout__ or sys.stdout
        err = sys.__stderr__ or sys.stderr
        if not ok:
            if message.startswith("AlreadyRunning"):
                pid = _running_pid(paths, wait=3.0) or 0
                return _print_already_running(ctx, paths, pid, out, err)
            err.write(f"aiwg: failed to start the daemon for {paths.root}: {message}\n")
            if paths.log_file.exists():
                err.write(f"aiwg: see {paths.log_file}\n")
            err.flush()
            return EXIT_FAILURE
        try:
            with DaemonClient(paths.root, socket_path=paths.bind_socket(), timeout=5) as c:
                pong = c.call("ping")
                if not _watcher_ready(c, WATCH_READY_SECONDS):
                    err.write(
                        f"aiwg: the file watcher is still setting up its watches after "
                        f"{WATCH_READY_SECONDS:g} s (a large tree?); changes before it is ready "
                        "are not seen. `aiwg daemon status` shows when it is running.\n"
                    )
        except AiwgError as exc:
            err.write(f"aiwg: the daemon started but does not answer: {exc}\n")
            err.flush()
            return EXIT_FAILURE
        info = {"started": True, "pid": pong.get("pid"), "socket": str(paths.bind_socket()),
                "log": str(paths.log_file), "project": str(paths.root)}
        if tmux_session is not None:
            from aiwg import tmux

            try:
                info["tmux_session"] = tmux.create(paths, tmux_session)
            except AiwgError as exc:
                err.write(f"aiwg: the daemon is running, but its tmux session failed: {exc}\n")
                err.flush()
        if ctx.as_json:
            import json

            out.write(json.dumps(info, indent=2) + "\n")
        else:
            out.write(
                f"aiwg daemon started (pid {info['pid']})\n"
                f"  socket: {info['socket']}\n  log:    {info['log']}\n"
            )
            if "tmux_session" in info:
                out.write(f"  tmux:   session {info['tmux_session']} (aiwg daemon attach)\n")
        out.flush()
        return EXIT_OK

    original = os.getpid()
    try:
        launcher.run(paths, config, foreground=False, on_report=on_report)
    except BaseException as exc:
        if os.getpid() == original:  # failed before forking: nobody reported it yet
            fail(f"failed to start the daemon for {paths.root}: {exc}", EXIT_FAILURE)
        os._exit(1)  # the daemon process; the waiting parent has already reported
    # Only the daemon process gets here, after it has stopped.
    sys.exit(0)


def _tmux_for_running(ctx: Context, paths: ProjectPaths, config: str | None) -> None:
    """`start --tmux` on a running daemon: open its session if it has none."""
    from aiwg import tmux
    from aiwg.configfile import load_config

    try:
        existing = tmux.current(paths)
        if existing is not None and len(tmux.panes(existing)) < 3:
            existing = None  # left from a daemon that died: its task and chat panes closed
        if existing is None:
            existing = tmux.create(paths, str(load_config(paths, config).data["tmux"]["session"]))
            message = f"  tmux:   opened session {existing} (aiwg daemon attach)"
        else:
            message = f"  tmux:   session {existing} is already open (aiwg daemon attach)"
    except (AiwgError, ConfigError) as exc:
        fail(f"could not open the tmux session: {exc}", EXIT_FAILURE)
        return
    if not ctx.as_json:
        click.echo(message)


def _report_already_running(ctx: Context, paths: ProjectPaths, pid: int) -> None:
    code = _print_already_running(ctx, paths, pid, sys.stdout)
    if code != EXIT_OK:
        sys.exit(code)


def _unknown_holder(paths: ProjectPaths) -> str:
    """What to say when the project is locked but no daemon answers or names itself."""
    return (
        f"the project directory {paths.root} is locked, but no daemon answers on "
        f"{paths.client_socket()} or has recorded its pid; if no aiwg daemon runs for it, another "
        f"program holds an flock on the directory (`fuser -v {paths.root}` names it)"
    )


def _print_already_running(ctx: Context, paths: ProjectPaths, pid: int, out: Any, err: Any = None) -> int:
    if not pid:
        message = f"cannot start: {_unknown_holder(paths)}"
        (err or sys.stderr).write(f"aiwg: {message}\n")
        (err or sys.stderr).flush()
        if ctx.as_json:
            import json

            out.write(json.dumps({"error": message, "exit_code": EXIT_FAILURE}) + "\n")
            out.flush()
        return EXIT_FAILURE
    if ctx.as_json:
        import json

        out.write(json.dumps({"started": False, "already_running": True, "pid": pid}) + "\n")
    else:
        out.write(f"aiwg daemon already running (pid {pid}) for {paths.root}\n")
    out.flush()
    return EXIT_OK


def _running_pid(paths: ProjectPaths, wait: float = 0.0) -> int | None:
    """The pid holding the project's lock (0: held, pid not known yet); with
    `wait`, give a starting daemon time to write its pid, or a daemon whose pid
    file was deleted time to write it again. Asks the daemon itself meanwhile."""
    deadline = time.monotonic() + wait
    while True:
        pid = instance.holder(paths)
        if pid == 0:
            pid = _pid_from_ping(paths)
        if pid is None or pid > 0 or time.monotonic() >= deadline:
            return pid
        time.sleep(0.05)


def _pid_from_ping(paths: ProjectPaths) -> int:
    try:
        with DaemonClient(paths.root, socket_path=paths.client_socket(), timeout=2) as client:
            return int(client.call("ping").get("pid") or 0)
    except (AiwgError, ValueError, TypeError):
        return 0


# -- stop --------------------------------------------------------------------


@daemon.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the graceful stop (running tasks get "
    "daemon.shutdown_grace_seconds, 15 by default, before they are killed).",
)
@project_option
@json_option
@pass_context
def stop(ctx: Context, timeout: float) -> None:
    """Stop the daemon gracefully (SIGTERM) and wait until it has exited."""
    paths = ctx.paths
    pid = _running_pid(paths, wait=3.0)
    if pid is None:
        if os.environ.get("AIWG_DAEMON_SOCKET"):
            _stop_remote(ctx, paths, timeout)
            return
        _close_tmux(paths)  # a session left behind by a daemon that died
        _say(ctx, {"stopped": False, "running": False}, f"aiwg daemon is not running for {paths.root}")
        return
    if pid <= 0:
        fail(f"not stopped: {_unknown_holder(paths)}", EXIT_FAILURE)
    # The lock file names the holder; when the daemon answers, its own word is surer
    # (a daemon that has just taken the lock may not have rewritten the file yet).
    try:
        with DaemonClient(paths.root, socket_path=paths.client_socket(), timeout=2) as client:
            pid = int(client.call("ping").get("pid") or pid)
    except AiwgError:
        pass
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if not ctx.as_json:
        click.echo(f"stopping aiwg daemon (pid {pid})…", err=True)
    deadline = time.monotonic() + timeout
    # The lock frees when the daemon's services have stopped; the process exits just after.
    while instance.holder(paths) is not None or instance.pid_alive(pid):
        if time.monotonic() >= deadline:
            fail(
                f"the daemon (pid {pid}) is still stopping after {timeout:g}s; it was not killed. "
                "Wait, or run `aiwg daemon stop` again with a longer --timeout",
                EXIT_FAILURE,
            )
        time.sleep(0.05)
    _close_tmux(paths)
    _say(ctx, {"stopped": True, "pid": pid}, f"aiwg daemon stopped (pid {pid})")


def _close_tmux(paths: ProjectPaths) -> None:
    """`aiwg daemon stop` closes the project's tmux session too."""
    if not (paths.daemon_dir / "tmux-session").exists():
        return
    from aiwg import tmux

    try:
        tmux.kill(paths)
    except AiwgError:
        pass


@daemon.command()
@project_option
@pass_context
def attach(ctx: Context) -> None:
    """Attach to the daemon's tmux session (from `aiwg daemon start --tmux`)."""
    from aiwg import tmux

    try:
        tmux.attach(ctx.paths)
    except AiwgError as exc:
        fail(str(exc), EXIT_FAILURE)


def _stop_remote(ctx: Context, paths: ProjectPaths, timeout: float) -> None:
    """No local lock holder, but $AIWG_DAEMON_SOCKET names a socket: ask over it."""
    try:
        with DaemonClient(paths.root, timeout=5) as client:
            result = client.call("daemon.stop")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    client.call("ping")
                except AiwgError:
                    break
                time.sleep(0.05)
    except DaemonNotRunning:
        _say(ctx, {"stopped": False, "running": False}, "aiwg daemon is not running")
        return
    _say(ctx, {"stopped": True, "pid": result.get("pid")}, f"aiwg daemon stopped (pid {result.get('pid')})")


@daemon.command()
@click.option("--config", "-c", "config", metavar="FILE", help="Configuration file for the new daemon.")
@click.option("--timeout", type=click.FloatRange(min=0), default=60.0, show_default=True, help="Seconds to wait for the stop.")
@click.option("--tmux", "with_tmux", is_flag=True, help="Open the tmux session too (it is reopened anyway if the old daemon had one).")
@project_option
@json_option
@click.pass_context
def restart(click_ctx: click.Context, config: str | None, timeout: float, with_tmux: bool) -> None:
    """Stop the daemon (if running), then start it. A configuration the new daemon
    would refuse is caught first, and the running daemon is left alone."""
    from aiwg.configfile import load_config

    ctx = click_ctx.find_object(Context) or Context(project=None)
    try:
        load_config(ctx.paths, config)
    except ConfigError as exc:
        fail(f"not restarting (the running daemon is untouched): {exc}", EXIT_NOT_CONFIGURED)
    if not with_tmux and (ctx.paths.daemon_dir / "tmux-session").exists():
        from aiwg import tmux

        try:
            with_tmux = tmux.current(ctx.paths) is not None  # stop closes it: open it again
        except AiwgError:
            pass
    if ctx.as_json:  # one JSON document, the start's, not one per step
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            click_ctx.invoke(stop, timeout=timeout)
    else:
        click_ctx.invoke(stop, timeout=timeout)
    # Detached, start ends this process once the daemon answers: it must come last.
    click_ctx.invoke(start, config=config, foreground=False, with_tmux=with_tmux)


# -- status / ping / reload -------------------------------------------------------


@daemon.command()
@project_option
@json_option
@pass_context
def status(ctx: Context) -> None:
    """Pid, uptime, health and subsystems. Exit 0 running, 3 not running, 4 unresponsive."""
    paths = ctx.paths
    try:
        with DaemonClient(paths.root, timeout=10) as client:
            result = client.call("daemon.status")
    except DaemonNotRunning:
        result = None
    except AiwgError as exc:
        override = os.environ.get(SOCKET_ENV)
        if override:
            _say(ctx, {"running": True, "responding": False, "socket": override, "error": str(exc)},
                 f"the daemon on {override} (from ${SOCKET_ENV}) does not answer: {exc}")
            sys.exit(EXIT_STATUS_UNKNOWN)
        pid = _running_pid(paths)
        _say(
            ctx,
            {"running": True, "responding": False, "pid": pid or None, "error": str(exc)},
            f"aiwg daemon (pid {pid or 'unknown'}) is running but not answering: {exc}",
        )
        sys.exit(EXIT_STATUS_UNKNOWN)
    if result is None:
        _not_running_status(ctx, paths)
        return
    if ctx.as_json:
        emit_json({"running": True, **result})
        return
    click.echo(status_text(result))


def _not_running_status(ctx: Context, paths: ProjectPaths) -> None:
    override = os.environ.get(SOCKET_ENV)
    if override:  # the daemon meant is the one at that socket, not this project's
        _say(
            ctx,
            {"running": False, "project": str(paths.root), "socket": override},
            f"aiwg daemon: nothing answers on {override} (from ${SOCKET_ENV})",
        )
        sys.exit(EXIT_STATUS_NOT_RUNNING)
    pid = _running_pid(paths, wait=3.0)
    if pid is not None:
        _say(
            ctx,
            {"running": True, "responding": False, "pid": pid or None},
            f"aiwg daemon (pid {pid}) holds the lock but its socket {paths.client_socket()} "
            "does not answer" if pid else f"aiwg daemon: {_unknown_holder(paths)}",
        )
        sys.exit(EXIT_STATUS_UNKNOWN)
    stale = instance.read_pid_file(paths)
    note = ""
    if stale is not None:
        note = f" (stale pid file {paths.pid_file} names pid {stale}; the next start replaces it)"
    _say(
        ctx,
        {"running": False, "project": str(paths.root), "stale_pid": stale},
        f"aiwg daemon: not running for {paths.root}{note}",
    )
    sys.exit(EXIT_STATUS_NOT_RUNNING)


@daemon.command("list")
@json_option
@pass_context
def list_daemons(ctx: Context) -> None:
    """Every daemon of yours on this machine: project, pid, uptime, tasks, health."""
    rows = [_daemon_row(entry) for entry in registry.running()]
    if ctx.as_json:
        emit_json({"daemons": rows})
        return
    if not rows:
        click.echo("No aiwg daemon is running (for this user).")
        return
    table = [("PROJECT", "PID", "UPTIME", "RUNNING", "QUEUED", "HEALTH")]
    for row in rows:
        if row["responding"]:
            table.append((row["project"], str(row["pid"]), duration(row["uptime_seconds"]), str(row["running"]),
                          str(row["queued"]), row["health"]))
        else:
            table.append((row["project"], str(row["pid"]), "-", "-", "-", "not answering"))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def _daemon_row(entry: dict[str, Any]) -> dict[str, Any]:
    """One daemon, as its own status says (briefly: one unresponsive daemon must not hold up the list)."""
    row: dict[str, Any] = {"project": entry["project"], "pid": entry["pid"], "socket": entry["socket"]}
    try:
        with DaemonClient(Path(entry["project"]), socket_path=Path(entry["socket"]), timeout=2) as client:
            status = client.call("daemon.status")
    except AiwgError as exc:
        return {**row, "responding": False, "error": str(exc)}
    agents = status.get("subsystems", {}).get("supervisor", {})
    return {**row, "responding": True, "uptime_seconds": status.get("uptime_seconds"),
            "running": agents.get("running", 0), "queued": agents.get("queued", 0),
            "health": status.get("health"), "health_issues": status.get("health_issues", [])}


@daemon.command()
@click.option("--timeout", type=click.FloatRange(min=0.01, max=3600), default=5.0, show_default=True, help="Seconds to wait for the reply.")
@project_option
@json_option
@pass_context
def ping(ctx: Context, timeout: float) -> None:
    """Quick health check: exit 0 if the daemon answers, 7 if none is running."""
    from aiwg.cli import ping as fast

    sys.exit(fast.run(ctx.project, ctx.as_json, timeout))


@daemon.command()
@project_option
@json_option
@pass_context
def reload(ctx: Context) -> None:
    """Re-read the configuration (as SIGHUP does); an invalid one is refused."""
    from aiwg.errors import CONFIG_INVALID, RpcError

    with DaemonClient(ctx.paths.root) as client:
        try:
            result = client.call("daemon.reload")
        except RpcError as exc:
            if exc.code == CONFIG_INVALID:
                fail(f"reload refused, the daemon keeps its configuration: {exc.message}", EXIT_NOT_CONFIGURED)
            raise
    if ctx.as_json:
        emit_json(result)
        if result.get("errors"):
            sys.exit(EXIT_FAILURE)
        return
    if result.get("errors"):
        fail("reload not applied, the daemon keeps its running configuration (see the daemon log): "
             + "; ".join(result["errors"]), EXIT_FAILURE)
    changed = ", ".join(result.get("changed", [])) or "nothing changed"
    click.echo(f"configuration reloaded: {changed}")
    for warning in result.get("warnings", []):
        click.echo(f"aiwg: warning: {warning}", err=True)


# -- logs --------------------------------------------------------------------


@daemon.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (survives rotation).")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=50, show_default=True, help="Lines to show first.")
@project_option
@json_option
@pass_context
def logs(ctx: Context, follow: bool, lines: int) -> None:
    """Show the daemon log (.aiwg/daemon/daemon.log)."""
    path = ctx.paths.log_file
    if not path.exists() and not follow:
        fail(f"no log file at {path} (has the daemon run here? in the foreground it logs to stdout)", EXIT_NOT_RUNNING)
    for line in last_lines(path, lines):
        _print_log_line(ctx, line)
    if follow:
        try:
            follow_lines(path, lambda line: _print_log_line(ctx, line))
        except KeyboardInterrupt:
            sys.exit(130)


def _print_log_line(ctx: Context, line: str) -> None:
    if ctx.as_json:
        import json

        click.echo(json.dumps({"line": line}))
    else:
        click.echo(line)


def _say(ctx: Context, data: dict[str, Any], text: str) -> None:
    if ctx.as_json:
        emit_json(data)
    else:
        click.echo(text)
