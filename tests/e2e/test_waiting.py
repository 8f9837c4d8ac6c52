"""Waiting for a task from the shell: the answer rather than claude's JSON report,
the agent's stderr on stderr, a hint for a task that waits for approval, and one
Ctrl-C behaviour (cancel the task this command started, unless --detach)."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import time

import pytest

from tests.conftest import AIWG, Project, wait_for

pytestmark = pytest.mark.e2e


def test_the_answer_is_shown_and_the_agents_stderr_stays_on_stderr(daemon: Project) -> None:
    result = daemon.aiwg("task", "submit", "explain @stderr:a-warning @result:the-answer", "--wait")
    assert result.returncode == 0, result.stderr
    assert "the-answer" in result.stdout
    assert '{"type"' not in result.stdout  # claude's JSON report is read, not printed
    assert "a-warning" in result.stderr and "a-warning" not in result.stdout


def started_waiting(daemon: Project, *extra: str) -> tuple[subprocess.Popen, str]:
    child = subprocess.Popen([AIWG, "task", "submit", "a long one @sleep:30", "--wait", *extra],
                             cwd=daemon.root, env=daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, stdin=subprocess.DEVNULL)
    task_id = wait_for(lambda: next((t["id"] for t in json.loads(daemon.aiwg("task", "list", "--json").stdout)
                                     if t["state"] == "running"), None))
    return child, task_id


def test_ctrl_c_cancels_the_task_it_started(daemon: Project) -> None:
    child, task_id = started_waiting(daemon)
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    assert f"cancelling task {task_id}" in err
    assert json.loads(daemon.aiwg("task", "get", task_id, "--json").stdout)["state"] == "cancelled"


def test_with_detach_ctrl_c_leaves_it_running(daemon: Project) -> None:
    child, task_id = started_waiting(daemon, "--detach")
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 130 and "goes on" in err
    assert json.loads(daemon.aiwg("task", "get", task_id, "--json").stdout)["state"] == "running"
    daemon.aiwg("task", "cancel", task_id, check=True)


def test_a_task_awaiting_approval_says_how_to_decide_it_on_a_terminal(daemon: Project) -> None:
    leader, follower = pty.openpty()
    child = subprocess.Popen([AIWG, "task", "submit", "gated", "--require-approval", "--wait"], cwd=daemon.root,
                             env=daemon.env, stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 20
    while b"awaits approval" not in seen and time.monotonic() < deadline:
        seen += os.read(leader, 4096)
    text = seen.decode()
    task_id = text.split("Task submitted: ")[1].split()[0]
    assert f"aiwg task approve {task_id}" in text and f"aiwg task reject {task_id}" in text
    daemon.aiwg("task", "reject", task_id, check=True)
    assert child.wait(timeout=30) == 3
    os.close(leader)
