"""A stand-in for reactor.callFromThread, for the store's commit-thread tests."""

from __future__ import annotations

import threading
from typing import Any, Callable


class Delivered:
    """Stands in for reactor.callFromThread: the commit thread's results wait here
    until the test, as the reactor, takes them."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._arrived = threading.Condition()

    def __call__(self, func: Callable[..., None], *args: Any) -> None:
        with self._arrived:
            self.calls.append((func, args))
            self._arrived.notify_all()

    def run(self, expected: int = 1) -> None:
        """Wait (bounded) for `expected` results from the thread, then deliver them."""
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.calls) >= expected, timeout=10)
            calls, self.calls = self.calls, []
        for func, args in calls:
            func(*args)
