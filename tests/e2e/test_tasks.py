"""Tasks end to end: a real daemon running the fake claude through the real CLI and socket."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from aiwg.errors import INVALID_PARAMS, RpcError
from tests.conftest import AIWG, Project, alive, wait_for

pytestmark = pytest.mark.e2e

FAST = {"daemon": {"kill_grace_seconds": 0.5, "shutdown_grace_seconds": 1}}


def configure(project: Project, **daemon: Any) -> None:
    settings = {**FAST["daemon"], **daemon}
    project.write_config(json.dumps({"daemon": settings}))


def submit(project: Project, prompt: str, **params: Any) -> str:
    with project.client() as client:
        return client.call("task.submit", prompt=prompt, **params)["taskId"]


def get(project: Project, task_id: str) -> dict[str, Any]:
    with project.client() as client:
        return client.call("task.get", taskId=task_id)


def wait_state(project: Project, task_id: str, *states: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(lambda: (t := get(project, task_id))["state"] in states and t, timeout=timeout)


def test_completed_task_records_result_session_and_cost(project: Project) -> None:
    configure(project)
    project.start()
    task_id = submit(project, "say hi @print:2 @session:abc @cost:0.25")
    record = wait_state(project, task_id, "completed")
    assert record["exitCode"] == 0 and record["error"] is None
    assert record["result"] == "done: say hi @print:2 @session:abc @cost:0.25"
    assert record["sessionId"] == "abc" and record["costUsd"] == 0.25
    assert "filler output line" in record["output"]
    assert record["duration"] is not None and record["attempts"] == 1
    log = Path(record["outputPath"]).read_text()
    assert log.count("filler output line") == 2
    assert Path(record["outputPath"]).parent == project.paths.actions_dir


def test_failed_task_keeps_exit_code_and_stderr(project: Project) -> None:
    configure(project)
    project.start()
    task_id = submit(project, "break @exit:3 @stderr:kaboom")
    record = wait_state(project, task_id, "failed")
    assert record["exitCode"] == 3
    assert record["error"] == "agent exited with code 3: kaboom"
    error_result = submit(project, "oops @error")
    assert wait_state(project, error_result, "failed")["error"].startswith("agent reported an error")


def test_agent_runs_in_project_root_with_devnull_stdin_own_group_and_clean_env(project: Project) -> None:
    configure(project)
    project.env["CLAUDECODE"] = "1"
    project.env["CLAUDE_CODE_ENTRYPOINT"] = "cli"
    project.start()
    task_id = submit(project, "inspect @sleep:0.2")
    wait_state(project, task_id, "completed")
    [run] = project.fake.runs()
    assert run["cwd"] == str(project.root)
    assert run["stdin"] == "/dev/null"
    assert run["pgid"] == run["pid"] and run["sid"] == run["pid"]
    assert "CLAUDECODE" not in run["env"] and "CLAUDE_CODE_ENTRYPOINT" not in run["env"]
    assert run["argv"][1:] == ["-p", "--output-format", "json", "--", "inspect @sleep:0.2"]


@pytest.mark.parametrize(
    "prompt",
    [
        'He said "hi" and \'bye\'',
        "line one\nline two\n\ttabbed",
        "$(touch /tmp/aiwg-pwned) `id` ; rm -rf / && echo | cat",
        "naïve café — 日本語 ✓ 🚀",
        "--looks-like-a-flag",
        "--dangerously-skip-permissions",
    ],
    ids=["quotes", "newlines", "shell-metacharacters", "non-ascii", "leading-dashes", "an-agent-option"],
)
def test_prompts_reach_argv_unchanged(project: Project, prompt: str) -> None:
    configure(project)
    project.start()
    task_id = submit(project, prompt)
    wait_state(project, task_id, "completed", "failed")
    [run] = project.fake.runs()
    # After every option and `--`: the agent reads it as the prompt, never as an option.
    assert run["argv"][1:] == ["-p", "--output-format", "json", "--", prompt]
    assert run["prompt"] == prompt
    assert not Path("/tmp/aiwg-pwned").exists()


@pytest.mark.parametrize("template", [
    {"command": ["codex", "exec", "{prompt}"], "args": ["--sandbox", "workspace-write"], "output": "text"},
    {"command": ["gemini", "--prompt={prompt}"], "args": ["--approval-mode=yolo"], "output": "text"},
    {"command": ["aider", "--message={prompt}"], "args": ["--yes-always", "--no-auto-commits"], "output": "text"},
], ids=["codex", "gemini", "aider"])
def test_each_documented_agent_template_gets_an_option_like_prompt_as_its_prompt(
        project: Project, template: dict[str, Any]) -> None:
    """The templates of docs/configuration.md, each run by a stand-in of that name."""
    from tests.conftest import install_fake_claude

    install_fake_claude(project.fake.bin_dir.parent, name=template["command"][0])
    project.write_config(json.dumps({"daemon": FAST["daemon"], "agent": template}))
    project.start()
    task_id = submit(project, "--dangerously-skip-permissions")
    assert wait_state(project, task_id, "completed", "failed")["state"] == "completed"
    [run] = project.fake.runs()
    assert run["prompt"] == "--dangerously-skip-permissions"
    assert Path(run["argv"][0]).name == template["command"][0]
    options = run["argv"][1:run["argv"].index("--")] if "--" in run["argv"] else run["argv"][1:]
    assert "--dangerously-skip-permissions" not in options  # only ever inside `--x=` or after `--`


def test_a_prompt_longer_than_one_argument_is_refused_and_leaves_no_task(project: Project) -> None:
    configure(project)
    project.start()
    with project.client() as client:
        with pytest.raises(RpcError) as refused:
            client.call("task.submit", prompt="x" * 200 * 1024)
        assert refused.value.code == INVALID_PARAMS
        assert "204,800 bytes" in refused.value.message and "131,071 bytes (128 KiB)" in refused.value.message
        stats = client.call("task.stats")
        assert client.call("task.list") == [] and stats.get("queued", 0) == 0
    assert project.fake.runs() == []


def test_a_pause_of_the_daemon_does_not_turn_a_finished_task_into_a_timeout(project: Project) -> None:
    """SIGSTOP of the daemon past a task's deadline while its agent finishes in
    time: after SIGCONT the task is completed, not timed out."""
    configure(project)
    daemon = project.start()
    task_id = submit(project, "quick @sleep:0.3", timeout=0.02)  # a 1.2 s timeout
    wait_state(project, task_id, "running")
    os.kill(daemon, signal.SIGSTOP)
    try:
        time.sleep(3)
    finally:
        os.kill(daemon, signal.SIGCONT)
    task = wait_state(project, task_id, "completed", "timeout", "failed")
    assert task["state"] == "completed" and task.get("error") is None
    assert "its own exit status stands" in project.log_text()


def test_priority_then_fifo_with_one_slot(project: Project) -> None:
    configure(project, max_parallel_actions=1)
    project.start()
    blocker = submit(project, "blocker @sleep:1")
    wait_state(project, blocker, "running")
    order = [("low-a", -5), ("normal-a", 0), ("high", 10), ("normal-b", 0), ("low-b", -5), ("normal-c", 0)]
    ids = [submit(project, name, priority=priority) for name, priority in order]
    for task_id in ids:
        wait_state(project, task_id, "completed")
    prompts = [r["prompt"] for r in project.fake.runs()]
    assert prompts == ["blocker @sleep:1", "high", "normal-a", "normal-b", "normal-c", "low-a", "low-b"]


def test_concurrency_bound_is_never_exceeded(project: Project) -> None:
    configure(project, max_parallel_actions=2)
    project.start()
    ids = [submit(project, f"job {i} @sleep:0.3") for i in range(7)]
    for task_id in ids:
        wait_state(project, task_id, "completed")
    runs = project.fake.runs()
    assert len(runs) == 7
    edges = sorted([(r["started"], 1) for r in runs] + [(r["ended"], -1) for r in runs])
    level = peak = 0
    for _, delta in edges:
        level += delta
        peak = max(peak, level)
    assert peak == 2


def test_reload_raises_the_limit_without_a_restart(project: Project) -> None:
    configure(project, max_parallel_actions=1)
    pid = project.start()
    ids = [submit(project, f"slow {i} @sleep:2") for i in range(3)]
    wait_state(project, ids[0], "running")
    assert get(project, ids[1])["state"] == "queued"  # one slot, and it is taken
    configure(project, max_parallel_actions=3)
    project.aiwg("daemon", "reload", check=True)
    wait_state(project, ids[1], "running")
    wait_state(project, ids[2], "running")
    assert project.pid() == pid


def test_timeout_kills_the_whole_tree(project: Project) -> None:
    configure(project)
    project.start()
    task_id = submit(project, "hang @grandchild @ignore-term @sleep:60", timeout=0.02)
    record = wait_state(project, task_id, "timeout", timeout=30)
    assert record["error"] == "timed out after 0.02 min"
    [grandchild] = project.fake.grandchild_pids()
    wait_for(lambda: not alive(grandchild), timeout=5)
    [run] = project.fake.runs()
    assert not alive(run["pid"])


def test_orphans_of_a_finished_agent_are_killed(project: Project) -> None:
    configure(project)
    project.start()
    task_id = submit(project, "leave one behind @grandchild")
    wait_state(project, task_id, "completed")
    [grandchild] = project.fake.grandchild_pids()
    wait_for(lambda: not alive(grandchild), timeout=5)


def test_cancel_queued_and_running(project: Project) -> None:
    configure(project, max_parallel_actions=1)
    project.start()
    running = submit(project, "long @grandchild @sleep:60")
    queued = submit(project, "never runs")
    wait_state(project, running, "running")
    result = project.aiwg("task", "cancel", queued, check=True)
    assert f"Task {queued} cancelled" in result.stdout
    assert get(project, queued)["state"] == "cancelled"
    project.aiwg("task", "cancel", running, check=True)
    record = wait_state(project, running, "cancelled")
    assert record["error"] == "cancelled while running"
    [grandchild] = project.fake.grandchild_pids()
    wait_for(lambda: not alive(grandchild), timeout=5)
    assert all(r["prompt"] != "never runs" for r in project.fake.runs())
    again = project.aiwg("task", "cancel", running)
    assert again.returncode == 1 and "already cancelled" in again.stderr
    unknown = project.aiwg("task", "cancel", "t-nosuchtask")
    assert unknown.returncode == 1 and "no task with id t-nosuchtask" in unknown.stderr


def test_tasks_persist_across_stop_and_start(project: Project) -> None:
    configure(project, max_parallel_actions=1)
    project.start()
    done = submit(project, "first")
    wait_state(project, done, "completed")
    blocker = submit(project, "blocker @sleep:30")
    waiting = submit(project, "waits its turn", priority=3)
    wait_state(project, blocker, "running")
    project.aiwg("daemon", "stop", check=True)
    assert get_offline(project, done)["state"] == "completed"
    assert get_offline(project, blocker)["state"] == "failed"  # stopped while running
    assert get_offline(project, waiting)["state"] == "queued"
    project.start()
    assert wait_state(project, waiting, "completed")["attempts"] == 1
    assert get(project, blocker)["error"] == "interrupted: daemon stopped while the task was running"


def get_offline(project: Project, task_id: str) -> dict[str, Any]:
    db = sqlite3.connect(project.paths.tasks_db)
    try:
        row = db.execute("SELECT state, error FROM tasks WHERE id = ?", (task_id,)).fetchone()
    finally:
        db.close()
    return {"state": row[0], "error": row[1]}


def test_daemon_stop_terms_running_tasks_then_kills_after_the_grace(project: Project) -> None:
    configure(project)
    project.start()
    polite = submit(project, "polite @sleep:60")
    stubborn = submit(project, "stubborn @ignore-term @grandchild @sleep:60")
    wait_state(project, polite, "running")
    wait_state(project, stubborn, "running")
    wait_for(lambda: project.fake.grandchild_pids())
    started = time.monotonic()
    project.aiwg("daemon", "stop", check=True)
    took = time.monotonic() - started
    assert 0.9 <= took < 10  # waited out the 1 s grace for the stubborn one, no longer
    for run in project.fake.runs():
        assert not alive(run["pid"])
    assert all(not alive(pid) for pid in project.fake.grandchild_pids())
    assert get_offline(project, polite)["state"] == "failed"
    assert get_offline(project, stubborn)["error"] == "interrupted: daemon stopped while the task was running"


def test_kill_9_during_a_task_then_restart_reconciles(project: Project) -> None:
    configure(project, max_parallel_actions=1)
    daemon_pid = project.start()
    victim = submit(project, "victim @grandchild @ignore-term @sleep:120")
    queued = [submit(project, f"after crash {i}") for i in range(2)]
    wait_state(project, victim, "running")
    wait_for(lambda: project.fake.grandchild_pids())
    [grandchild] = project.fake.grandchild_pids()
    agent_pid = get(project, victim)["pid"]
    os.kill(daemon_pid, signal.SIGKILL)
    wait_for(lambda: not alive(daemon_pid))
    assert alive(agent_pid) and alive(grandchild)  # the crash left them running
    project.start()
    record = wait_state(project, victim, "failed")
    assert record["error"] == "interrupted: daemon stopped while the task was running"
    wait_for(lambda: not alive(agent_pid) and not alive(grandchild), timeout=5)
    for task_id in queued:
        wait_state(project, task_id, "completed")
    assert "was running when the daemon stopped" in project.log_text()


def test_retries_requeue_an_interrupted_task(project: Project) -> None:
    configure(project)
    daemon_pid = project.start()
    task_id = submit(project, "retry me @sleep:1", retries=1)
    wait_state(project, task_id, "running")
    os.kill(daemon_pid, signal.SIGKILL)
    wait_for(lambda: not alive(daemon_pid))
    project.start()
    record = wait_state(project, task_id, "completed")
    assert record["attempts"] == 2


def test_reconcile_leaves_a_reused_pid_alone(project: Project) -> None:
    configure(project)
    project.start()
    task_id = submit(project, "quick")
    wait_state(project, task_id, "completed")
    project.aiwg("daemon", "stop", check=True)
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        db = sqlite3.connect(project.paths.tasks_db)
        db.execute(
            "UPDATE tasks SET state='running', pid=?, pgid=?, proc_start='1', finished_at=NULL, exit_code=NULL "
            "WHERE id=?",
            (bystander.pid, bystander.pid, task_id),
        )
        db.commit()
        db.close()
        project.start()
        wait_state(project, task_id, "failed")
        assert bystander.poll() is None  # not ours: its start time differs
    finally:
        bystander.kill()
        bystander.wait()


def test_missing_agent_binary_fails_at_once_and_health_says_so(project: Project) -> None:
    project.write_config(json.dumps({"agent": {"command": ["no-such-agent-xyz", "-p", "{prompt}"]}}))
    project.start()
    task_id = submit(project, "anything")
    record = wait_state(project, task_id, "failed", timeout=5)
    expected = ("agent command 'no-such-agent-xyz' not found on PATH; install Claude Code or set "
                "agent.command in .aiwg/daemon.json")
    assert record["error"] == expected
    status = json.loads(project.aiwg("daemon", "status", "--json").stdout)
    assert status["health"] == "degraded" and expected in status["health_issues"]
    lines = project.aiwg("daemon", "status").stdout.splitlines()
    health = next(i for i, line in enumerate(lines) if line.strip().startswith("health:"))
    assert "degraded" in lines[health] and lines[health + 1] == f"    ! {expected}"  # under health:


def test_secrets_from_agent_env_stay_out_of_logs_records_and_state(project: Project) -> None:
    secret = "sk-test-SECRET-value-42"
    project.env["MY_TOKEN"] = secret
    project.write_config(json.dumps({
        "daemon": FAST["daemon"],
        "agent": {"env": {"API_TOKEN": "${MY_TOKEN}", "LITERAL": "literal-secret-99"}},
    }))
    project.start()
    task_id = submit(project, "show @env:API_TOKEN")
    record = wait_state(project, task_id, "completed")
    [run] = project.fake.runs()
    assert run["env"]["API_TOKEN"] == secret and run["env"]["LITERAL"] == "literal-secret-99"
    project.aiwg("daemon", "stop", check=True)
    texts = [
        json.dumps(record),
        project.log_text(),
        project.paths.state_file.read_text(),
        Path(record["outputPath"]).read_text(),
        "".join(p.read_text() for p in project.paths.events_dir.glob("*.jsonl")),
    ]
    db = project.paths.tasks_db.read_bytes() + Path(str(project.paths.tasks_db) + "-wal").read_bytes() \
        if Path(str(project.paths.tasks_db) + "-wal").exists() else project.paths.tasks_db.read_bytes()
    for text in texts:
        assert secret not in text and "literal-secret-99" not in text
    assert secret.encode() not in db
    assert "[redacted]" in record["output"]


def test_secrets_printed_json_escaped_are_redacted_too(project: Project) -> None:
    """claude's reply is JSON: a secret with a quote, a backslash or non-ASCII in it is
    printed escaped, and comes back in the clear once the reply is decoded."""
    secret = 'Xy7"q\\zz-é-SECRET'
    project.env["MY_TOKEN"] = secret
    project.write_config(json.dumps({"daemon": FAST["daemon"], "agent": {"env": {"API_TOKEN": "${MY_TOKEN}"}}}))
    project.start()
    done = submit(project, "tell @result-env:API_TOKEN @env-json:API_TOKEN")
    failed = submit(project, "fail @env-json:API_TOKEN @exit:3")
    completed = wait_state(project, done, "completed")
    record = wait_state(project, failed, "failed")
    assert completed["result"] == "the value is [redacted]"
    assert record["error"] == 'agent exited with code 3: "[redacted]"'  # stderr's last line
    project.aiwg("daemon", "stop", check=True)
    texts = [json.dumps(completed), json.dumps(record), project.log_text(),
             Path(completed["outputPath"]).read_text(), Path(record["outputPath"]).read_text(),
             "".join(p.read_text() for p in project.paths.events_dir.glob("*.jsonl"))]
    escaped = (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1])
    for text in texts:
        assert secret not in text and all(form not in text for form in escaped)


def test_output_is_capped_with_a_marker(project: Project) -> None:
    project.write_config(json.dumps({"daemon": {**FAST["daemon"], "task_output_max_mb": 0.01}}))
    project.start()
    task_id = submit(project, "chatty @print:2000")
    record = wait_state(project, task_id, "completed")
    data = Path(record["outputPath"]).read_bytes()
    limit = int(0.01 * 1024 * 1024)
    assert len(data) <= limit + 100
    assert data.rstrip().endswith(f"[aiwg: output truncated at {limit} bytes]".encode())
    assert record["outputBytes"] == limit
    assert len(record["output"].encode()) <= 16 * 1024


def test_retention_prunes_finished_tasks_and_their_files(project: Project) -> None:
    # One slot, so they finish in submission order and "newest 3" is well defined.
    project.write_config(json.dumps({"daemon": {**FAST["daemon"], "max_parallel_actions": 1,
                                                "retention": {"max_tasks": 3}}}))
    project.start()
    ids = [submit(project, f"task {i}") for i in range(6)]
    for task_id in ids:
        wait_state(project, task_id, "completed")
    paths = [get(project, i)["outputPath"] for i in ids]
    project.aiwg("daemon", "stop", check=True)
    project.start()  # pruning runs at start (and every few minutes)
    with project.client() as client:
        kept = [t["id"] for t in client.call("task.list", limit=100)]
        with pytest.raises(RpcError):
            client.call("task.get", taskId=ids[0])
    assert kept == ids[:2:-1]
    assert [Path(p).exists() for p in paths] == [False, False, False, True, True, True]


def test_tasks_json_is_imported_on_first_start(project: Project) -> None:
    project.paths.daemon_dir.mkdir(parents=True)
    from datetime import datetime, timedelta, timezone

    def ago(minutes: int) -> str:  # recent, so that retention (30 days) keeps them
        moment = datetime.now(timezone.utc) - timedelta(minutes=minutes)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    node = {
        "version": 1,
        "updatedAt": "2026-02-10T10:00:00.000Z",
        "tasks": [
            {"id": "task-0000", "prompt": "old done", "agent": None, "priority": 0, "state": "completed",
             "createdAt": ago(60), "startedAt": ago(59),
             "completedAt": ago(58), "pid": None, "result": "ok", "error": None,
             "output": "ok\n", "metadata": {}},
            {"id": "task-0001", "prompt": "was running", "agent": None, "priority": 2, "state": "running",
             "createdAt": ago(30), "startedAt": ago(29),
             "completedAt": None, "pid": 99999, "result": None, "error": None, "output": "", "metadata": {}},
            {"id": "task-0002", "prompt": "still queued", "agent": None, "priority": 1, "state": "queued",
             "createdAt": ago(20), "startedAt": None, "completedAt": None, "pid": None,
             "result": None, "error": None, "output": "", "metadata": {"source": "ipc-chat"}},
        ],
    }
    (project.paths.daemon_dir / "tasks.json").write_text(json.dumps(node))
    project.start()
    assert get(project, "task-0000")["state"] == "completed"
    assert get(project, "task-0001")["error"] == "interrupted: daemon stopped while the task was running"
    assert wait_state(project, "task-0002", "completed")["source"] == "chat"
    assert (project.paths.daemon_dir / "tasks.json").exists()
    exported = json.loads(project.aiwg("task", "export", check=True).stdout)
    assert [t["id"] for t in exported["tasks"]][:3] == ["task-0000", "task-0001", "task-0002"]
    project.aiwg("daemon", "stop", check=True)
    project.start()  # not imported twice
    with project.client() as client:
        assert client.call("task.stats")["total"] == 3


def test_bad_params_name_the_parameter(project: Project) -> None:
    project.start()
    with project.client() as client:
        cases = [
            ({"prompt": ""}, "prompt"),
            ({"prompt": "x", "priority": "high"}, "'priority'"),
            ({"prompt": "x", "priority": 1.5}, "'priority'"),
            ({"prompt": "x", "timeout": -1}, "'timeout'"),
            ({"prompt": 5}, "'prompt'"),
        ]
        for params, needle in cases:
            with pytest.raises(RpcError) as caught:
                client.call("task.submit", **params)
            assert caught.value.code == INVALID_PARAMS and needle in caught.value.message
        with pytest.raises(RpcError, match="'state'"):
            client.call("task.list", state="bogus")
        with pytest.raises(RpcError, match="Task not found: nope .parameter 'taskId'"):
            client.call("task.get", taskId="nope")
        with pytest.raises(RpcError, match="taskId"):
            client.call("task.cancel")
    assert project.aiwg("daemon", "ping").returncode == 0


def test_cli_submit_wait_follow_and_exit_codes(project: Project) -> None:
    configure(project)
    project.start()
    ok = project.aiwg("task", "submit", "stream me @print:3 @sleep:0.5", "--wait")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("filler output line") == 3
    failed = project.aiwg("task", "submit", "fail @exit:2", "--wait")
    assert failed.returncode == 1 and "agent exited with code 2" in failed.stderr
    timed = project.aiwg("task", "submit", "slow @sleep:30", "--timeout", "0.01", "--wait")
    assert timed.returncode == 124
    task_id = submit(project, "follow me @print:2 @sleep:1")
    follow = project.aiwg("task", "get", task_id, "--follow")
    assert follow.returncode == 0 and follow.stdout.count("filler output line") == 2
    listing = project.aiwg("task", "list", "--state", "completed", check=True)
    assert "ID" in listing.stdout and task_id in listing.stdout
    stats = json.loads(project.aiwg("task", "stats", "--json", check=True).stdout)
    assert stats["completed"] == 2 and stats["failed"] == 1 and stats["timeout"] == 1
    missing = project.aiwg("task", "get", "t-nosuchtask")
    assert missing.returncode == 1 and "no task with id t-nosuchtask" in missing.stderr


def test_events_reach_subscribers_and_the_event_log(project: Project) -> None:
    configure(project)
    project.start()
    with project.client(timeout=10) as listener:
        listener.subscribe(["task:*"])
        task_id = submit(project, "evented @print:1")
        topics = []
        for event in listener.events(timeout=5):
            if event["payload"].get("taskId") == task_id:
                topics.append(event["topic"])
            if event["topic"] == "task:completed":
                break
    assert topics[0] == "task:queued" and topics[1] == "task:started"
    assert "task:output" in topics and topics[-1] == "task:completed"

    def logged() -> list[str]:
        lines = [json.loads(line) for p in project.paths.events_dir.glob("*.jsonl") for line in p.read_text().splitlines()]
        return [e["topic"] for e in lines if e["payload"].get("taskId") == task_id]

    # The log is written at the end of the delivery turn that reached the client.
    wait_for(lambda: "task:completed" in logged(), timeout=5)
    assert logged() == ["task:queued", "task:started", "task:completed"]


def test_state_json_carries_agents_and_task_stats(project: Project) -> None:
    configure(project)
    project.start()
    task_id = submit(project, "tick @sleep:2")
    wait_state(project, task_id, "running")
    project.aiwg("daemon", "stop", check=True)
    state = json.loads(project.paths.state_file.read_text())
    assert state["agents"]["max_concurrency"] == 3
    assert state["task_stats"]["failed"] == 1 and state["task_stats"]["total"] == 1


def test_aiwg_binary_is_on_path_for_tests() -> None:
    assert os.access(AIWG, os.X_OK)


@pytest.mark.parametrize("containment", ["auto", "process-group"])
@pytest.mark.parametrize("kind", ["orphan", "escaped", "vanished"])
def test_processes_left_behind_by_a_finished_task_are_killed(project: Project, kind: str, containment: str) -> None:
    """An orphan, one that left the group, and one that escaped completely (double
    fork, setsid, no descriptors, an empty environment without the task marker,
    exec of sleep): each is gone within seconds of its task's end, with task
    cgroups (where they work: root here) and with the process-group fallback."""
    configure(project, process_containment=containment)
    project.start()
    with project.client() as client:
        mode = client.call("daemon.status")["subsystems"]["supervisor"]["containment"]
    if containment == "auto" and not mode.startswith("cgroup: "):
        pytest.skip(f"task cgroups do not work here: {mode}")
    assert mode.startswith("cgroup: " if containment == "auto" else "process group: ")
    directive = {"orphan": "@orphan", "escaped": "@escape", "vanished": "@vanish"}[kind]
    task_id = submit(project, f"leave a {kind} {directive}")
    assert wait_state(project, task_id, "completed")["exitCode"] == 0
    [left] = project.fake.grandchild_pids(kind)
    wait_for(lambda: not alive(left), timeout=15)
    if containment == "auto" and kind == "vanished":  # its cgroup took it, whatever it did to itself
        assert f"task {task_id} ended; killing 1 process(es) it left behind (its cgroup)" in project.log_text()


def test_an_escaped_process_holding_the_output_does_not_hold_the_task(project: Project) -> None:
    configure(project)
    project.start()
    task_id = submit(project, "hold my pipe @escape-holding")
    record = wait_state(project, task_id, "completed", timeout=20)
    assert record["exitCode"] == 0
    [holder] = project.fake.grandchild_pids("holder")
    wait_for(lambda: not alive(holder), timeout=5)
    started = time.monotonic()
    project.aiwg("daemon", "stop", check=True)
    assert time.monotonic() - started < 10


def test_kill_9_after_the_agent_exited_while_an_escaped_child_holds_its_output(project: Project) -> None:
    """The agent exited 0 but a child that escaped its group still holds its stdout:
    the task is still draining when the daemon is killed. The exit was recorded
    when it was seen, so the restart settles the task as completed, not failed,
    and task.stats never counted the draining task as running."""
    project.write_config(json.dumps({"daemon": {"kill_grace_seconds": 5, "shutdown_grace_seconds": 1}}))
    daemon = project.start()
    task_id = submit(project, "done, mostly @escape-holding")
    recorded = wait_for(lambda: (t := get(project, task_id))["state"] == "running" and t.get("exitCode") == 0
                        and t, timeout=20)
    assert recorded["state"] == "running"
    with project.client() as client:
        stats = client.call("task.stats")
    assert stats["running"] == 0 and stats["finishing"] == 1
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not alive(daemon), timeout=10)
    project.start()
    task = wait_state(project, task_id, "completed", "failed")
    assert task["state"] == "completed" and task["exitCode"] == 0 and task["result"]
    [holder] = project.fake.grandchild_pids("holder")
    wait_for(lambda: not alive(holder), timeout=10)  # the restart cleared out what was left


def test_follow_prints_non_ascii_output_byte_for_byte(project: Project) -> None:
    configure(project)
    project.start()
    task_id = submit(project, "accents @unicode:30000 @sleep:0.5")
    follow = subprocess.run([AIWG, "task", "get", task_id, "--follow"], cwd=project.root, env=project.env,
                            capture_output=True, timeout=60)
    assert follow.returncode == 0
    record = get(project, task_id)
    logged = Path(record["outputPath"]).read_bytes().splitlines(keepends=True)
    # All of it but claude's JSON report, which is read rather than shown.
    assert follow.stdout == b"".join(line for line in logged if not line.startswith(b'{"type": "result"')
                                     and not line.startswith(b'{"type":"result"'))
    assert "\ufffd" not in follow.stdout.decode("utf-8")


def test_values_the_store_cannot_hold_are_refused_up_front(project: Project) -> None:
    project.start()
    with project.client() as client:
        for params, needle in [
            ({"prompt": "x", "priority": 10**30}, "'priority'"),
            ({"prompt": "   \n\t "}, "'prompt': must not be empty"),
            ({"prompt": "a\x00b"}, "NUL"),
            ({"prompt": "x", "timeout": 1e308}, "'timeout'"),
        ]:
            with pytest.raises(RpcError) as caught:
                client.call("task.submit", **params)
            assert caught.value.code == INVALID_PARAMS and needle in caught.value.message
        # the store is unharmed: later work still goes through
        ok = client.call("task.submit", prompt="after the bad ones")
        assert client.call("task.get", taskId=ok["taskId"])["state"] in ("queued", "running", "completed", "failed")


def test_at_the_descriptor_limit_tasks_wait_and_then_complete(project: Project) -> None:
    """prlimit the running daemon to 64 descriptors: agents that cannot be started
    for want of one stay queued and are started as others end, connections past
    the limit are answered (closed) at once, and health says so while it lasts."""
    import socket

    configure(project, max_parallel_actions=30)
    daemon = project.start()
    subprocess.run(["prlimit", f"--pid={daemon}", "--nofile=64:64"], check=True)
    with project.client() as client:
        ids = [client.call("task.submit", prompt=f"job {i} @sleep:0.5 @print:5")["taskId"] for i in range(30)]
        # More connections than descriptors: each is served or closed promptly, none hangs.
        sockets = []
        try:
            for _ in range(80):
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(5)
                s.connect(str(project.paths.bind_socket()))
                sockets.append(s)
            answered = closed = 0
            for s in sockets:
                try:
                    s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
                    data = s.recv(4096)  # a reply, or b"" for a refused one: never a timeout
                except (BrokenPipeError, ConnectionResetError):
                    data = b""
                answered += bool(data)
                closed += not data
        finally:
            for s in sockets:
                s.close()
        assert answered + closed == 80 and closed > 0
        health = client.call("daemon.status")["health_issues"]
        # This connection stays open; new ones may be refused while agents hold every descriptor.
        def settled() -> dict[str, str] | None:
            states = {t: client.call("task.get", taskId=t)["state"] for t in ids}
            return states if all(v in ("completed", "failed") for v in states.values()) else None

        states = wait_for(settled, timeout=60)
    assert set(states.values()) == {"completed"}, states
    assert any("cannot start agents" in issue for issue in health) or "cannot start agents" in project.log_text()
    assert project.running()


def test_ten_agents_flooding_output_leave_memory_bounded_and_the_socket_responsive(project: Project) -> None:
    """Ten agents each writing 100 MiB: the daemon's RSS grows by at most 100 MiB,
    a ping on another connection keeps p99 under 50 ms, and every task completes."""
    import threading

    flood = "yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -c 104857600"
    project.write_config(json.dumps({
        "daemon": {**FAST["daemon"], "max_parallel_actions": 10, "task_output_max_mb": 10},
        "agent": {"command": ["sh", "-c", flood, "{prompt}"], "output": "text", "end_of_options": False}}))
    daemon = project.start()

    def rss() -> int:
        for line in Path(f"/proc/{daemon}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    time.sleep(0.5)
    before = peak = rss()
    pings: list[float] = []
    stop = threading.Event()

    def ping() -> None:
        with project.client() as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.call("ping")
                pings.append(time.perf_counter() - started)
                time.sleep(0.01)

    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    with project.client() as client:
        ids = [client.call("task.submit", prompt=f"flood {i}")["taskId"] for i in range(10)]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            peak = max(peak, rss())
            if all(client.call("task.get", taskId=t)["state"] not in ("queued", "running") for t in ids):
                break
            time.sleep(0.05)
        states = [client.call("task.get", taskId=t)["state"] for t in ids]
    stop.set()
    pinger.join(timeout=10)
    assert states == ["completed"] * 10
    assert peak - before <= 100 * 2**20, f"RSS grew by {(peak - before) / 2**20:.0f} MiB"
    pings.sort()
    assert pings and pings[int(0.99 * len(pings))] <= 0.050, f"ping p99 {pings[int(0.99 * len(pings))] * 1000:.0f} ms"
