"""Event bus delivery is eventual (next turn), pattern-matched and failure-isolated."""

from __future__ import annotations

from twisted.internet.task import Clock

from aiwg.daemon.bus import EventBus


def test_delivery_on_the_next_turn_to_matching_subscribers_only() -> None:
    clock = Clock()
    bus = EventBus(reactor=clock)
    tasks: list[str] = []
    everything: list[str] = []
    bus.subscribe(["task:*"], lambda e: tasks.append(e.topic))
    bus.subscribe(["*"], lambda e: everything.append(e.topic))
    bus.publish("task:started", {"taskId": "a"})
    bus.publish("daemon:reloaded")
    assert tasks == [] and everything == []  # never re-entrant
    clock.advance(0)
    assert tasks == ["task:started"]
    assert everything == ["task:started", "daemon:reloaded"]
    assert [e.seq for e in bus.history] == [1, 2]


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    clock = Clock()
    bus = EventBus(reactor=clock)
    got: list[str] = []

    def broken(event: object) -> None:
        raise RuntimeError("boom")

    bus.subscribe(["*"], broken)
    bus.subscribe(["*"], lambda e: got.append(e.topic))
    bus.publish("x:y")
    clock.advance(0)
    assert got == ["x:y"]


def test_cancelled_subscription_gets_nothing_even_if_already_queued() -> None:
    clock = Clock()
    bus = EventBus(reactor=clock)
    got: list[str] = []
    sub = bus.subscribe(["*"], lambda e: got.append(e.topic))
    bus.publish("a:b")
    sub.cancel()
    clock.advance(0)
    assert got == [] and bus.subscriber_count == 0


def test_close_cancels_pending_delivery() -> None:
    clock = Clock()
    bus = EventBus(reactor=clock)
    bus.subscribe(["*"], lambda e: None)
    bus.publish("a:b")
    bus.close()
    assert clock.getDelayedCalls() == []


def test_delivered_is_called_once_per_turn_after_the_events() -> None:
    clock = Clock()
    bus = EventBus(reactor=clock)
    seen: list[str] = []
    bus.subscribe(["task:*"], lambda e: seen.append(e.topic), delivered=lambda: seen.append("done"))
    bus.subscribe(["*"], lambda e: None, delivered=lambda: seen.append("other done"))
    bus.publish("task:queued")
    bus.publish("task:started")
    clock.advance(0)
    assert seen == ["task:queued", "task:started", "done", "other done"]
    bus.publish("daemon:reloaded")  # nothing for task:* this turn: no "done" either
    clock.advance(0)
    assert seen[4:] == ["other done"]
