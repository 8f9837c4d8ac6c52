# tests: tests/daemon/test_debounce.py
"""A trailing debouncer with an injected reactor: a burst becomes one call.

Each `push(item)` collects the item and restarts the quiet timer; when nothing has
arrived for `wait` seconds, the function is called once with everything collected,
in arrival order, duplicates dropped. If the function returns a Deferred, items that
arrive while it runs are held and handed over in one more call after it finishes
(and after another quiet period), never concurrently.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


class Debouncer:
    log = Logger()

    def __init__(self, *, reactor: IReactorTime, wait: float, function: Callable[[list[Any]], Any]) -> None:
        self._reactor = reactor
        self.wait = wait
        self._function = function
        self._items: dict[Hashable, Any] = {}
        self._timer: Any = None
        self._running: Deferred | None = None
        self.calls = 0

    @property
    def pending(self) -> int:
        return len(self._items)

    def push(self, item: Any, key: Hashable | None = None) -> None:
        """Add an item (deduplicated by `key`, default the item) and restart the quiet timer."""
        self._items[item if key is None else key] = item
        if self._running is None:
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.wait)
        else:
            self._timer = self._reactor.callLater(self.wait, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if not self._items:
            return
        batch, self._items = list(self._items.values()), {}
        self.calls += 1
        d = maybeDeferred(self._function, batch)
        if d.called:
            d.addErrback(self._failed)
            return
        self._running = d
        d.addErrback(self._failed)
        d.addBoth(self._finished)

    def _failed(self, failure: Any) -> None:
        self.log.failure("debounced call failed", failure)

    def _finished(self, _: Any) -> None:
        self._running = None
        if self._items:
            self._arm()

    def take(self) -> list[Any]:
        """Cancel the timer and hand back what is pending, unpublished, for the
        caller to pass on (to the debouncer that replaces this one)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        items, self._items = list(self._items.values()), {}
        return items

    def stop(self) -> Deferred:
        """Cancel the timer, drop what is pending; fires when a running call has finished."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._items = {}
        if self._running is None:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._running.addBoth(lambda result: (waiter.callback(None), result)[1])
        return waiter
