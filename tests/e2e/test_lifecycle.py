"""The daemon's life through the real CLI and twistd: start, stop, status, failures, races."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from aiwg import instance
from aiwg.errors import EXIT_NOT_CONFIGURED, EXIT_NOT_RUNNING
from aiwg.paths import ProjectPaths
from tests.conftest import TWISTD, Project, alive, wait_for

pytestmark = pytest.mark.e2e


def test_start_prints_pid_and_socket_and_ping_answers_at_once(project: Project) -> None:
    result = project.aiwg("daemon", "start", check=True)
    pid = project.pid()
    assert f"pid {pid}" in result.stdout
    assert str(project.paths.default_socket) in result.stdout
    # No retry: the socket answered before `start` returned.
    with project.client(timeout=5) as client:
        assert client.call("ping")["pong"] is True
    assert project.paths.pid_file.read_text().strip() == str(pid)


def test_start_json_output(project: Project) -> None:
    result = project.aiwg("daemon", "start", "--json", check=True)
    info = json.loads(result.stdout)
    assert info["started"] is True and info["pid"] == project.pid()


def test_already_running_is_success_and_names_the_pid(daemon: Project) -> None:
    pid = daemon.pid()
    result = daemon.aiwg("daemon", "start")
    assert result.returncode == 0
    assert f"already running (pid {pid})" in result.stdout
    assert daemon.pid() == pid


def test_stop_waits_for_exit_and_removes_pid_file_and_socket(daemon: Project) -> None:
    pid = daemon.pid()
    result = daemon.aiwg("daemon", "stop")
    assert result.returncode == 0, result.stderr
    assert f"stopped (pid {pid})" in result.stdout
    assert not alive(pid)
    assert not daemon.paths.pid_file.exists()
    assert not daemon.paths.default_socket.exists()
    state = json.loads(daemon.paths.state_file.read_text())
    assert state["status"] == "stopped" and state["pid"] == pid


def test_stop_when_not_running_is_success(project: Project) -> None:
    result = project.aiwg("daemon", "stop")
    assert result.returncode == 0
    assert "not running" in result.stdout


def test_status_exit_codes(project: Project) -> None:
    stopped = project.aiwg("daemon", "status")
    assert stopped.returncode == 3
    assert "not running" in stopped.stdout
    project.start()
    running = project.aiwg("daemon", "status")
    assert running.returncode == 0, running.stderr
    assert f"running (pid {project.pid()})" in running.stdout
    assert "health:" in running.stdout
    as_json = json.loads(project.aiwg("daemon", "status", "--json", check=True).stdout)
    assert as_json["running"] is True
    assert as_json["pid"] == project.pid()
    assert as_json["health"] == "healthy"
    assert as_json["clients"] == 1  # the status call itself
    assert {"ipc", "heartbeat", "events"} <= set(as_json["subsystems"])
    project.aiwg("daemon", "stop", check=True)
    assert project.aiwg("daemon", "status").returncode == 3


def test_ping_exit_codes(project: Project) -> None:
    missing = project.aiwg("daemon", "ping")
    assert missing.returncode == EXIT_NOT_RUNNING
    assert "no daemon is running for" in missing.stderr
    assert "aiwg daemon start" in missing.stderr
    project.start()
    answered = project.aiwg("daemon", "ping", "--json", check=True)
    assert json.loads(answered.stdout)["pong"] is True


def test_stale_pid_file_naming_a_live_foreign_process_does_not_block_start(project: Project) -> None:
    project.paths.aiwg_dir.mkdir()
    # pid 1 is alive and is certainly not our daemon.
    project.paths.pid_file.write_text("1\n")
    status = project.aiwg("daemon", "status")
    assert status.returncode == 3
    assert "stale pid file" in status.stdout
    pid = project.start()
    assert pid != 1
    assert project.paths.pid_file.read_text().strip() == str(pid)


def test_stale_pid_file_naming_a_dead_process_does_not_block_start(project: Project) -> None:
    project.paths.aiwg_dir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    project.paths.pid_file.write_text(f"{dead.pid}\n")
    project.start()


def test_kill_9_then_start(daemon: Project) -> None:
    pid = daemon.pid()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid))
    # The lock file and the socket file are still there; neither blocks the next start.
    assert daemon.paths.lock_file.exists()
    assert daemon.paths.default_socket.exists()
    new_pid = daemon.start()
    assert new_pid != pid
    with daemon.client(timeout=5) as client:
        assert client.call("ping")["pid"] == new_pid


def test_bad_config_fails_fast_naming_the_key_and_leaves_nothing(project: Project) -> None:
    project.write_config('{"daemon": {"max_parallel_actions": "three"}}')
    started = time.monotonic()
    result = project.aiwg("daemon", "start")
    assert time.monotonic() - started < 10
    assert result.returncode == EXIT_NOT_CONFIGURED
    assert "daemon.max_parallel_actions: must be an integer ≥ 1 and ≤ 256, got 'three'" in result.stderr
    assert not project.running()
    assert not project.paths.pid_file.exists()
    assert not project.paths.default_socket.exists()


def test_invalid_json_config_fails_with_position(project: Project) -> None:
    project.write_config('{"daemon": {"max_parallel_actions": 3,}}')
    result = project.aiwg("daemon", "start")
    assert result.returncode == EXIT_NOT_CONFIGURED
    assert "not valid JSON" in result.stderr and "line 1" in result.stderr


def test_unusable_socket_path_fails_and_leaves_nothing(project: Project) -> None:
    daemon_dir = project.paths.daemon_dir
    daemon_dir.mkdir(parents=True)
    # A directory where the socket must go: bind() fails.
    project.paths.default_socket.mkdir()
    result = project.aiwg("daemon", "start")
    assert result.returncode != 0
    assert "daemon.sock" in result.stderr
    assert not project.running()
    assert not project.paths.pid_file.exists()
    assert "start failed" in project.log_text()


def test_missing_explicit_config_file_is_an_error(project: Project) -> None:
    result = project.aiwg("daemon", "start", "--config", "nope.json")
    assert result.returncode == EXIT_NOT_CONFIGURED
    assert "nope.json" in result.stderr and "file not found" in result.stderr


def test_config_profile_is_used(project: Project) -> None:
    project.write_config('{"daemon": {"heartbeat_interval_seconds": 30}}')
    (project.paths.aiwg_dir / "daemon.dev.json").write_text(
        '{"daemon": {"heartbeat_interval_seconds": 7}}'
    )
    project.start("--config", ".aiwg/daemon.dev.json")
    with project.client() as client:
        status = client.call("daemon.status")
    assert status["config"]["path"].endswith("daemon.dev.json")
    assert status["subsystems"]["heartbeat"]["interval_seconds"] == 7


def test_concurrent_starts_leave_exactly_one_daemon(project: Project) -> None:
    results: list[subprocess.CompletedProcess[str]] = []

    def start() -> None:
        results.append(project.aiwg("daemon", "start"))

    threads = [threading.Thread(target=start) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0] * 5, [r.stderr for r in results]
    pid = project.pid()
    started = [r for r in results if "started (pid" in r.stdout]
    already = [r for r in results if "already running" in r.stdout]
    assert len(started) == 1
    assert len(already) == 4
    assert all(f"pid {pid}" in r.stdout for r in results)
    # Exactly one aiwg daemon process for this project.
    # The losers' daemon processes exit right after reporting.
    wait_for(lambda: _daemons_of(project.root) == [pid])


def _daemons_of(root: Path) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_daemon_of(int(p), root)]


def _is_daemon_of(pid: int, root: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return any(b"aiwg" in part for part in cmdline) and cwd == str(root) and alive(pid)


def test_long_project_path_binds_in_the_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep)) >= 150
    runtime = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short, as real ones are
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))  # for this process's own path lookups
    project = Project(deep, runtime)
    try:
        project.start()
        socket_path = project.paths.bind_socket()
        assert socket_path.parent == runtime / "aiwg"
        assert len(os.fsencode(socket_path)) <= 107
        assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
        assert stat.S_IMODE(os.stat(socket_path.parent).st_mode) == 0o700
        assert project.paths.socket_pointer.read_text().strip() == str(socket_path)
        # Clients find it the same way, through the CLI too.
        assert project.aiwg("daemon", "ping").returncode == 0
        assert project.aiwg("daemon", "status").returncode == 0
        # Without XDG_RUNTIME_DIR a client still finds it, through the pointer file.
        env = dict(project.env)
        env.pop("XDG_RUNTIME_DIR")
        assert project.aiwg("daemon", "ping", env=env).returncode == 0
        project.aiwg("daemon", "stop", check=True)
        assert not socket_path.exists()
        assert not project.paths.socket_pointer.exists()
    finally:
        if project.running():
            project.kill_everything()
        shutil.rmtree(runtime, ignore_errors=True)


def test_socket_env_override_is_honoured(daemon: Project, tmp_path: Path) -> None:
    link = tmp_path / "forwarded.sock"
    os.symlink(daemon.paths.default_socket, link)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(daemon.env, AIWG_DAEMON_SOCKET=str(link))
    result = subprocess.run(
        [str(Path(os.sys.executable).parent / "aiwg"), "daemon", "ping"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert f"pid {daemon.pid()}" in result.stdout
    dead = dict(env, AIWG_DAEMON_SOCKET=str(tmp_path / "nobody.sock"))
    status = subprocess.run(
        [str(Path(os.sys.executable).parent / "aiwg"), "daemon", "status"],
        cwd=elsewhere, env=dead, capture_output=True, text=True, timeout=30,
    )
    assert status.returncode == 3
    assert f"nothing answers on {tmp_path / 'nobody.sock'} (from $AIWG_DAEMON_SOCKET)" in status.stdout


def test_modes_of_socket_and_directories(daemon: Project) -> None:
    paths = daemon.paths
    assert stat.S_IMODE(os.stat(paths.default_socket).st_mode) == 0o600
    for directory in (paths.daemon_dir, paths.actions_dir, paths.events_dir):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory


def test_heartbeat_and_state_files(daemon: Project) -> None:
    pid = daemon.pid()
    heartbeat = json.loads(daemon.paths.heartbeat_file.read_text())
    assert heartbeat["pid"] == pid
    assert heartbeat["timestamp"].endswith("Z")
    assert isinstance(heartbeat["uptime_seconds"], int)
    state = json.loads(daemon.paths.state_file.read_text())
    for key in ("pid", "started_at", "last_heartbeat", "uptime_seconds", "restart_count",
                "ipc", "monitors", "automation", "health"):
        assert key in state, key
    assert state["status"] == "running"
    assert state["ipc"]["socket"] == str(daemon.paths.default_socket)
    assert state["health"]["status"] == "healthy"


def test_sighup_reload_good_and_bad_config(daemon: Project) -> None:
    pid = daemon.pid()
    daemon.write_config('{"daemon": {"heartbeat_interval_seconds": 12}}')
    os.kill(pid, signal.SIGHUP)

    def interval() -> float:
        with daemon.client() as client:
            return client.call("daemon.status")["subsystems"]["heartbeat"]["interval_seconds"]

    wait_for(lambda: interval() == 12)
    assert "configuration reloaded" in daemon.log_text()

    daemon.write_config('{"daemon": {"heartbeat_interval_seconds": -1}}')
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: "reload refused" in daemon.log_text())
    assert "daemon.heartbeat_interval_seconds: must be a number ≥ 1" in daemon.log_text()
    assert interval() == 12
    assert daemon.pid() == pid


def test_reload_over_ipc_and_cli(daemon: Project) -> None:
    daemon.write_config('{"daemon": {"log": {"level": "debug"}}, "typo_key": 1}')
    result = daemon.aiwg("daemon", "reload", "--json", check=True)
    body = json.loads(result.stdout)
    assert body["reloaded"] is True
    assert "daemon.log" in body["changed"]
    assert any("typo_key" in w for w in body["warnings"])
    daemon.write_config('{"daemon": {"log": {"level": "loud"}}}')
    refused = daemon.aiwg("daemon", "reload")
    assert refused.returncode == EXIT_NOT_CONFIGURED
    assert "reload refused, the daemon keeps its configuration" in refused.stderr
    assert "daemon.log.level: must be one of" in refused.stderr


def test_logs_command(daemon: Project) -> None:
    result = daemon.aiwg("daemon", "logs", "-n", "5", check=True)
    lines = result.stdout.strip().splitlines()
    assert 0 < len(lines) <= 5
    assert any("daemon started" in line for line in lines)
    follower = subprocess.Popen(
        [str(Path(os.sys.executable).parent / "aiwg"), "daemon", "logs", "-f", "-n", "0"],
        cwd=daemon.root, env=daemon.env, stdout=subprocess.PIPE, text=True,
    )
    try:
        # The follower may not have reached the end of the file yet: keep making
        # new lines (bounded) until one of them shows up in its output.
        assert follower.stdout is not None
        os.set_blocking(follower.stdout.fileno(), False)
        daemon.write_config('{"daemon": {"heartbeat_interval_seconds": 9}}')
        seen = ""
        deadline = time.monotonic() + 15
        while "configuration reloaded" not in seen and time.monotonic() < deadline:
            daemon.aiwg("daemon", "reload", check=True)
            poll_until = time.monotonic() + 0.5
            while time.monotonic() < poll_until and "configuration reloaded" not in seen:
                try:
                    seen += os.read(follower.stdout.fileno(), 65536).decode()
                except BlockingIOError:
                    time.sleep(0.02)  # polling interval, bounded by poll_until
        assert "configuration reloaded" in seen
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_daemon_stop_rpc(daemon: Project) -> None:
    pid = daemon.pid()
    with daemon.client() as client:
        assert client.call("daemon.stop") == {"stopping": True, "pid": pid}
    wait_for(lambda: not alive(pid))
    assert not daemon.running()


def test_twistd_directly_and_stopped_by_its_pid_file(project: Project, tmp_path: Path) -> None:
    pidfile = tmp_path / "twistd.pid"
    logfile = tmp_path / "twistd.log"
    result = subprocess.run(
        [TWISTD, "--pidfile", str(pidfile), "--logfile", str(logfile), "aiwg",
         "--project", str(project.root)],
        cwd=tmp_path, env=project.env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    pid = int(pidfile.read_text())
    assert project.pid() == pid
    with project.client() as client:
        assert client.call("ping")["pid"] == pid
    os.kill(int(pidfile.read_text()), signal.SIGTERM)
    wait_for(lambda: not alive(pid))
    assert not pidfile.exists()
    assert not project.paths.pid_file.exists()
    assert "daemon stopped" in project.log_text()


def test_twistd_nodaemon_runs_in_the_foreground(project: Project) -> None:
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "aiwg", "--project", str(project.root)],
        cwd=project.root, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: project.running() and project.aiwg("daemon", "ping").returncode == 0)
        assert project.pid() == process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    # twistd ends by re-raising the signal that stopped it (systemd counts that as clean).
    assert process.returncode in (0, -signal.SIGTERM)


def test_foreground_start_logs_to_stdout_and_stops_on_sigterm(project: Project) -> None:
    process = subprocess.Popen(
        [str(Path(os.sys.executable).parent / "aiwg"), "daemon", "start", "--foreground"],
        cwd=project.root, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: project.running() and project.aiwg("daemon", "ping").returncode == 0)
        assert project.pid() == process.pid  # no wrapper process in between
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "daemon started" in out and "daemon stopped" in out
    assert not project.paths.log_file.exists()


def test_restart(daemon: Project) -> None:
    old = daemon.pid()
    result = daemon.aiwg("daemon", "restart", check=True)
    assert "stopped" in result.stdout and "started" in result.stdout
    assert daemon.pid() != old


def test_project_option_from_elsewhere(project: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = project.env
    run = lambda *a: subprocess.run(  # noqa: E731
        [str(Path(os.sys.executable).parent / "aiwg"), *a], cwd=elsewhere, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert run("daemon", "start", "--project", str(project.root)).returncode == 0
    assert run("--project", str(project.root), "daemon", "ping").returncode == 0
    assert run("daemon", "status", "--project", str(project.root)).returncode == 0
    assert run("daemon", "stop", "--project", str(project.root)).returncode == 0
    assert ProjectPaths(project.root).pid_file.exists() is False
    assert instance.holder(project.paths) is None


def test_restart_with_a_bad_config_leaves_the_running_daemon_alone(daemon: Project) -> None:
    pid = daemon.pid()
    daemon.write_config('{"daemon": {"max_parallel_actions": 0}}')
    result = daemon.aiwg("daemon", "restart")
    assert result.returncode == EXIT_NOT_CONFIGURED
    assert "running daemon is untouched" in result.stderr
    assert daemon.pid() == pid
    daemon.write_config("{}")
    as_json = daemon.aiwg("daemon", "restart", "--json", check=True)
    body = json.loads(as_json.stdout)  # one document, not one per step
    assert body["started"] is True and body["pid"] == daemon.pid() != pid


def test_restart_count_counts_unclean_exits_only(project: Project) -> None:
    def count() -> int:
        return json.loads(project.paths.state_file.read_text())["restart_count"]

    project.start()
    assert count() == 0
    project.aiwg("daemon", "stop", check=True)
    project.start()
    assert count() == 0
    os.kill(project.pid(), signal.SIGKILL)
    wait_for(lambda: not project.running())
    project.start()
    assert count() == 1


def test_ping_names_a_daemon_that_holds_the_lock_but_lost_its_socket(daemon: Project) -> None:
    socket_path = daemon.paths.default_socket
    socket_path.unlink()
    socket_path.write_text("in the way")  # not ours: the daemon leaves it alone
    result = daemon.aiwg("daemon", "ping")
    assert result.returncode == 1
    assert f"the daemon (pid {daemon.pid()}) holds the lock" in result.stderr
    assert daemon.aiwg("daemon", "status").returncode == 4
    listed = daemon.aiwg("task", "list")
    assert listed.returncode != 0
    assert f"the daemon (pid {daemon.pid()})" in listed.stderr and str(socket_path) in listed.stderr
    socket_path.unlink()  # out of the way: the daemon binds again
    wait_for(lambda: daemon.aiwg("daemon", "ping").returncode == 0, timeout=15)
    assert "socket" in daemon.paths.log_file.read_text()


def test_a_deleted_socket_is_bound_again(daemon: Project) -> None:
    pid = daemon.pid()
    daemon.paths.default_socket.unlink()
    pong = wait_for(lambda: (r := daemon.aiwg("daemon", "ping", "--json")).returncode == 0 and r, timeout=15)
    assert json.loads(pong.stdout)["pid"] == pid
    assert "was deleted while the daemon ran; listening on it again" in daemon.paths.log_file.read_text()
    assert daemon.aiwg("daemon", "status", "--json", check=True)
    stopped = daemon.aiwg("daemon", "stop", check=True)
    assert f"stopped (pid {pid})" in stopped.stdout
    assert not daemon.paths.default_socket.exists()
    assert "Traceback" not in daemon.paths.log_file.read_text()


def test_nothing_deleted_under_a_daemon_lets_a_second_one_start(daemon: Project, tmp_path: Path) -> None:
    pid = daemon.pid()
    for name in (daemon.paths.lock_file, daemon.paths.pid_file, daemon.paths.default_socket):
        name.unlink()
    # twistd directly: the daemon itself refuses, not only the CLI's check before it
    direct = subprocess.run(
        [TWISTD, "--pidfile", "", "-n", "aiwg", "--project", str(daemon.root)],
        cwd=tmp_path, env=daemon.env, capture_output=True, text=True, timeout=60,
    )
    assert direct.returncode != 0
    assert "already running" in direct.stdout + direct.stderr
    again = daemon.aiwg("daemon", "start")
    assert again.returncode == 0, again.stderr
    assert f"already running (pid {pid})" in again.stdout
    wait_for(lambda: daemon.aiwg("daemon", "ping").returncode == 0, timeout=15)
    assert json.loads(daemon.aiwg("daemon", "ping", "--json", check=True).stdout)["pid"] == pid
    shutil.rmtree(daemon.paths.daemon_dir)  # everything in .aiwg/daemon at once
    assert daemon.aiwg("daemon", "start").returncode == 0
    wait_for(lambda: instance.holder(daemon.paths) == pid and daemon.aiwg("daemon", "ping").returncode == 0,
              timeout=15)
    status = json.loads(daemon.aiwg("daemon", "status", "--json").stdout)
    assert status["health"] == "degraded"
    assert any("tasks.db was deleted while the daemon ran" in issue for issue in status["health_issues"])
    stopped = daemon.aiwg("daemon", "stop", check=True)
    assert f"stopped (pid {pid})" in stopped.stdout
    assert not alive(pid)
    assert daemon.aiwg("daemon", "status").returncode == 3


def test_a_deleted_project_directory_stops_its_daemon(daemon: Project) -> None:
    pid = daemon.pid()
    shutil.rmtree(daemon.root)
    daemon.root.mkdir()  # a new project where the old one was
    wait_for(lambda: not alive(pid), timeout=30)
    assert not (daemon.root / ".aiwg").exists()  # nothing planted in the new one
    assert daemon.aiwg("daemon", "status").returncode == 3


def test_a_foreign_flock_on_the_project_directory_is_named(project: Project) -> None:
    holder = subprocess.Popen(["flock", "-x", str(project.root), "sleep", "60"], start_new_session=True)
    try:
        wait_for(lambda: instance.holder(project.paths) == 0)
        result = project.aiwg("daemon", "start")
        assert result.returncode == 1
        assert f"the project directory {project.root} is locked" in result.stderr
        assert "fuser -v" in result.stderr
        assert project.aiwg("daemon", "stop").returncode == 1  # and no pid is signalled
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and the sleep that shares its lock
        holder.wait()
    wait_for(lambda: instance.holder(project.paths) is None)
    assert project.aiwg("daemon", "start").returncode == 0


def test_a_deleted_lock_file_does_not_let_a_second_daemon_start(daemon: Project) -> None:
    pid = daemon.pid()
    daemon.paths.lock_file.unlink()
    status = daemon.aiwg("daemon", "status")  # before the daemon puts the file back
    assert status.returncode == 0 and f"running (pid {pid})" in status.stdout
    again = daemon.aiwg("daemon", "start")
    assert again.returncode == 0, again.stderr
    assert f"already running (pid {pid})" in again.stdout
    assert json.loads(daemon.aiwg("daemon", "ping", "--json", check=True).stdout)["pid"] == pid
    wait_for(lambda: daemon.paths.lock_file.exists() and instance.holder(daemon.paths) == pid, timeout=15)
    wait_for(lambda: "created and locked it again" in daemon.paths.log_file.read_text())
    assert "created and locked it again" in daemon.paths.log_file.read_text()
    daemon.paths.pid_file.unlink()
    wait_for(lambda: instance.read_pid_file(daemon.paths) == pid, timeout=15)
    stopped = daemon.aiwg("daemon", "stop", check=True)
    assert f"stopped (pid {pid})" in stopped.stdout
    assert not alive(pid)


def test_nan_in_the_config_is_refused_as_invalid_json(project: Project) -> None:
    project.write_config('{"daemon": {"heartbeat_interval_seconds": NaN}}')
    result = project.aiwg("daemon", "start")
    assert result.returncode == EXIT_NOT_CONFIGURED
    assert "not valid JSON: NaN is not a JSON value" in result.stderr


def test_losing_starts_leave_the_winners_log_alone(project: Project) -> None:
    threads = [threading.Thread(target=lambda: project.aiwg("daemon", "start")) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = project.log_text().splitlines()
    assert sum("daemon started" in line for line in lines) == 1
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
    assert all(stamp.match(line) or line.startswith("    ") for line in lines), lines


def test_a_failed_start_leaves_no_heartbeat(project: Project) -> None:
    project.paths.daemon_dir.mkdir(parents=True)
    project.paths.default_socket.mkdir()  # bind fails after the heartbeat could have run
    assert project.aiwg("daemon", "start").returncode != 0
    assert not project.paths.heartbeat_file.exists()


def test_json_errors_are_json_on_stdout(project: Project) -> None:
    for args in (["--json", "daemon", "ping"], ["daemon", "ping", "--json"], ["daemon", "reload", "--json"]):
        result = project.aiwg(*args)
        assert result.returncode == EXIT_NOT_RUNNING
        body = json.loads(result.stdout)
        assert body["exit_code"] == EXIT_NOT_RUNNING and "no daemon is running" in body["error"]


@pytest.mark.parametrize("args, says", [
    (["--json", "task", "submit"], "Missing argument 'PROMPT'."),
    (["task", "list", "--state", "bogus", "--json"], "Invalid value for '--state'"),
    (["--json", "daemon", "nonsense"], "No such command 'nonsense'."),
    (["task", "submit", "x", "--priority", "abc", "--json"], "Invalid value for '--priority'"),
])
def test_usage_errors_are_json_on_stdout_too(project: Project, args: list[str], says: str) -> None:
    result = project.aiwg(*args)
    assert result.returncode == 2 and says in result.stderr
    body = json.loads(result.stdout)
    assert body["exit_code"] == 2 and body["error"].startswith(says)


def test_tmux_with_foreground_is_refused_even_when_a_daemon_runs(daemon: Project) -> None:
    result = daemon.aiwg("daemon", "start", "--tmux", "--foreground")
    assert result.returncode == 2 and "drop --foreground" in result.stderr
    assert "already running" not in result.stdout + result.stderr


def test_a_client_that_never_reads_is_cut_off_and_the_daemon_lives_on(daemon: Project) -> None:
    import socket as socketlib

    sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    sock.connect(str(daemon.paths.default_socket))
    sock.settimeout(20)
    request = b'{"jsonrpc":"2.0","method":"rpc.discover","id":1}\n' * 200
    closed = False
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            sock.sendall(request)
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    finally:
        sock.close()
    assert closed, "the daemon kept buffering replies for a client that never reads"
    assert "does not read its replies" in daemon.log_text()
    assert daemon.aiwg("daemon", "ping").returncode == 0


@pytest.mark.parametrize("daemon_section, key", [
    ({"heartbeat_interval_seconds": 1e-300}, "daemon.heartbeat_interval_seconds"),
    ({"task_output_max_mb": 1e308}, "daemon.task_output_max_mb"),
    ({"ipc": {"max_line_bytes": 1e20}}, "daemon.ipc.max_line_bytes"),
], ids=["heartbeat", "output-cap", "line-limit"])
def test_an_absurd_number_is_refused_at_start_and_at_reload_naming_the_key(
        project: Project, daemon_section: dict, key: str) -> None:
    project.write_config(json.dumps({"daemon": daemon_section}))
    started = project.aiwg("daemon", "start")
    assert started.returncode == 6 and key in started.stderr and not project.running()
    project.write_config("{}")
    project.start()
    with project.client() as client:
        before = client.call("daemon.status")["config"]["hash"]
    project.write_config(json.dumps({"daemon": daemon_section}))
    reloaded = project.aiwg("daemon", "reload")
    assert reloaded.returncode == 6 and key in reloaded.stderr
    with project.client() as client:
        status = client.call("daemon.status")
    assert status["config"]["hash"] == before and status["config"]["reloads"] == 0
