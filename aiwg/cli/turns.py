# tests: tests/e2e/test_chat.py
"""Waiting for one chat turn: stream its output (when the agent's output is the
answer), tick a progress callback, and return the task's final record.

Shared by `aiwg chat send` and the REPL; the caller's connection must already be
subscribed to TURN_TOPICS.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from aiwg.client import DaemonClient
from aiwg.core.states import END_TOPICS, TERMINAL_STATES

TURN_TOPICS = ["task:output", *END_TOPICS]
#: While a turn is quiet, its state is asked for this often (an end event could be missed).
MISSED_END_CHECK = 2.0


def wait_turn(
    client: DaemonClient,
    task_id: str,
    *,
    on_chunk: Callable[[str], None] | None = None,
    on_tick: Callable[[float], None] | None = None,
    tick: float = 0.1,
) -> dict[str, Any]:
    """Block until task `task_id` ends; returns its record (`task.get`)."""
    started = time.monotonic()
    next_check = started + MISSED_END_CHECK
    state = None
    while state not in TERMINAL_STATES:
        for event in client.events(timeout=tick):
            payload = event.get("payload") or {}
            if payload.get("taskId") != task_id:
                continue
            if event.get("topic") == "task:output":
                if on_chunk is not None and payload.get("stream", "stdout") == "stdout":
                    on_chunk(payload.get("chunk", ""))
            else:
                state = payload.get("state") or str(event.get("topic", ":")).split(":", 1)[1]
                break
            if on_tick is not None:
                on_tick(time.monotonic() - started)
        else:
            now = time.monotonic()
            if on_tick is not None:
                on_tick(now - started)
            if now >= next_check:  # a quiet turn: make sure its end event was not missed
                next_check = now + MISSED_END_CHECK
                state = client.call("task.get", taskId=task_id)["state"]
    return client.call("task.get", taskId=task_id)


class deferred_interrupt:
    """Hold Ctrl-C while a turn is being submitted: an interrupt between the daemon
    accepting the turn and the reply naming its task would leave it running. After
    the block, `interrupted` says whether Ctrl-C came (the caller cancels the task)."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None

    def __enter__(self) -> "deferred_interrupt":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.interrupted = True

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def answer_text(record: dict[str, Any]) -> str:
    """What to show as the answer: the agent's result, else its output's tail."""
    result = record.get("result")
    if isinstance(result, str) and result.strip():
        return result.rstrip("\n")
    return (record.get("outputTail") or record.get("output") or "").rstrip("\n")


def failure_text(record: dict[str, Any]) -> str:
    state = record.get("state")
    reason = record.get("error") or ""
    if state == "timeout":
        return f"the turn timed out{': ' + reason if reason else ''}"
    if state == "cancelled":
        return "the turn was cancelled"
    if state == "rejected":
        return f"the turn was not approved{': ' + reason if reason else ''}"
    return f"the turn failed{': ' + reason if reason else ''}"
