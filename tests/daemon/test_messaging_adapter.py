"""The outbox every bridge shares, on a Clock: one send at a time and in order, replies
first, transient failures retried after the backoff, rate limits obeyed, permanent
failures dropped without stalling the rest, a bounded queue, secrets never shown."""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from aiwg.core.backoff import Backoff
from aiwg.core.messaging import Notice
from aiwg.daemon.messaging.adapter import DRAIN_SECONDS, OUTBOX_LIMIT, SEND_ATTEMPTS, Adapter, SendError

TOKEN = "bot-secret-token-1234"


class Bridge(Adapter):
    """A bridge whose sends are Deferreds the test fires by hand."""

    platform = "test"

    def __init__(self, clock: Clock, targets: tuple[Any, ...] = ("chat-a",)) -> None:
        super().__init__(reactor=clock, section={}, secrets={"bot_token": TOKEN, "short": "abc"},
                         inbound=lambda message: None)
        self.targets = list(targets)
        self.sends: list[tuple[str, Any, Any, Deferred]] = []
        self.events: list[dict] = []
        self.log = Logger(namespace="test", observer=self.events.append)
        # Deterministic jitter: every delay is the top of its range (1, 2, 4, 8 … seconds).
        self._send_backoff = Backoff(base=1.0, cap=60.0, rand=lambda: 1.0)

    def notice_targets(self) -> list[Any]:
        return self.targets

    def send_notice(self, target: Any, notice: Notice) -> Deferred:
        d: Deferred = Deferred()
        self.sends.append(("notice", target, notice.title, d))
        return d

    def send_reply(self, where: Mapping[str, Any], text: str) -> Deferred:
        d: Deferred = Deferred()
        self.sends.append(("reply", where["chat"], text, d))
        return d

    # helpers

    def shown(self) -> list[tuple[str, Any, Any]]:
        return [(kind, target, content) for kind, target, content, _ in self.sends]

    def last(self) -> Deferred:
        return self.sends[-1][3]

    def logged(self) -> str:
        return "\n".join(formatEvent(e) for e in self.events)


def started(targets: tuple[Any, ...] = ("chat-a",)) -> tuple[Bridge, Clock]:
    clock = Clock()
    bridge = Bridge(clock, targets)
    bridge.startService()
    return bridge, clock


def notice(title: str) -> Notice:
    return Notice(title=title, severity="info")


def test_one_send_in_flight_at_a_time_in_order() -> None:
    """A chat shows messages in the order they were sent only if they are sent one by one."""
    bridge, _ = started(targets=("a", "b"))
    assert bridge.notify(notice("first")) == 2
    bridge.notify(notice("second"))
    assert bridge.shown() == [("notice", "a", "first")]
    assert bridge.status()["outbox"] == 3
    for _ in range(3):
        bridge.last().callback(None)
    assert bridge.shown() == [("notice", "a", "first"), ("notice", "b", "first"),
                              ("notice", "a", "second"), ("notice", "b", "second")]
    bridge.last().callback(None)
    assert bridge.counters["sent"] == 4 and bridge.status()["outbox"] == 0


def test_nothing_is_sent_before_the_service_starts() -> None:
    """Queued while starting; sent once running, replies first."""
    clock = Clock()
    bridge = Bridge(clock)
    bridge.notify(notice("n1"))
    bridge.reply({"chat": "c"}, "answer")
    assert bridge.sends == [] and bridge.status()["outbox"] == 2
    bridge.startService()
    assert bridge.shown() == [("reply", "c", "answer")]


def test_replies_overtake_queued_notifications() -> None:
    """Someone waiting for an answer should not wait behind a burst of notifications."""
    bridge, _ = started()
    bridge.notify(notice("n1"))
    bridge.notify(notice("n2"))
    bridge.notify(notice("n3"))
    bridge.reply({"chat": "c"}, "r1")
    bridge.reply({"chat": "c"}, "r2")
    for _ in range(5):
        bridge.last().callback(None)
    assert [content for _, _, content in bridge.shown()] == ["n1", "r1", "r2", "n2", "n3"]


def test_a_transient_failure_is_retried_after_the_backoff() -> None:
    """Not a moment before the delay, then the same message again; success resets the backoff."""
    bridge, clock = started()
    bridge.notify(notice("n1"))
    bridge.notify(notice("n2"))
    bridge.last().errback(SendError("HTTP 502"))
    assert len(bridge.sends) == 1 and len(clock.getDelayedCalls()) == 1
    assert bridge._send_backoff.failures == 1
    clock.advance(0.99)
    assert len(bridge.sends) == 1  # n2 does not jump the queue either
    clock.advance(0.01)
    assert bridge.shown()[1] == ("notice", "chat-a", "n1")
    bridge.last().callback(None)
    assert bridge.shown()[2] == ("notice", "chat-a", "n2")
    assert bridge.counters["sent"] == 1 and bridge.counters["failed"] == 0
    assert bridge._send_backoff.failures == 0
    assert "send failed (HTTP 502); retrying in 1.0s" in bridge.logged()


def test_any_exception_counts_as_transient() -> None:
    """A bug or a network error that is not a SendError is retried, not lost."""
    bridge, clock = started()
    bridge.notify(notice("n1"))
    bridge.last().errback(ConnectionResetError("reset by peer"))
    assert bridge.counters["failed"] == 0
    clock.advance(1)
    assert len(bridge.sends) == 2


def test_retry_after_is_waited_out_and_counted() -> None:
    """The platform's own delay wins over the shorter backoff."""
    bridge, clock = started()
    bridge.notify(notice("n1"))
    bridge.last().errback(SendError("429", retry_after=7))
    assert bridge.counters["rate_limited"] == 1
    clock.advance(6.9)
    assert len(bridge.sends) == 1
    clock.advance(0.1)
    assert len(bridge.sends) == 2 and bridge.sends[1][2] == "n1"


def test_a_permanent_failure_drops_the_message_and_the_next_goes_at_once() -> None:
    """One bad channel must not stall the rest of the outbox."""
    bridge, clock = started(targets=("gone", "fine"))
    bridge.notify(notice("n1"))
    bridge.last().errback(SendError("channel_not_found", permanent=True))
    assert bridge.shown() == [("notice", "gone", "n1"), ("notice", "fine", "n1")]
    assert bridge.counters["failed"] == 1 and clock.getDelayedCalls() == []
    assert "could not send a notice to gone: channel_not_found" in bridge.logged()


def test_after_send_attempts_transient_failures_the_message_is_dropped() -> None:
    """A message that never gets through is given up, after growing delays."""
    bridge, clock = started()
    bridge.notify(notice("doomed"))
    bridge.notify(notice("next"))
    delays = []
    for attempt in range(SEND_ATTEMPTS):
        assert bridge.shown()[-1][2] == "doomed"
        bridge.last().errback(SendError("HTTP 503"))
        if attempt < SEND_ATTEMPTS - 1:
            (call,) = clock.getDelayedCalls()
            delays.append(call.getTime() - clock.seconds())
            clock.advance(delays[-1])
    assert delays == [1, 2, 4, 8]
    assert len(bridge.sends) == SEND_ATTEMPTS + 1 and bridge.shown()[-1][2] == "next"
    assert bridge.counters["failed"] == 1 and clock.getDelayedCalls() == []


def test_a_full_outbox_drops_the_oldest_notification() -> None:
    """Past OUTBOX_LIMIT the oldest notification goes, and the drop is counted."""
    clock = Clock()
    bridge = Bridge(clock)
    bridge.reply({"chat": "c"}, "answer")
    for i in range(OUTBOX_LIMIT - 1):
        bridge.notify(notice(f"n{i}"))
    assert bridge.status()["outbox"] == OUTBOX_LIMIT and bridge.counters["dropped"] == 0
    bridge.notify(notice("newest"))
    assert bridge.status()["outbox"] == OUTBOX_LIMIT and bridge.counters["dropped"] == 1
    assert "outbox full, dropped 1 notification(s) so far" in bridge.logged()
    bridge.startService()
    bridge.last().callback(None)
    assert bridge.shown() == [("reply", "c", "answer"), ("notice", "chat-a", "n1")]  # n0 was dropped
    assert bridge._notices[-1][2].title == "newest"


def test_replies_are_never_dropped() -> None:
    """An outbox full of replies refuses the new notification instead of dropping an answer."""
    clock = Clock()
    bridge = Bridge(clock)
    for i in range(OUTBOX_LIMIT):
        bridge.reply({"chat": "c"}, f"r{i}")
    assert bridge.notify(notice("late")) == 1
    assert bridge.counters["dropped"] == 1 and bridge.status()["outbox"] == OUTBOX_LIMIT
    assert all(kind == "reply" for kind, *_ in bridge._replies) and not bridge._notices
    bridge.reply({"chat": "c"}, "one more")
    assert bridge.status()["outbox"] == OUTBOX_LIMIT + 1


def test_notify_skips_the_chat_that_gets_a_reply() -> None:
    """The chat that asked for a task gets its result as a reply, not a second time as a notice."""
    bridge, _ = started(targets=(100, "200", "300"))
    assert bridge.notify(notice("done"), skip="100") == 2
    bridge.last().callback(None)
    assert [target for _, target, _ in bridge.shown()] == ["200", "300"]


def test_secrets_are_redacted_in_status_and_logs() -> None:
    """Error texts can quote a URL or header; the status and the log never show a secret."""
    bridge, clock = started()
    bridge.set_state("error", f"rejected token {TOKEN} (abc)", next_attempt=clock.seconds() + 30)
    status = bridge.status()
    assert status["state"] == "error" and status["nextAttemptIn"] == 30
    assert TOKEN not in status["detail"] and "[secret]" in status["detail"]
    assert "(abc)" in status["detail"]  # values shorter than four characters are left alone
    bridge.notify(notice("n1"))
    bridge.last().errback(SendError(f"POST https://api.test/bot{TOKEN}/send failed"))
    clock.advance(1)
    bridge.last().errback(SendError(f"still {TOKEN}", permanent=True))
    text = bridge.logged()
    assert TOKEN not in text and text.count("[secret]") >= 3
    assert "next attempt in 30.0s" in text


def test_targets_are_shown_without_secrets() -> None:
    """A webhook URL is a credential; a mapping drops its one-shot handles (`_response_url`)."""
    bridge, _ = started()
    assert bridge.show_target("https://hooks.test/services/secret") == "the webhook"
    assert bridge.show_target({"channel": "C1", "_response_url": "https://x/secret"}) == "channel=C1"
    assert bridge.show_target(42) == "42"


def test_stop_drains_the_outbox_then_stops() -> None:
    """Notifications about tasks the stop ended still go out, within the drain time."""
    bridge, clock = started()
    bridge.notify(notice("n1"))
    bridge.notify(notice("n2"))
    stopping = bridge.stopService()
    assert not stopping.called
    bridge.last().callback(None)
    assert bridge.shown()[-1][2] == "n2"
    bridge.last().callback(None)
    assert stopping.called and bridge.state == "stopped" and clock.getDelayedCalls() == []


def test_stop_cancels_a_pending_retry() -> None:
    """A retry timer must not outlive the service (it would fire into a stopped bridge)."""
    bridge, clock = started()
    bridge.notify(notice("n1"))
    bridge.last().errback(SendError("429", retry_after=60))
    assert len(clock.getDelayedCalls()) == 1
    stopping = bridge.stopService()
    clock.advance(DRAIN_SECONDS)
    assert stopping.called and bridge.state == "stopped"
    assert clock.getDelayedCalls() == [] and bridge._retry_call is None
    assert "stopping with 1 message(s) unsent" in bridge.logged()
    clock.advance(120)
    assert len(bridge.sends) == 1


def test_stop_with_an_empty_outbox_is_immediate() -> None:
    """Nothing to drain: no timer at all."""
    bridge, clock = started()
    assert bridge.stopService().called and bridge.state == "stopped"
    assert clock.getDelayedCalls() == []


class InstantBridge(Bridge):
    """A bridge whose sends complete at once (maybeDeferred allows a synchronous sender)."""

    def send_notice(self, target: Any, notice: Notice) -> Deferred:
        self.sends.append(("notice", target, notice.title, succeed(None)))
        return succeed(None)


def test_senders_that_finish_at_once_drain_a_long_outbox() -> None:
    """A synchronous sender must not make the pump recurse once per queued message."""
    clock = Clock()
    bridge = InstantBridge(clock)
    for i in range(100):
        bridge.notify(notice(f"n{i}"))
    bridge.startService()
    assert bridge.counters["sent"] == 100 and bridge.status()["outbox"] == 0



def test_senders_that_finish_at_once_drain_a_full_outbox() -> None:
    """Up to OUTBOX_LIMIT queued messages, all sent."""
    clock = Clock()
    bridge = InstantBridge(clock)
    for i in range(OUTBOX_LIMIT):
        bridge.notify(notice(f"n{i}"))
    bridge.startService()
    assert bridge.counters["sent"] == OUTBOX_LIMIT and bridge.status()["outbox"] == 0
