# tests: tests/daemon/test_discord_gateway.py, tests/e2e/test_messaging.py
"""The Discord bridge: REST channel messages (or a webhook) out, the gateway in.

Gateway session, as Discord documents it: Hello gives the heartbeat interval;
the first heartbeat goes after a random fraction of it, then one per interval
carrying the last sequence number. A heartbeat whose ACK has not come back by
the next one means a zombie connection: it is dropped and the session
resumed (op 6 with session id and sequence, on the `resume_gateway_url` READY
gave), so no message is lost across a drop. Reconnect (op 7) resumes too;
Invalid Session (op 9) resumes when Discord says it can, identifies afresh
otherwise. Close codes that no retry can fix (bad token, disallowed intents,
…) stop the bridge in state `error` with what to change.

Identify asks for guild messages, direct messages and MESSAGE_CONTENT (a
privileged intent: without it in the Developer Portal Discord closes with 4014).
Direct messages and messages that mention the bot reach the hub; so do
application commands (`/status`, `/tasks`, `/task`, `/cancel`, `/help`, or
`/aiwg text:<…>`), which are answered through their interaction.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from twisted.internet import task as txtask
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred

from aiwg.core import notice_formats
from aiwg.core.messaging import COMMANDS, LIMITS, Command, Inbound, Notice, split_text, umbrella
from aiwg.daemon.messaging.adapter import ChannelBridge, api_errors
from aiwg.daemon.messaging.discord_api import DiscordApi
from aiwg.daemon.messaging.http import ApiError
from aiwg.daemon.messaging.websocket import open_socket

GUILD_MESSAGES, DIRECT_MESSAGES, MESSAGE_CONTENT = 1 << 9, 1 << 12, 1 << 15
INTENTS = GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT
#: Close codes after which reconnecting cannot help, and what to do about each.
FATAL = {
    4004: "Discord rejected the bot token (4004 authentication failed); check messaging.discord.bot_token",
    4010: "invalid shard (4010)",
    4011: "sharding required (4011): the bot is in too many guilds for one connection",
    4012: "invalid API version (4012)",
    4013: "invalid intents (4013)",
    4014: "disallowed intents (4014): turn on the Message Content intent for the bot in the Discord "
          "Developer Portal (Bot → Privileged Gateway Intents)",
}
#: Close codes after which the session cannot be resumed (identify afresh).
FRESH_SESSION = {4007, 4009}
ZOMBIE_CLOSE = 4000  # any non-1000 code keeps the session resumable


class DiscordAdapter(ChannelBridge):
    platform = "discord"
    reply_limit = 2000

    def __init__(self, *, state_dir: Path | None = None, api: Any = None,
                 rand: Callable[[], float] = random.random, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = api or DiscordApi(base_url=self.section["api_base_url"], bot_token=self.secrets.get("bot_token", ""),
                                     webhook_url=self.secrets.get("webhook_url", ""), reactor=self.reactor)
        self._rand = rand
        self.bot_id: str | None = None
        self.session_id: str | None = None
        self.seq: int | None = None
        self.resume_url: str | None = None
        self._socket: Any = None
        self._closed: Deferred | None = None
        self._heartbeat: Any = None
        self._acked = True
        self._fatal: str | None = None

    def listens(self) -> bool:
        return bool(self.secrets.get("bot_token"))

    # -- out --------------------------------------------------------------------

    def send_notice(self, target: Any, notice: Notice) -> Deferred:
        body = notice_formats.discord(notice)
        if target == self.secrets.get("webhook_url"):
            return api_errors(self.api.execute_webhook(target, body))
        return api_errors(self.api.create_message(target, body))

    def urgent(self, where: Mapping[str, Any]) -> bool:
        return bool(where.get("_interaction"))  # Discord wants an answer within 3 s

    def send_reply(self, where: Mapping[str, Any], text: str) -> Deferred:
        return ensureDeferred(self._reply(where, text))

    async def _reply(self, where: Mapping[str, Any], text: str) -> None:
        pieces = split_text(text, LIMITS["discord"])
        interaction = where.get("_interaction")
        for index, piece in enumerate(pieces):
            body: dict[str, Any] = {"content": piece, "allowed_mentions": {"parse": []}}
            if index == 0 and interaction:
                await api_errors(self.api.interaction_callback(
                    interaction["id"], interaction["token"], {"type": 4, "data": body}))
                continue
            if index == 0 and where.get("message_id"):
                body["message_reference"] = {"message_id": where["message_id"], "fail_if_not_exists": False}
            await api_errors(self.api.create_message(where["channel_id"], body))

    # -- in: the gateway ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.start_loop(self._run)

    def stop_receiving(self) -> None:
        self._stop_heartbeat()
        super().stop_receiving()
        if self._socket is not None:
            self._socket.sendClose(1000)  # a clean close ends the session, as a stopping bot should
            self._socket = None

    def close(self) -> Any:
        self._stop_heartbeat()
        return self.api.close()

    async def _run(self) -> None:
        gateway = self.section.get("gateway_url") or ""
        while self.running:
            try:
                if not self.listens():
                    self.set_state("connected", "webhook")
                    return
                if not gateway:
                    gateway = await self.wait_for(self.api.gateway_url())
                url = self.resume_url if (self.session_id and self.resume_url) else gateway
                self._closed = Deferred()
                self._socket = await self.wait_for(
                    open_socket(self.reactor, _with_query(url), self._frame, self._socket_closed))
                code, reason = await self.wait_for(self._closed)
                self._socket = None
                self._stop_heartbeat()
                if code in FATAL:
                    self._fatal = FATAL[code]
                    self.set_state("error", self._fatal)
                    return  # retrying cannot help; a reload or restart tries again
                if code in FRESH_SESSION:
                    self.session_id = self.seq = self.resume_url = None
                if code == 1000 and not self.session_id:
                    self.counters["reconnects"] += 1  # we closed it to start afresh (invalid session):
                    pause = max(1 + 4 * self._rand(), self.next_delay())  # Discord asks for 1-5 s; each
                    await self.wait_for(txtask.deferLater(self.reactor, pause, lambda: None))  # identify counts
                    continue
                raise ApiError(f"gateway connection closed (code {code}{', ' + reason if reason else ''})")
            except CancelledError:
                return
            except Exception as exc:  # never let the loop die: back off and try again
                if not self.running:
                    return
                self._stop_heartbeat()
                self.counters["reconnects"] += 1
                delay = self.next_delay(getattr(exc, "retry_after", None))
                if getattr(exc, "status", 0) == 401:
                    self.set_state("error", "Discord rejected the bot token (401); check "
                                   "messaging.discord.bot_token", self.reactor.seconds() + delay)
                else:
                    self.set_state("reconnecting", str(exc), self.reactor.seconds() + delay)
                await self.wait_for(txtask.deferLater(self.reactor, delay, lambda: None))

    def _socket_closed(self, proto: Any, code: int | None, reason: str) -> None:
        if self._closed is not None and not self._closed.called:
            self._closed.callback((code, reason))

    def _send(self, proto: Any, op: int, d: Any) -> None:
        proto.sendMessage(json.dumps({"op": op, "d": d}).encode())

    # -- heartbeats -----------------------------------------------------------------------

    def _start_heartbeat(self, proto: Any, interval: float) -> None:
        self._stop_heartbeat()
        self._acked = True
        self._heartbeat = self.reactor.callLater(interval * self._rand(), self._beat, proto, interval)

    def _beat(self, proto: Any, interval: float) -> None:
        self._heartbeat = None
        if not self._acked:
            self.log.warn("messaging: discord: no heartbeat ACK; the connection is a zombie, resuming")
            proto.dropConnection(abort=True)  # closes with 1006: the session stays resumable
            return
        self._acked = False
        self._send(proto, 1, self.seq)
        self._heartbeat = self.reactor.callLater(interval, self._beat, proto, interval)

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None and self._heartbeat.active():
            self._heartbeat.cancel()
        self._heartbeat = None

    # -- frames ---------------------------------------------------------------------------

    def _frame(self, proto: Any, payload: bytes) -> None:
        if not self.running:
            return  # stopping: nothing new is taken on
        try:
            frame = json.loads(payload)
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        op, d = frame.get("op"), frame.get("d")
        if frame.get("s") is not None:
            self.seq = frame["s"]
        if op == 10:
            self._start_heartbeat(proto, float(d["heartbeat_interval"]) / 1000)
            if self.session_id and self.seq is not None:
                self._send(proto, 6, {"token": self.secrets["bot_token"], "session_id": self.session_id,
                                      "seq": self.seq})
            else:
                self._send(proto, 2, {"token": self.secrets["bot_token"], "intents": INTENTS,
                                      "properties": {"os": "linux", "browser": "aiwg-daemon",
                                                     "device": "aiwg-daemon"}})
        elif op == 11:
            self._acked = True
        elif op == 1:
            self._send(proto, 1, self.seq)
        elif op == 7:
            self.log.info("messaging: discord: Discord asked to reconnect; resuming")
            proto.sendClose(ZOMBIE_CLOSE)
        elif op == 9:
            if not d:
                self.session_id = self.seq = self.resume_url = None
                proto.sendClose(1000)
            else:
                proto.sendClose(ZOMBIE_CLOSE)
        elif op == 0:
            self._dispatch(proto, frame.get("t"), d or {})

    def _dispatch(self, proto: Any, kind: Any, d: Mapping[str, Any]) -> None:
        if kind == "READY":
            self.session_id = d.get("session_id")
            self.resume_url = d.get("resume_gateway_url")
            self.bot_id = str((d.get("user") or {}).get("id"))
            self.set_state("connected", f"as {(d.get('user') or {}).get('username')}")
        elif kind == "RESUMED":
            self.set_state("connected", "resumed")
        elif kind == "MESSAGE_CREATE":
            self._message(d)
        elif kind == "INTERACTION_CREATE":
            self._interaction(d)

    def _message(self, d: Mapping[str, Any]) -> None:
        author = d.get("author") or {}
        if author.get("bot") or str(author.get("id")) == self.bot_id:
            return
        text = str(d.get("content") or "")
        mentioned = any(str(m.get("id")) == self.bot_id for m in d.get("mentions") or [])
        if d.get("guild_id") and not mentioned:
            return  # guild chatter not addressed to the bot
        if mentioned:
            text = re.sub(rf"<@!?{re.escape(str(self.bot_id))}>", "", text).strip()
        channel = str(d.get("channel_id"))
        self.inbound(Inbound(platform="discord", user=str(author.get("id")), chat=channel, text=text,
                             where={"channel_id": channel, "message_id": d.get("id")},
                             conversation=f"discord:{channel}"[:64], user_name=str(author.get("username") or "")))

    def _interaction(self, d: Mapping[str, Any]) -> None:
        if d.get("type") != 2:  # application commands only
            return
        data = d.get("data") or {}
        name = str(data.get("name") or "").lower()
        values = [str(o.get("value")) for o in data.get("options") or [] if o.get("value") is not None]
        argument = " ".join(values)
        command = Command(name, argument) if name in COMMANDS else umbrella(argument)
        user = (d.get("member") or {}).get("user") or d.get("user") or {}
        channel = str(d.get("channel_id"))
        self.inbound(Inbound(
            platform="discord", user=str(user.get("id")), chat=channel, text=argument,
            where={"channel_id": channel, "_interaction": {"id": d.get("id"), "token": d.get("token")}},
            conversation=f"discord:{channel}"[:64], user_name=str(user.get("username") or ""),
            command=command, must_answer=True,
        ))


def _with_query(url: str) -> str:
    """The gateway URL with the API version and encoding asked for."""
    if "v=" in url:
        return url
    return url + ("&" if "?" in url else ("?" if url.endswith("/") else "/?")) + "v=10&encoding=json"
