"""Every command's --json output is JSON: one document, or for the streaming
commands one object per line (JSON Lines); and a command exits with the same
status whichever format it prints, the status the user guide's table gives."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

import pytest

from tests.conftest import AIWG, Project

pytestmark = pytest.mark.e2e

#: Commands that stream: JSON Lines.
STREAMING = ("--wait", "--follow", "follow", "logs")


def parsed(stdout: str, streaming: bool) -> list[Any]:
    if streaming:
        return [json.loads(line) for line in stdout.splitlines()]
    return [json.loads(stdout)]


def test_every_command_prints_json_and_exits_as_the_table_says(daemon: Project) -> None:
    done = json.loads(daemon.aiwg("task", "submit", "hello @print:2", "--wait", "--json").stdout.splitlines()[-1])
    finished = done["task"]["id"]
    cases: list[tuple[list[str], int]] = [
        (["daemon", "status"], 0), (["daemon", "ping"], 0), (["daemon", "list"], 0), (["daemon", "reload"], 0),
        (["daemon", "logs", "-n", "5"], 0),
        (["config", "check"], 0), (["config", "show"], 0),
        (["task", "submit", "one more"], 0),
        (["task", "submit", "and wait @print:3", "--wait"], 0),
        (["task", "list"], 0), (["task", "stats"], 0), (["task", "get", finished], 0),
        (["task", "get", finished, "--follow"], 0), (["task", "follow", finished], 0),
        (["task", "get", "t-nosuchtask"], 1),
        (["task", "cancel", finished], 1),  # it has ended: nothing to cancel
        (["task", "approve", finished], 1),
        (["task", "submit", "x", "--max-iterations", "3"], 2),  # a usage error
        (["event", "emit", "deploy:done", "--payload", '{"v": 1}'], 0),
        (["schedule", "list"], 0), (["automation", "status"], 0),
        (["messaging", "status"], 0), (["messaging", "test"], 6),  # no bridge enabled
        (["chat", "send", "hi"], 0), (["chat", "send", "later", "--no-wait"], 0),
        (["task", "export"], 0), (["task", "retry", finished], 0),
        (["task", "prune", "--state", "cancelled"], 0), (["task", "rm", "t-nosuchtask"], 1),
        (["daemon", "start"], 0),  # already running: not an error
        (["event", "emit", "bad topic!"], 1),
    ]
    for args, status in cases:
        streaming = any(word in args for word in STREAMING)
        as_json = daemon.aiwg(*args, "--json")
        assert as_json.returncode == status, (args, as_json.stdout, as_json.stderr)
        documents = parsed(as_json.stdout, streaming)  # every line, or the whole
        assert documents, args
        if status:
            last = documents[-1]  # the failure is described in the JSON, not only on stderr
            assert last.get("exit_code") == status or {"cancelled", "error", "kept"} & set(last), (args, last)
        if streaming and args[0] == "task":
            assert documents[-1]["type"] == "task" and documents[-1]["task"]["state"] == "completed"
        text = daemon.aiwg(*args)
        assert text.returncode == status, ("text", args, text.stderr)


def test_the_endless_streams_are_json_lines_until_ctrl_c(daemon: Project) -> None:
    """`event follow` and `task follow --all` run until interrupted: every line they
    wrote by then is one JSON object."""
    for args in (["event", "follow", "--json"], ["task", "follow", "--all", "--json"]):
        child = subprocess.Popen([AIWG, *args], cwd=daemon.root, env=daemon.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        time.sleep(1.0)  # subscribed by now
        daemon.aiwg("task", "submit", "something to see @print:2", "--wait", check=True)
        time.sleep(0.5)
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=30)
        assert child.returncode == 130, args
        lines = [json.loads(line) for line in out.splitlines()]
        assert any(line.get("topic") == "task:completed" for line in lines), (args, out)


def test_a_waiting_submit_streams_json_lines_and_never_the_agents_raw_output(daemon: Project) -> None:
    result = daemon.aiwg("task", "submit", "say things @stderr:raw-words", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["type"] == "submitted" and lines[-1]["type"] == "task"
    kinds = {line["type"] for line in lines}
    assert kinds <= {"submitted", "output", "state", "iteration", "task"}
    text = "".join(line["data"] for line in lines if line["type"] == "output")
    assert "raw-words" in text  # the output is there, inside the objects
    assert all(line["taskId"] == lines[0]["taskId"] for line in lines if line["type"] == "output")
