"""The Celery executor end to end, with real parts: a real redis-server started
here, two real `aiwg worker` processes (each in a directory and environment of
its own, standing in for other machines), a bare git repository as git_remote,
the real daemon and the fake agent. Remote tasks run on the workers, their
branches come back and merge; output streams live; cancel, a killed worker, a
killed daemon and an unreachable broker each end as the issue says."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from aiwg.core import agents
from aiwg.core.config import validate
from tests.conftest import Project, alive, install_fake_claude, wait_for
from tests.e2e.test_isolation import git

pytestmark = pytest.mark.e2e

AIWG = str(Path(sys.executable).with_name("aiwg"))
AGENT_SETTINGS = agents.settings_from_config(validate({"agent": {"output": "claude-json"}}, "t").data["agent"])
REDIS = shutil.which("redis-server")
FINISHED = ("completed", "failed", "timeout", "cancelled", "rejected")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if REDIS is None:
        pytest.fail("redis-server is not installed (.ci/run installs it: apt-get install redis-server)")
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    server = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_for(up, timeout=10)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=10)


class Workers:
    def __init__(self, base: Path, broker: str) -> None:
        self.base = base
        self.broker = broker
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.fakes: dict[str, Any] = {}

    def start(self, name: str, concurrency: int = 2) -> subprocess.Popen[bytes]:
        home = self.base / name
        home.mkdir(exist_ok=True)
        fake = install_fake_claude(home)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIWG_", "GIT_"))}
        env.pop("CLAUDECODE", None)
        env.update(PATH=f"{fake.bin_dir}:{env.get('PATH', os.defpath)}", FAKE_CLAUDE_RECORDS=str(fake.records),
                   HOME=str(home), WORKER_SECRET="worker-only-secret-value")
        log = open(home / "worker.log", "wb")
        proc = subprocess.Popen([AIWG, "worker", "--broker", self.broker, "--concurrency", str(concurrency),
                                 "--cache", str(home / "cache"), "--name", f"{name}@test"],
                                cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name], self.fakes[name] = proc, fake
        return proc

    def runs(self) -> list[dict[str, Any]]:
        return [dict(run, worker=name) for name, fake in self.fakes.items() for run in fake.runs()]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def remote_project(project: Project, broker: str, extra: dict[str, Any] | None = None, **celery: Any) -> Path:
    """A repository, a bare git_remote beside it, and the executor configured."""
    remote = project.root.parent / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    (project.root / "shared.txt").write_text("base\n")
    (project.root / ".gitignore").write_text("*.log\n")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "start")
    config = {"daemon": {"kill_grace_seconds": 0.5, "shutdown_grace_seconds": 1},
              "agent": {"output": "claude-json", "env": {"API_TOKEN": "${WORKER_SECRET}"}},
              "executors": {"celery": {"broker": "${TEST_BROKER}", "git_remote": str(remote), **celery}},
              **(extra or {})}
    project.write_config(json.dumps(config))
    project.env["TEST_BROKER"] = broker
    return remote


@pytest.fixture
def workers(tmp_path: Path, redis_url: str) -> Iterator[Workers]:
    pool = Workers(tmp_path / "workers", redis_url)
    pool.base.mkdir()
    yield pool
    pool.stop()


def submit(project: Project, prompt: str, *extra: str) -> str:
    out = project.aiwg("task", "submit", prompt, "--executor", "celery", *extra, "--json", check=True)
    return str(json.loads(out.stdout)["taskId"])


def get(project: Project, task_id: str) -> dict[str, Any]:
    return dict(json.loads(project.aiwg("task", "get", task_id, "--json", check=True).stdout))


def ended(project: Project, task_id: str, timeout: float = 60) -> dict[str, Any]:
    return dict(wait_for(lambda: (r := get(project, task_id))["state"] in FINISHED and r, timeout=timeout))


def workers_seen(project: Project, count: int) -> None:
    def seen() -> bool:
        out = project.aiwg("executors", "--json")
        return out.returncode == 0 and len(json.loads(out.stdout)["remote"]["celery"]["workers"]) >= count

    wait_for(seen, timeout=30, interval=0.2)


def with_one_worker(project: Project, workers: Workers, extra: dict[str, Any] | None = None) -> Any:
    """The project with the executor configured, worker w1 started, the daemon
    started and w1 seen by it; w1's process."""
    remote_project(project, workers.broker, extra)
    worker = workers.start("w1")
    project.start()
    workers_seen(project, 1)
    return worker


def test_tasks_run_on_two_workers_and_their_branches_merge(project: Project, workers: Workers) -> None:
    remote_project(project, workers.broker)
    workers.start("w1")
    workers.start("w2")
    project.start()
    workers_seen(project, 2)
    ids = [submit(project, f"@write:file{i}.txt=from-task-{i} @sleep:1 @env:API_TOKEN") for i in range(4)]
    records = [ended(project, task_id) for task_id in ids]
    assert [r["state"] for r in records] == ["completed"] * 4, records
    runs = workers.runs()
    assert len(runs) == 4
    assert {run["worker"] for run in runs} == {"w1", "w2"}  # both took work
    for run in runs:
        assert str(workers.base) in run["cwd"] and str(project.root) not in run["cwd"]
        assert "CLAUDECODE" not in run["env"] and run["stdin"] == "/dev/null"
        # a secret the task names is resolved from the worker's own environment
        assert run["env"]["API_TOKEN"] == "worker-only-secret-value"
        # and the command line is the local executor's
        assert run["argv"][1:] == agents.build_argv(AGENT_SETTINGS, run["prompt"])[1:]
    for index, record in enumerate(records):
        assert record["executor"] == "celery" and record["worker"] in ("w1@test", "w2@test")
        assert record["workspace"]["state"] == "open" and record["workspace"]["filesChanged"] == 1
        branch = record["workspace"]["branch"]
        assert git(project, "show", f"{branch}:file{index}.txt").strip() == f"from-task-{index}"
        # and its value never reaches the daemon: redacted on the worker
        output = Path(record["outputPath"]).read_text()
        assert "worker-only-secret-value" not in output and "[redacted]" in output
    assert not (project.root / "file0.txt").exists()  # untouched until merged
    project.aiwg("task", "merge", ids[0], check=True)
    assert (project.root / "file0.txt").read_text().strip() == "from-task-0"
    # git_remote keeps nothing of the tasks once their branches are home
    assert subprocess.run(["git", "-C", str(project.root.parent / "remote.git"), "for-each-ref"],
                          capture_output=True, text=True).stdout.strip() == ""
    shown = project.aiwg("daemon", "status", check=True).stdout
    assert "celery" in shown and "reachable; 2 worker(s), 4 slot(s)" in shown, shown
    text = project.aiwg("executors", check=True).stdout
    assert "celery: broker redis://127.0.0.1" in text and "reachable" in text and "worker w1@test" in text, text
    listed = json.loads(project.aiwg("worker", "--broker", workers.broker, "status", "--json", check=True).stdout)
    assert sorted(w["name"] for w in listed["workers"]) == ["w1@test", "w2@test"]
    events = [json.loads(line) for path in project.paths.events_dir.glob("*.jsonl")
              for line in path.read_text().splitlines()]
    started = [e for e in events if e["topic"] == "task:started" and e["payload"]["taskId"] in ids]
    assert all(e["payload"].get("worker") in ("w1@test", "w2@test") for e in started) and len(started) == 4


def test_follow_shows_live_output_of_a_remote_task(project: Project, workers: Workers) -> None:
    with_one_worker(project, workers)
    task_id = submit(project, "@print:3 @sleep:1.5 @stderr:to-stderr")
    follow = subprocess.Popen([AIWG, "task", "get", task_id, "--follow"], cwd=project.root, env=project.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    assert "filler" in out or "line" in out, out
    assert "to-stderr" in err
    assert get(project, task_id)["state"] == "completed"


def test_cancel_of_a_running_remote_task_leaves_nothing_on_the_worker(project: Project, workers: Workers) -> None:
    with_one_worker(project, workers)
    task_id = submit(project, "@grandchild @sleep:60")
    wait_for(lambda: get(project, task_id).get("worker"), timeout=30)
    fake = workers.fakes["w1"]
    wait_for(lambda: fake.grandchild_pids(), timeout=10)
    agent = fake.runs()[0]["pid"]
    grandchild = fake.grandchild_pids()[0]
    project.aiwg("task", "cancel", task_id, check=True)
    record = ended(project, task_id, timeout=30)
    assert record["state"] == "cancelled"
    wait_for(lambda: not alive(agent) and not alive(grandchild), timeout=10)


def test_a_killed_worker_fails_its_task_as_worker_lost(project: Project, workers: Workers) -> None:
    worker = with_one_worker(project, workers)
    task_id = submit(project, "@sleep:60")
    wait_for(lambda: get(project, task_id).get("worker"), timeout=30)
    agent = wait_for(lambda: workers.fakes["w1"].runs(), timeout=10)[0]["pid"]
    os.kill(worker.pid, signal.SIGKILL)
    record = ended(project, task_id, timeout=30)
    assert record["state"] == "failed" and "worker lost" in record["error"], record
    assert record["worker"] == "w1@test"
    # What the killed worker left running goes when a worker starts again on that machine.
    workers.start("w1")
    wait_for(lambda: not alive(agent), timeout=30)


def test_a_task_with_retries_is_queued_again_when_its_worker_is_lost(project: Project, workers: Workers) -> None:
    first = with_one_worker(project, workers)
    task_id = submit(project, "@write:out.txt=second-try @sleep:3", "--retries", "1")
    wait_for(lambda: get(project, task_id).get("worker") == "w1@test", timeout=30)
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: "worker lost" in project.log_text(), timeout=30)
    workers.start("w2")
    record = ended(project, task_id, timeout=60)
    assert record["state"] == "completed" and record["worker"] == "w2@test" and record["attempts"] == 2, record
    assert git(project, "show", f"{record['workspace']['branch']}:out.txt").strip() == "second-try"


def test_a_task_cancelled_before_a_worker_takes_it_never_runs(project: Project, workers: Workers) -> None:
    remote_project(project, workers.broker, max_in_flight=4)  # sent although no worker is there yet
    project.start()
    task_id = submit(project, "@write:never.txt=x")
    wait_for(lambda: get(project, task_id)["state"] == "running", timeout=30)
    project.aiwg("task", "cancel", task_id, check=True)
    assert ended(project, task_id)["state"] == "cancelled"
    workers.start("w1")
    workers_seen(project, 1)
    follower = submit(project, "after")  # once this one has run, the cancelled one was seen and skipped
    assert ended(project, follower)["state"] == "completed"
    assert [run["prompt"] for run in workers.runs()] == ["after"]


def test_a_daemon_killed_during_a_remote_task_reattaches_and_the_task_completes(
        project: Project, workers: Workers) -> None:
    remote_project(project, workers.broker)
    workers.start("w1")
    pid = project.start()
    workers_seen(project, 1)
    task_id = submit(project, "@write:late.txt=made-while-the-daemon-was-down @sleep:4")
    wait_for(lambda: get(project, task_id).get("worker"), timeout=30)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), timeout=10)
    remote = project.root.parent / "remote.git"

    def pushed() -> bool:  # the worker pushes the branch as the run ends, then reports it
        return subprocess.run(["git", "--git-dir", str(remote), "rev-parse", "--verify", "--quiet",
                               f"refs/heads/aiwg/{task_id}"], capture_output=True).returncode == 0

    wait_for(pushed, timeout=30, interval=0.1)  # the task ends while no daemon runs
    project.start()
    record = ended(project, task_id, timeout=30)
    assert record["state"] == "completed", record
    assert git(project, "show", f"{record['workspace']['branch']}:late.txt").strip() == "made-while-the-daemon-was-down"


def test_an_unreachable_broker_keeps_tasks_queued_with_a_reason(project: Project, tmp_path: Path) -> None:
    remote_project(project, f"redis://127.0.0.1:{free_port()}/0", connect_timeout_seconds=0.5)
    project.start()
    task_id = submit(project, "hello")

    def reason() -> str | None:
        return get(project, task_id).get("waitingFor")

    text = wait_for(lambda: (r := reason()) and "unreachable" in r and r, timeout=20)
    assert "broker redis://127.0.0.1" in text
    assert get(project, task_id)["state"] == "queued"
    status = json.loads(project.aiwg("daemon", "status", "--json", check=True).stdout)
    assert status["health"] == "degraded"
    assert any("executor celery" in issue and "unreachable" in issue for issue in status["health_issues"])


def test_a_daemon_without_executors_imports_no_celery(daemon: Project) -> None:
    status = json.loads(daemon.aiwg("daemon", "status", "--json", check=True).stdout)
    assert status["subsystems"]["supervisor"]["executors"] == {"default": "local", "remote": {}}
    code = ("import sys, aiwg.daemon.tap, aiwg.daemon.tasks.supervisor, aiwg.daemon.executors.registry; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'redis')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_an_unknown_executor_is_refused_naming_the_parameter(daemon: Project) -> None:
    out = daemon.aiwg("task", "submit", "x", "--executor", "celery")
    assert out.returncode != 0 and "executor" in out.stderr and "not configured" in out.stderr


def test_the_worker_enforces_the_timeout_and_clears_the_group(project: Project, workers: Workers) -> None:
    with_one_worker(project, workers)
    task_id = submit(project, "@grandchild @sleep:60", "--timeout", "0.05")  # 3 s
    record = ended(project, task_id, timeout=60)
    assert record["state"] == "timeout" and record["worker"] == "w1@test", record
    run = workers.fakes["w1"].runs()[0]
    grandchild = workers.fakes["w1"].grandchild_pids()[0]
    wait_for(lambda: not alive(run["pid"]) and not alive(grandchild), timeout=10)


def test_a_rules_action_names_the_executor(project: Project, workers: Workers) -> None:
    rule = {"id": "on-deploy", "trigger": {"type": "event", "topic": "deploy:done"},
            "action": {"type": "submit_task", "prompt": "@write:deployed.txt=yes check the deploy",
                       "executor": "celery"}}
    with_one_worker(project, workers, extra={"rules": [rule]})
    project.aiwg("event", "emit", "deploy:done", check=True)
    listed = wait_for(lambda: json.loads(project.aiwg("task", "list", "--json", check=True).stdout), timeout=20)
    record = ended(project, listed[0]["id"])
    assert record["state"] == "completed" and record["source"] == "rule:on-deploy" and record["worker"] == "w1@test"
    assert git(project, "show", f"{record['workspace']['branch']}:deployed.txt").strip() == "yes"


def test_a_worker_with_an_unusable_broker_says_which_and_exits_6(tmp_path: Path) -> None:
    done = subprocess.run([AIWG, "worker", "--broker", "amqp://guest:secret@h//", "--cache", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 6
    assert "--broker amqp://guest:***@h//" in done.stderr and "redis://" in done.stderr
    assert "secret" not in done.stderr


@pytest.fixture
def tls_redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server that speaks TLS only and wants a password, with a CA of our own."""
    if REDIS is None or shutil.which("openssl") is None:
        pytest.fail("redis-server and openssl are needed (.ci/run installs redis-server)")
    tls = tmp_path / "tls"
    tls.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tls, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=aiwg test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")
    (tls / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    port = free_port()
    server = subprocess.Popen([REDIS, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                               "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
                               "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no",
                               "--requirepass", "broker-password", "--save", "", "--appendonly", "no"],
                              cwd=tls, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        wait_for(listening, timeout=10)
        yield (f"rediss://:broker-password@127.0.0.1:{port}/0"
               f"?ssl_cert_reqs=required&ssl_ca_certs={tls / 'ca.crt'}")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_tls_broker_with_a_password_works_and_the_password_is_never_shown(
        project: Project, tmp_path: Path, tls_redis_url: str) -> None:
    remote_project(project, tls_redis_url)  # the URL, password and all, through ${TEST_BROKER}
    pool = Workers(tmp_path / "tls-workers", tls_redis_url)
    pool.base.mkdir()
    try:
        pool.start("w1")
        project.start()
        workers_seen(project, 1)
        record = ended(project, submit(project, "@write:tls.txt=over-tls"))
        assert record["state"] == "completed" and record["worker"] == "w1@test"
        assert git(project, "show", f"{record['workspace']['branch']}:tls.txt").strip() == "over-tls"
        shown = project.aiwg("daemon", "status", "--json", check=True).stdout
        assert "broker-password" not in shown and "rediss://:***@127.0.0.1" in shown
        assert "broker-password" not in project.log_text()
    finally:
        pool.stop()
    assert "broker-password" not in (pool.base / "w1" / "worker.log").read_text()
