# tests: tests/daemon/test_bus.py
"""The event bus: publish/subscribe by topic pattern, delivered on the next reactor turn.

Delivery is eventual, never re-entrant: a publisher is never called back by a
subscriber in the middle of its own work, and a failing subscriber is logged
and cut off from nothing but that one event.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable, Mapping

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from aiwg.core.events import Event, topic_matches

Callback = Callable[[Event], None]
#: Topics whose subscribers are remembered (the daemon's own are a few dozen;
#: past this, clients' made-up topics just clear the memory).
MAX_ROUTES = 1024


class Subscription:
    def __init__(
        self, bus: "EventBus", patterns: tuple[str, ...], callback: Callback,
        delivered: Callable[[], None] | None = None,
    ) -> None:
        self.patterns = patterns
        self.callback = callback
        self.delivered = delivered
        self.active = True
        self._bus = bus

    def matches(self, topic: str) -> bool:
        return any(topic_matches(p, topic) for p in self.patterns)

    def cancel(self) -> None:
        self._bus._remove(self)


class EventBus:
    log = Logger()

    def __init__(self, *, reactor: IReactorTime, history: int = 100) -> None:
        self._reactor = reactor
        self._subscriptions: list[Subscription] = []
        self._routes: dict[str, list[Subscription]] = {}  # topic → its subscribers, until they change
        self._pending: deque[tuple[Subscription, Event]] = deque()
        self._flush_call: Any = None
        self._seq = 0
        self.history: deque[Event] = deque(maxlen=history)
        self.published = 0

    def subscribe(
        self, patterns: Iterable[str], callback: Callback, delivered: Callable[[], None] | None = None
    ) -> Subscription:
        """`callback(event)` for each matching event; `delivered()`, if given, once
        after each turn's events have all been passed to it (to write them out
        together, say)."""
        subscription = Subscription(self, tuple(patterns), callback, delivered)
        self._subscriptions.append(subscription)
        self._routes.clear()
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        subscription.active = False
        try:
            self._subscriptions.remove(subscription)
        except ValueError:
            pass
        self._routes.clear()

    def now(self) -> float:
        return self._reactor.seconds()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def publish(
        self, topic: str, payload: Mapping[str, Any] | None = None, source: str = "daemon"
    ) -> Event:
        self._seq += 1
        event = Event(
            topic=topic,
            payload=dict(payload or {}),
            timestamp=self._reactor.seconds(),
            source=source,
            seq=self._seq,
        )
        self.published += 1
        self.history.append(event)
        for subscription in self._subscribers(topic):
            self._pending.append((subscription, event))
        if self._pending and self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        return event

    def _subscribers(self, topic: str) -> list[Subscription]:
        """Who takes `topic`: matched once per topic, not once per event (a task
        publishes a few events, and one per chunk of its output)."""
        found = self._routes.get(topic)
        if found is None:
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            found = self._routes[topic] = [s for s in self._subscriptions if s.matches(topic)]
        return found

    def _flush(self) -> None:
        self._flush_call = None
        batch, self._pending = self._pending, deque()
        finishing: dict[Subscription, None] = {}
        for subscription, event in batch:
            if not subscription.active:
                continue
            if subscription.delivered is not None:
                finishing[subscription] = None
            try:
                subscription.callback(event)
            except Exception:
                self.log.failure(
                    "event subscriber failed on {topic}", topic=event.topic
                )
        for subscription in finishing:
            try:
                subscription.delivered()  # type: ignore[misc]
            except Exception:
                self.log.failure("event subscriber failed after a delivery")

    def flush(self) -> None:
        """Deliver what is pending now, not on the next turn (used while stopping)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush()

    def close(self) -> None:
        """Deliver nothing more; cancel the pending delivery turn."""
        self._pending.clear()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
