# tests: tests/daemon/test_store.py
"""The store's commit thread: SQLite waits for the disk there, not on the reactor."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable


class CommitThread:
    """Runs commits one at a time, in the order given, on a thread of their own,
    so that the reactor never waits for fsync. Each outcome (None or the
    exception) goes back through `deliver` (reactor.callFromThread); `wait()`
    lets the reactor thread block for one when a read cannot do without it.
    The store has at most one job here at a time."""

    def __init__(self, deliver: Callable[..., Any]) -> None:
        self._deliver = deliver
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done = threading.Condition()
        self._finished = 0  # number of the last job run
        self._outcome: BaseException | None = None  # and how it went
        self._thread = threading.Thread(target=self._run, name="aiwg-store-commits", daemon=True)
        self._thread.start()

    def submit(self, number: int, job: Callable[[], None], on_done: Callable[..., None]) -> None:
        self._jobs.put((number, job, on_done))

    def wait(self, number: int) -> BaseException | None:
        """Block until job `number` has run; its outcome."""
        with self._done:
            while self._finished < number:
                self._done.wait()
            return self._outcome if self._finished == number else None

    def stop(self) -> None:
        """Run what was submitted, then end the thread (it is idle by then: quick)."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            number, job, on_done = item
            try:
                job()
                outcome: BaseException | None = None
            except BaseException as exc:  # reported to the reactor, never lost here
                outcome = exc
            with self._done:
                self._finished, self._outcome = number, outcome
                self._done.notify_all()
            self._deliver(on_done, number, outcome)
