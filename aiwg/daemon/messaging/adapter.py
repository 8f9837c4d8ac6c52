# tests: tests/daemon/test_messaging_adapter.py
"""What every bridge shares: its state for `daemon.status`, counters, and an outbox.

The outbox sends one message at a time per bridge, replies before notifications,
so a chat app sees them in order and a platform's rate limit is met by waiting,
not by a burst of refusals. A message that fails for a passing reason (network,
5xx) is retried with a jittered backoff a few times; one the platform refuses
for good (bad channel, blocked bot) is dropped and counted, so one bad target
never stalls the rest. The outbox is bounded: past its size the oldest
notification is dropped (and counted), never a reply.

States: `starting`, `connected`, `reconnecting` (with the time of the next
attempt), `error` (a problem a person must fix, e.g. a rejected token; retried
slowly), `stopped`.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, maybeDeferred
from twisted.logger import Logger

from aiwg.core.agents import redact
from aiwg.core.backoff import Backoff
from aiwg.core.messaging import Notice, split_text

#: Messages waiting per bridge before the oldest notification is dropped.
OUTBOX_LIMIT = 1000
#: Attempts of one message that keeps failing for a passing reason.
SEND_ATTEMPTS = 5
#: A connection up this long counts as a success: the reconnect backoff starts over.
STABLE_SECONDS = 60.0
#: At stop, how long the outbox may take to empty (the last notifications: tasks ended by the stop).
DRAIN_SECONDS = 5.0


class SendError(Exception):
    """A send that failed. `permanent`: retrying cannot help (the message is dropped)."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


def api_errors(d: Any) -> Deferred:
    """An API call's Deferred (or coroutine) with ApiError turned into SendError."""
    from aiwg.daemon.messaging.http import ApiError

    def mapped(failure: Any) -> Any:
        exc = failure.value
        if isinstance(exc, ApiError):
            raise SendError(str(exc), permanent=exc.permanent, retry_after=exc.retry_after)
        return failure

    return ensureDeferred(d).addErrback(mapped)


class Adapter(Service):
    """Base of the Telegram, Slack and Discord bridges (child services of the hub)."""

    platform = "?"
    #: Replies are cut into pieces of at most this many characters, each its own outbox
    #: item: a retry resends one piece, never the ones already delivered.
    reply_limit = 4000
    log = Logger()

    def __init__(self, *, reactor: Any, section: Mapping[str, Any], secrets: Mapping[str, str],
                 inbound: Callable[[Any], Any], backoff: Backoff | None = None) -> None:
        self.name = self.platform
        self.reactor = reactor
        self.section = section
        self.secrets = dict(secrets)
        self._secret_values = [v for v in self.secrets.values() if len(v) >= 4]  # shorter: too common to hide
        self.inbound = inbound  # hub.inbound(Inbound)
        self.backoff = backoff or Backoff(base=1.0, cap=300.0)
        self.state = "starting"
        self.detail = ""
        self.next_attempt: float | None = None
        self.connected_at: float | None = None
        self.counters = {"sent": 0, "received": 0, "refused": 0, "failed": 0,
                         "rate_limited": 0, "dropped": 0, "reconnects": 0}
        self._replies: deque[tuple[str, Any, Any, int]] = deque()
        self._notices: deque[tuple[str, Any, Any, int]] = deque()
        self._sending = False
        self._pumping = False
        self._draining: Deferred | None = None
        self._retry_call: Any = None
        self._send_backoff = Backoff(base=1.0, cap=60.0)
        self._loop: Deferred | None = None  # the receive loop (poll or socket)
        self._waiting: Deferred | None = None  # what the loop awaits now, cancelled at stop

    # -- what a bridge implements ------------------------------------------------

    def notice_targets(self) -> list[Any]:
        """Where notifications go (chat ids, channels, a webhook)."""
        raise NotImplementedError

    def send_notice(self, target: Any, notice: Notice) -> Deferred:
        raise NotImplementedError

    def send_reply(self, where: Mapping[str, Any], text: str) -> Deferred:
        raise NotImplementedError

    def listens(self) -> bool:
        """Whether this bridge receives commands and chat (not notifications only)."""
        return False

    # -- state ----------------------------------------------------------------------

    def redact(self, text: str) -> str:
        return redact(text, self._secret_values, "[secret]")

    def set_state(self, state: str, detail: str = "", next_attempt: float | None = None) -> None:
        detail = self.redact(detail)
        if (state, detail) != (self.state, self.detail):
            level = self.log.warn if state in ("error", "reconnecting") else self.log.info
            suffix = f" ({detail})" if detail else ""
            if next_attempt is not None:
                suffix += f"; next attempt in {max(0.0, next_attempt - self.reactor.seconds()):.1f}s"
            level("messaging: {platform}: {state}{suffix}", platform=self.platform, state=state, suffix=suffix)
        if state == "connected" and (self.state != "connected" or self.connected_at is None):
            self.connected_at = self.reactor.seconds()
        self.state, self.detail, self.next_attempt = state, detail, next_attempt

    def next_delay(self, server_says: float | None = None) -> float:
        """The wait before reconnecting. A connection that stayed up STABLE_SECONDS
        resets the backoff; one that opens and drops at once keeps it growing."""
        if self.connected_at is not None and self.reactor.seconds() - self.connected_at >= STABLE_SECONDS:
            self.backoff.succeeded()
        self.connected_at = None
        return self.backoff.failed(server_says)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state,
            "mode": "2-way" if self.listens() else "notifications only",
            **self.counters,
            "outbox": len(self._replies) + len(self._notices),
        }
        api = getattr(self, "api", None)
        waits = getattr(getattr(api, "http", api), "rate_limited", 0)  # 429s the API client waited out
        out["rate_limited"] += waits if isinstance(waits, int) else 0
        if self.detail:
            out["detail"] = self.detail
        if self.next_attempt is not None:
            out["nextAttemptIn"] = round(max(0.0, self.next_attempt - self.reactor.seconds()), 1)
        return out

    # -- the outbox -----------------------------------------------------------------

    def notify(self, notice: Notice, skip: Any = None) -> int:
        """Queue a notification for every target (but `skip`, a chat that gets the
        outcome as a reply anyway); how many were queued."""
        targets = [t for t in self.notice_targets() if skip is None or str(t) != str(skip)]
        for target in targets:
            if len(self._replies) + len(self._notices) >= OUTBOX_LIMIT:
                if not self._notices:
                    self.counters["dropped"] += 1
                    continue
                self._notices.popleft()
                self.counters["dropped"] += 1
                if self.counters["dropped"] == 1 or self.counters["dropped"] % 100 == 0:
                    self.log.warn("messaging: {platform}: outbox full, dropped {n} notification(s) so far",
                                  platform=self.platform, n=self.counters["dropped"])
            self._notices.append(("notice", target, notice, 0))
        self._pump()
        return len(targets)

    def reply(self, where: Mapping[str, Any], text: str) -> None:
        pieces = split_text(text, self.reply_limit)
        # Only the first piece answers the message (a quote, an interaction, a response URL).
        later = {k: v for k, v in where.items() if not k.startswith("_") and k != "message_id"}
        if self.urgent(where):
            self._send_now(where, pieces[0])
        else:
            self._replies.append(("reply", where, pieces[0], 0))
        for piece in pieces[1:]:
            self._replies.append(("reply", later, piece, 0))
        self._pump()

    def urgent(self, where: Mapping[str, Any]) -> bool:
        """A reply the platform needs within seconds (it must not wait in the outbox)."""
        return False

    def _send_now(self, where: Mapping[str, Any], text: str) -> None:
        def failed(failure: Any) -> None:
            self.counters["failed"] += 1
            self.log.error("messaging: {platform}: could not answer in time: {error}",
                           platform=self.platform, error=self.redact(failure.getErrorMessage()))
        maybeDeferred(self.send_reply, where, text).addCallbacks(
            lambda _: self.counters.__setitem__("sent", self.counters["sent"] + 1), failed)

    def _pump(self) -> None:
        """Send the next message when none is in flight. A loop, not recursion: a send
        that completes at once (a refused target, say) moves straight to the next."""
        if self._pumping:
            return  # the loop below picks the next one up
        self._pumping = True
        try:
            while not (self._sending or self._retry_call is not None
                       or not (self.running or self._draining is not None)):
                queue = self._replies if self._replies else self._notices
                if not queue:
                    if self._draining is not None and not self._draining.called:
                        self._draining.callback(None)
                    return
                self._send_one(*queue.popleft())
        finally:
            self._pumping = False

    def _send_one(self, kind: str, target: Any, content: Any, attempts: int) -> None:
        self._sending = True
        sender = self.send_notice if kind == "notice" else self.send_reply
        d = maybeDeferred(sender, target, content)

        def sent(_: Any) -> None:
            self.counters["sent"] += 1
            self._send_backoff.succeeded()

        def failed(failure: Any) -> None:
            exc = failure.value
            error = exc if isinstance(exc, SendError) else SendError(f"{type(exc).__name__}: {exc}")
            if error.permanent or attempts + 1 >= SEND_ATTEMPTS or not (self.running or self._draining):
                self.counters["failed"] += 1
                self.log.error("messaging: {platform}: could not send a {kind} to {target}: {error}",
                               platform=self.platform, kind=kind, target=self.show_target(target),
                               error=self.redact(str(error)))
                return
            delay = self._send_backoff.failed(error.retry_after)
            if error.retry_after is not None:
                self.counters["rate_limited"] += 1
            self.log.warn("messaging: {platform}: send failed ({error}); retrying in {delay:.1f}s",
                          platform=self.platform, error=self.redact(str(error)), delay=delay)
            (self._replies if kind == "reply" else self._notices).appendleft((kind, target, content, attempts + 1))
            self._retry_call = self.reactor.callLater(delay, self._retry)

        def done(_: Any) -> None:
            self._sending = False
            self._pump()

        d.addCallbacks(sent, failed).addBoth(done)

    def _retry(self) -> None:
        self._retry_call = None
        self._pump()

    def show_target(self, target: Any) -> str:
        if isinstance(target, Mapping):
            return ", ".join(f"{k}={v}" for k, v in target.items() if not k.startswith("_"))
        return "the webhook" if isinstance(target, str) and "://" in target else str(target)

    def startService(self) -> None:
        Service.startService(self)
        self._pump()

    def drain(self, seconds: float = DRAIN_SECONDS) -> Deferred:
        """Fires once the outbox is empty, or after `seconds` (what is left is logged)."""
        from twisted.internet.defer import succeed

        if not (self._replies or self._notices or self._sending):
            return succeed(None)
        self._draining = Deferred()
        timer = self.reactor.callLater(seconds, self._draining.callback, None)

        def done(_: Any) -> None:
            if timer.active():
                timer.cancel()
            left = len(self._replies) + len(self._notices)
            if left:
                self.log.warn("messaging: {platform}: stopping with {left} message(s) unsent",
                              platform=self.platform, left=left)
            self._draining = None

        self._draining.addCallback(done)
        self._pump()
        return self._draining

    def start_loop(self, run: Callable[[], Any]) -> None:
        """Run the receive loop `run()` (a coroutine function) until the stop."""
        self._loop = ensureDeferred(run())
        self._loop.addErrback(lambda f: None if f.check(CancelledError) else
                              self.log.failure("messaging: {platform}: receive loop ended", f, platform=self.platform))

    async def wait_for(self, d: Any) -> Any:
        """Await `d` so that a stop can cancel it."""
        self._waiting = d if isinstance(d, Deferred) else ensureDeferred(d)
        try:
            return await self._waiting
        finally:
            self._waiting = None

    def stop_receiving(self) -> None:
        """Stop listening for messages (a bridge's poll loop or socket)."""
        for pending in (self._waiting, self._loop):
            if pending is not None and not pending.called:
                pending.cancel()
        self._waiting = self._loop = None

    def close(self) -> Any:
        """Release connections once nothing more is sent."""
        return None

    def stopService(self) -> Any:
        """Stop taking work; give the outbox a few seconds; then stop for good."""
        Service.stopService(self)
        self.stop_receiving()
        return self.drain().addCallback(lambda _: self._stopped())

    def _stopped(self) -> Any:
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        self.state = "stopped"
        return self.close()


class ChannelBridge(Adapter):
    """A bridge that posts notices to channels with its bot token, or, with only an
    incoming webhook configured, to that webhook (Slack and Discord)."""

    def notice_targets(self) -> list[Any]:
        if self.secrets.get("bot_token"):
            return [str(c) for c in self.section["channel_ids"]]
        return [self.secrets["webhook_url"]] if self.secrets.get("webhook_url") else []
