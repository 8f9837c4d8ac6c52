# tests: tests/e2e/test_tasks.py, tests/e2e/test_json_output.py, tests/e2e/test_waiting.py
"""Following tasks from the shell: one task until it ends (`task submit --wait`,
`task get --follow`, `task follow ID`), or every task's output (`task follow --all`).

In text, the agent's stdout goes to stdout and its stderr to stderr as they come,
except claude's JSON report (`{"type": "result", …}`), which is read, not shown:
its answer is printed at the end. On a terminal a line on stderr says what the task
is doing as its state changes (queued, running, an iteration, waiting for
approval with the commands that decide it). Under --json, JSON Lines.

Ctrl-C: a command that started the task (`submit --wait`) cancels it and waits for
it to end, unless --detach was given; a second Ctrl-C leaves at once. A command
that only follows stops following. Either way the status is 130.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, NoReturn

import click

from aiwg.cli.render import fail
from aiwg.client import DaemonClient
from aiwg.core.states import END_TOPICS, TERMINAL_STATES
from aiwg.errors import INVALID_PARAMS, ConnectionClosed, RpcError

EXIT_FOR_STATE = {"completed": 0, "failed": 1, "timeout": 124, "cancelled": 130, "rejected": 3}


def unknown_task_or_raise(exc: RpcError, task_id: str) -> NoReturn:
    """An unknown id said as such (exit 1, JSON under --json); any other error goes on."""
    if exc.code == INVALID_PARAMS and "Task not found" in exc.message:
        fail(f"no task with id {task_id}", 1)
    raise exc


def task_call(client: DaemonClient, method: str, task_id: str, **params: Any) -> Any:
    """A task.* method on one task, its unknown id said as such."""
    try:
        return client.call(method, taskId=task_id, **params)
    except RpcError as exc:
        unknown_task_or_raise(exc, task_id)


def json_line(value: Any) -> None:
    """One JSON object on one line: what a streaming command writes under --json."""
    sys.stdout.write(json.dumps(value, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def _say(text: str) -> None:
    """A progress line for a person: stderr, on a terminal only."""
    if sys.stderr.isatty():
        click.echo(text, err=True)


class _Printer:
    """The agent's output in text: stdout and stderr apart, claude's JSON report held back."""

    def __init__(self) -> None:
        self.pending = {"stdout": "", "stderr": ""}
        self.printed_stdout = False

    def write(self, data: str, stream: str | None) -> None:
        name = "stderr" if stream == "stderr" else "stdout"
        text = self.pending[name] + data
        *lines, self.pending[name] = text.split("\n")
        for line in lines:
            self._line(line + "\n", name)

    def flush(self) -> None:
        for name in ("stdout", "stderr"):
            if self.pending[name]:
                self._line(self.pending[name], name)
                self.pending[name] = ""

    def _line(self, line: str, name: str) -> None:
        if name == "stdout" and _is_report(line):
            return  # claude's machine report: its answer is printed at the end
        target = sys.stderr if name == "stderr" else sys.stdout
        target.write(line)
        target.flush()
        if name == "stdout":
            self.printed_stdout = True


def _is_report(line: str) -> bool:
    if not line.lstrip().startswith('{"type"'):
        return False
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("type") == "result"


def follow_task(as_json: bool, client: DaemonClient, task_id: str, *, subscribed: bool,
                started_here: bool = False, detach: bool = False) -> int:
    """Print the task's output from the start, then live, until it ends; the exit
    status its end calls for. Under --json, JSON Lines instead: `{"type": "output",
    …}` per chunk, `iteration` and `state` objects as they happen, and the final
    record last (`{"type": "task", "task": …}`)."""
    if not subscribed:
        client.subscribe(["task:output", "task:iteration", "task:queued", "task:started", "task:approved",
                          *END_TOPICS])
    position = 0
    printer = _Printer()
    began = time.monotonic()

    def show(data: str, offset: int, stream: str | None) -> None:
        if as_json:
            json_line({"type": "output", "taskId": task_id, "stream": stream, "offset": offset, "data": data})
        elif data:
            printer.write(data, stream)

    def catch_up() -> dict[str, Any]:
        nonlocal position
        while True:
            page = task_call(client, "task.output", task_id, offset=position)
            if page["data"]:
                show(page["data"], position, None)  # the file holds both streams, interleaved
            position = page["nextOffset"]
            if page["eof"]:
                return page

    page = catch_up()
    state = page["state"]
    if not as_json:
        _say_state(task_id, state)
    client.timeout = None
    interrupted = False
    try:
        while state not in TERMINAL_STATES:
            try:
                for event in client.events(timeout=1.0):
                    payload = event.get("payload") or {}
                    if payload.get("taskId") != task_id:
                        continue
                    topic = event["topic"]
                    if topic == "task:output":
                        start = int(payload.get("offset", 0))
                        length = int(payload.get("bytes", 0))
                        if start >= position:  # not yet printed (catch-up reads whole chunks)
                            show(payload.get("chunk", ""), start, payload.get("stream"))
                            position = start + length
                    elif topic == "task:iteration":
                        if as_json:
                            json_line({"type": "iteration", **payload})
                        else:
                            click.echo(iteration_line(payload), err=True)
                    elif topic in ("task:queued", "task:started", "task:approved"):
                        if not as_json:
                            _say_state(task_id, "running" if topic == "task:started" else "queued",
                                       time.monotonic() - began)
                    else:
                        state = payload.get("state", topic.split(":", 1)[1])
                        if as_json:
                            json_line({"type": "state", "taskId": task_id, "state": state})
                        break
                else:
                    state = client.call("task.get", taskId=task_id)["state"]
            except KeyboardInterrupt:
                if not started_here or detach or interrupted:
                    click.echo(f"aiwg: stopped following; task {task_id} goes on "
                               f"(aiwg task cancel {task_id} stops it)", err=True)
                    return 130
                interrupted = True
                click.echo(f"aiwg: cancelling task {task_id} (Ctrl-C again leaves it running)", err=True)
                client.timeout = 10
                client.call("task.cancel", taskId=task_id)
                client.timeout = None
    except ConnectionClosed:
        click.echo("aiwg: the daemon stopped", err=True)
        return 1
    catch_up()
    printer.flush()
    record = client.call("task.get", taskId=task_id)
    if as_json:
        json_line({"type": "task", "task": record})
        return EXIT_FOR_STATE.get(record["state"], 1)
    if record["state"] == "completed" and record.get("result") and not printer.printed_stdout:
        click.echo(record["result"])  # the answer, where claude reported it in its JSON
    if record.get("error"):
        click.echo(f"task {task_id} {record['state']}: {record['error']}", err=True)
    else:
        click.echo(f"task {task_id} {record['state']}", err=True)
    return EXIT_FOR_STATE.get(record["state"], 1)


def _say_state(task_id: str, state: str, elapsed: float | None = None) -> None:
    after = f" after {elapsed:.0f}s" if elapsed else ""
    if state == "awaiting_approval":
        _say(f"── {task_id} awaits approval: aiwg task approve {task_id}  (or: aiwg task reject {task_id})")
    elif state in ("queued", "running"):
        _say(f"── {task_id} {state}{after}")


def iteration_line(payload: dict[str, Any]) -> str:
    """A loop's progress, one line: `── iteration 2/5: check failed (exit 1), $0.04 spent`."""
    code = payload.get("checkExitCode")
    how = "check passed" if payload.get("passed") else (
        f"check failed (exit {code})" if code is not None else "check did not finish")
    spent = payload.get("totalCostUsd")
    return (f"── iteration {payload.get('iteration')}/{payload.get('maxIterations')}: {how}"
            + (f", ${spent:.4g} spent" if spent is not None else ""))


def follow_all(as_json: bool, client: DaemonClient) -> int:
    """Every task's output as it arrives, line by line, prefixed `[t-…]`."""
    client.subscribe(["task:started", "task:output", *END_TOPICS])
    if not as_json:
        running = client.call("task.list", state="running", limit=100)
        click.echo(f"following the output of every task ({len(running)} running now); Ctrl-C stops")
    partial: dict[str, str] = {}
    client.timeout = None
    try:
        for event in client.events():
            if as_json:
                json_line(event)
                continue
            payload = event.get("payload") or {}
            tid = payload.get("taskId", "?")
            topic = event.get("topic", "")
            if topic == "task:output":
                text = partial.pop(tid, "") + payload.get("chunk", "")
                *lines, rest = text.split("\n")
                for line in lines:
                    click.echo(f"[{tid}] {line}")
                if rest:
                    partial[tid] = rest
            elif topic == "task:started":
                click.echo(f"── {tid} started (pid {payload.get('pid')})")
            else:
                if partial.get(tid):
                    click.echo(f"[{tid}] {partial.pop(tid)}")
                state = topic.split(":", 1)[1]
                detail = payload.get("error") or (f"exit {payload['exitCode']}" if "exitCode" in payload else "")
                click.echo(f"── {tid} {state}{': ' + detail if detail else ''}")
    except KeyboardInterrupt:
        return 130
    except ConnectionClosed:
        click.echo("aiwg: the daemon stopped", err=True)
        return 1
    return 0
