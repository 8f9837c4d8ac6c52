# tests: tests/e2e/test_messaging.py
"""The Slack bridge: chat.postMessage (or an incoming webhook) out, Socket Mode in.

With an app token the bridge opens a Socket Mode connection (a fresh
single-use URL from `apps.connections.open` each time), acknowledges every
envelope by its `envelope_id` at once (Slack redelivers unacknowledged ones;
a redelivered event is recognised by its `event_id` and dropped), and
reconnects: at once on Slack's `disconnect` notice (a planned refresh), with
a jittered backoff after a lost connection.

What reaches the hub: direct messages (channel type `im`), mentions of the
bot in channels (answered in a thread, one conversation per thread), and
slash commands (`/aiwg tasks failed`, or a command registered under one of the
command names, such as `/aiwg-status`… any `/<name>` whose name ends in a known
command). A slash command's quick answer (queued, refused, the status) is
ephemeral, seen by the person who typed it; results and chat answers are posted
in the channel. The bot's own messages and edits are ignored.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

from twisted.internet import task as txtask
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred

from aiwg.core import notice_formats
from aiwg.core.messaging import COMMANDS, LIMITS, Command, Inbound, Notice, slack_escape, split_text, umbrella
from aiwg.daemon.messaging.adapter import STABLE_SECONDS, ChannelBridge, api_errors
from aiwg.daemon.messaging.http import ApiError
from aiwg.daemon.messaging.slack_api import AUTH, SlackApi
from aiwg.daemon.messaging.websocket import open_socket

#: Recent event ids kept to drop redeliveries.
SEEN_EVENTS = 500
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


class SlackAdapter(ChannelBridge):
    platform = "slack"
    reply_limit = 8000  # escaping (`&amp;`) can make it five times longer: still within 40,000

    def __init__(self, *, state_dir: Path | None = None, api: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = api or SlackApi(base_url=self.section["api_base_url"], bot_token=self.secrets.get("bot_token", ""),
                                   app_token=self.secrets.get("app_token", ""),
                                   webhook_url=self.secrets.get("webhook_url", ""), reactor=self.reactor)
        self.bot_user: str | None = None
        self._socket: Any = None
        self._closed: Deferred | None = None
        self._planned: str | bool = False
        self._seen: OrderedDict[str, None] = OrderedDict()

    def listens(self) -> bool:
        return bool(self.secrets.get("app_token") and self.secrets.get("bot_token"))

    # -- out --------------------------------------------------------------------

    def send_notice(self, target: Any, notice: Notice) -> Deferred:
        body = notice_formats.slack(notice)
        if target == self.secrets.get("webhook_url"):
            return api_errors(self.api.post_plain(target, body, "webhook"))
        return api_errors(self.api.post_message(target, body["text"], body["blocks"]))

    def send_reply(self, where: Mapping[str, Any], text: str) -> Deferred:
        return ensureDeferred(self._reply(where, text))

    async def _reply(self, where: Mapping[str, Any], text: str) -> None:
        pieces = split_text(text, LIMITS["slack"])
        if where.get("_response_url") and len(pieces) == 1:
            await api_errors(self.api.post_plain(
                where["_response_url"], {"text": slack_escape(pieces[0]), "response_type": "ephemeral"},
                "response_url"))
            return
        for piece in pieces:
            await api_errors(self.api.post_message(where["channel"], slack_escape(piece),
                                                     thread_ts=where.get("thread_ts")))

    # -- in: Socket Mode ----------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.start_loop(self._run)

    def stop_receiving(self) -> None:
        super().stop_receiving()
        if self._socket is not None:
            self._socket.sendClose(1000)
            self._socket = None

    def close(self) -> Any:
        return self.api.close()

    async def _run(self) -> None:
        while self.running:
            try:
                if self.secrets.get("bot_token") and self.bot_user is None:
                    me = await self.wait_for(self.api.auth_test())
                    self.bot_user = me.get("user_id")
                if not self.listens():
                    self.set_state("connected", "" if self.secrets.get("bot_token") else "webhook")
                    return
                url = await self.wait_for(self.api.connections_open())
                self._closed = Deferred()
                self._planned = False
                self._socket = await self.wait_for(open_socket(self.reactor, url, self._frame, self._socket_closed))
                code, reason = await self.wait_for(self._closed)
                self._socket = None
                if self._planned == "link_disabled":
                    raise ApiError("Socket Mode was turned off for the app (link_disabled); turn it on in "
                                   "the app's settings", code="link_disabled")
                if self._planned:
                    self.counters["reconnects"] += 1
                    if self.reactor.seconds() - (self.connected_at or 0) < STABLE_SECONDS:
                        await self.wait_for(txtask.deferLater(self.reactor, self.next_delay(), lambda: None))
                    continue  # Slack asked for a new connection: at once, unless that keeps happening
                raise ApiError(f"Socket Mode connection lost (code {code}{', ' + reason if reason else ''})")
            except CancelledError:
                return
            except Exception as exc:  # never let the loop die: back off and try again
                if not self.running:
                    return
                await self._failed(exc)

    async def _failed(self, exc: Exception) -> None:
        self.counters["reconnects"] += 1
        retry_after = getattr(exc, "retry_after", None)
        delay = self.next_delay(retry_after)
        when = self.reactor.seconds() + delay
        code = getattr(exc, "code", "")
        if code == "link_disabled":
            self.set_state("error", str(exc), when)
        elif code in AUTH:
            self.set_state("error", f"Slack rejected a token ({code}); check messaging.slack.bot_token and "
                           "app_token (the app token needs connections:write)", when)
        else:
            self.set_state("reconnecting", str(exc), when)
        await self.wait_for(txtask.deferLater(self.reactor, delay, lambda: None))

    def _socket_closed(self, proto: Any, code: int | None, reason: str) -> None:
        if self._closed is not None and not self._closed.called:
            self._closed.callback((code, reason))

    def _frame(self, proto: Any, payload: bytes) -> None:
        if not self.running:
            return  # stopping: nothing new is taken on (Slack redelivers what is not acked)
        try:
            frame = json.loads(payload)
        except ValueError:
            self.log.warn("messaging: slack: a frame that is not JSON was ignored")
            return
        if not isinstance(frame, dict):
            return
        if frame.get("envelope_id"):
            proto.sendMessage(json.dumps({"envelope_id": frame["envelope_id"]}).encode())
        kind = frame.get("type")
        if kind == "hello":
            self.set_state("connected", "Socket Mode")
        elif kind == "disconnect":
            self._planned = str(frame.get("reason") or "refresh_requested")
            self.log.info("messaging: slack: Slack asked to reconnect ({reason})", reason=frame.get("reason"))
            proto.sendClose(1000)
        elif kind == "events_api":
            self._event(frame.get("payload") or {})
        elif kind == "slash_commands":
            self._slash(frame.get("payload") or {})

    def _seen_before(self, event_id: Any) -> bool:
        if not event_id:
            return False
        if event_id in self._seen:
            return True
        self._seen[event_id] = None
        while len(self._seen) > SEEN_EVENTS:
            self._seen.popitem(last=False)
        return False

    def _event(self, payload: Mapping[str, Any]) -> None:
        if self._seen_before(payload.get("event_id")):
            return
        event = payload.get("event") or {}
        kind = event.get("type")
        if event.get("bot_id") or event.get("subtype") or (self.bot_user and event.get("user") == self.bot_user):
            return
        text = str(event.get("text") or "")
        channel = str(event.get("channel") or "")
        if kind == "message" and event.get("channel_type") == "im":
            text = self._without_mention(text)
            thread = event.get("thread_ts")
            where: dict[str, Any] = {"channel": channel}
            conversation = f"slack:{channel}"
            if thread:
                where["thread_ts"] = thread
                conversation += f":{thread}"
        elif kind == "app_mention":
            text = self._without_mention(text)
            thread = event.get("thread_ts") or event.get("ts")
            where = {"channel": channel, "thread_ts": thread}
            conversation = f"slack:{channel}:{thread}"
        else:
            return
        self.inbound(Inbound(platform="slack", user=str(event.get("user")), chat=channel, text=text,
                             where=where, conversation=conversation[:64]))

    def _without_mention(self, text: str) -> str:
        return _MENTION.sub(lambda m: "" if m.group(1) == self.bot_user else m.group(0), text).strip()

    def _slash(self, payload: Mapping[str, Any]) -> None:
        name = str(payload.get("command") or "").lstrip("/").lower()
        text = str(payload.get("text") or "")
        known = next((c for c in COMMANDS if name == c or name.endswith("-" + c)), None)
        command = Command(known, text.strip()) if known else umbrella(text)
        channel = str(payload.get("channel_id") or "")
        where: dict[str, Any] = {"channel": channel}
        if payload.get("response_url"):
            where["_response_url"] = payload["response_url"]
        self.inbound(Inbound(platform="slack", user=str(payload.get("user_id")), chat=channel, text=text,
                             where=where, conversation=f"slack:{channel}"[:64],
                             user_name=str(payload.get("user_name") or ""), command=command,
                             must_answer=True))  # a slash command shows nothing until answered
