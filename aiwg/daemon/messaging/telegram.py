# tests: tests/daemon/test_telegram_adapter.py, tests/e2e/test_messaging.py
"""The Telegram bridge: Bot API long polling in, sendMessage out.

One getUpdates request is held open at a time (`poll_timeout_seconds`); each
answer's updates are confirmed by the next request's offset. The offset is also
saved (with the bot's id) before the updates are handled, so a daemon killed
mid-batch does not run a `/task` twice when it comes back. Errors back off with
jitter; 409 (another poller on the same token, often a second daemon or bot
process) and a rejected token are reported as errors a person must fix, and are
retried slowly in case they do. Handling an update never waits for the agent:
answers come back as replies when their tasks end.

Private chats: every message counts. Groups: commands, messages that mention
the bot (`@name`) and replies to the bot's own messages.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from twisted.internet import task as txtask
from twisted.internet.defer import CancelledError, Deferred

from aiwg.core import notice_formats
from aiwg.core.backoff import Backoff
from aiwg.core.messaging import Command, Inbound, Notice
from aiwg.daemon.messaging.adapter import Adapter, SendError
from aiwg.daemon.messaging.telegram_api import TelegramApi, TelegramError
from aiwg.daemon.statefile import write_json_atomic


#: A conflict (409) this long ago no longer lengthens the wait after the next one.
CONFLICT_QUIET = 600.0


class TelegramAdapter(Adapter):
    platform = "telegram"
    reply_limit = 4096  # Telegram counts after entity parsing: escaping does not count

    def __init__(self, *, state_dir: Path | None = None, api: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.api = api or TelegramApi(base_url=self.section["api_base_url"], token=self.secrets["bot_token"],
                                      reactor=self.reactor)
        self.bot_name: str | None = None
        self.bot_id: int | None = None
        self.offset: int | None = None
        self._offset_file = state_dir / "telegram.json" if state_dir is not None else None
        # Two pollers take turns succeeding, so a 409 backs off on its own count,
        # forgotten only after CONFLICT_QUIET seconds without one.
        self._conflicts = Backoff(base=5.0, cap=300.0)
        self._last_conflict = float("-inf")

    def listens(self) -> bool:
        return True

    # -- out --------------------------------------------------------------------

    def notice_targets(self) -> list[Any]:
        return list(self.section["chat_ids"])

    def send_notice(self, target: Any, notice: Notice) -> Deferred:
        return self._send(target, notice_formats.telegram(notice), html=True)

    def send_reply(self, where: Mapping[str, Any], text: str) -> Deferred:
        return self._send(where["chat_id"], text, reply_to=where.get("message_id"), thread=where.get("thread"))

    def _send(self, chat_id: Any, text: str, **options: Any) -> Deferred:
        def mapped(failure: Any) -> None:
            exc = failure.value
            if isinstance(exc, TelegramError):
                permanent = exc.status in (400, 401, 403, 404)
                raise SendError(str(exc), permanent=permanent, retry_after=exc.retry_after)
            return failure

        return self.api.send_message(chat_id, text, **options).addErrback(mapped)

    # -- in -----------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self.start_loop(self._run)

    def close(self) -> Any:
        return self.api.close()

    async def _run(self) -> None:
        timeout = int(self.section["poll_timeout_seconds"])
        while self.running:
            try:
                if self.bot_id is None:
                    me = await self.wait_for(self.api.call("getMe", {}))
                    self.bot_id, self.bot_name = me.get("id"), me.get("username")
                    self._restore_offset()
                    self.set_state("connected", f"as @{self.bot_name}")
                updates = await self.wait_for(self.api.get_updates(self.offset, timeout))
                if self.state != "connected":
                    self.set_state("connected", f"as @{self.bot_name}")
                if updates:
                    self.offset = max(int(u["update_id"]) for u in updates) + 1
                    self._save_offset()
                    for update in updates:
                        self._handle(update)
            except CancelledError:
                return
            except TelegramError as exc:
                if not self.running:
                    return
                await self._failed(exc)
            except Exception as exc:  # a malformed answer: keep polling
                if not self.running:
                    return
                await self._failed(TelegramError(0, f"{type(exc).__name__}: {exc}"))

    async def _failed(self, exc: TelegramError) -> None:
        self.counters["reconnects"] += 1
        now = self.reactor.seconds()
        if exc.status == 409:
            if now - self._last_conflict > CONFLICT_QUIET:
                self._conflicts.succeeded()
            self._last_conflict = now
            delay = self._conflicts.failed()
        else:
            delay = self.next_delay(exc.retry_after)
        when = self.reactor.seconds() + delay
        if exc.status == 409:
            self.set_state("error", f"another process is polling this bot token ({exc.description}); stop the "
                           "other bot or daemon using it, or delete its webhook", when)
        elif exc.status in (401, 404):
            self.set_state("error", f"Telegram rejected the bot token ({exc.description}); check "
                           "messaging.telegram.bot_token", when)
        elif exc.status == 429:
            self.counters["rate_limited"] += 1
            self.set_state("reconnecting", f"rate limited: {exc.description}", when)
        else:
            self.set_state("reconnecting", exc.description, when)
        await self.wait_for(txtask.deferLater(self.reactor, delay, lambda: None))

    def _handle(self, update: Mapping[str, Any]) -> None:
        message = update.get("message")
        if not isinstance(message, Mapping) or not isinstance(message.get("text"), str):
            return
        sender = message.get("from") or {}
        chat = message.get("chat") or {}
        if sender.get("is_bot"):
            return
        text = message["text"]
        private = chat.get("type") == "private"
        command = None
        if text.lstrip().startswith("/"):
            head = text.strip().split()[0][1:]
            name, _, addressee = head.partition("@")
            if addressee and self.bot_name and addressee.lower() != self.bot_name.lower():
                return  # a command for another bot in the group
            if name.lower() == "start":  # what Telegram sends when someone presses Start
                command = Command("help")
        if not private and not text.lstrip().startswith("/"):
            mention = f"@{self.bot_name}" if self.bot_name else None
            replied = (message.get("reply_to_message") or {}).get("from", {}).get("id")
            found = re.search(rf"{re.escape(mention)}(?![A-Za-z0-9_])", text, re.I) if mention else None
            if found:  # the whole handle: @ourbot, not @ourbot_staging_bot
                text = (text[:found.start()] + text[found.end():]).strip()
            elif not (self.bot_id is not None and replied == self.bot_id):
                return  # group chatter not meant for the bot
        thread = message.get("message_thread_id") if message.get("is_topic_message") else None
        where: dict[str, Any] = {"chat_id": chat.get("id"), "message_id": message.get("message_id")}
        conversation = f"telegram:{chat.get('id')}"
        if thread is not None:
            where["thread"] = thread
            conversation += f":{thread}"
        self.inbound(Inbound(
            platform="telegram", user=str(sender.get("id")), chat=str(chat.get("id")), text=text,
            where=where, conversation=conversation[:64],
            user_name=str(sender.get("username") or sender.get("first_name") or ""), command=command,
        ))

    # -- the offset survives restarts -----------------------------------------------

    def _restore_offset(self) -> None:
        if self._offset_file is None or self.offset is not None:
            return
        try:
            saved = json.loads(self._offset_file.read_text())
        except (OSError, ValueError):
            return
        if isinstance(saved, dict) and saved.get("bot") == self.bot_id and isinstance(saved.get("offset"), int):
            self.offset = saved["offset"]

    def _save_offset(self) -> None:
        if self._offset_file is None:
            return
        try:
            write_json_atomic(self._offset_file, {"bot": self.bot_id, "offset": self.offset}, sync=False)
        except OSError as exc:
            self.log.warn("messaging: telegram: could not save the update offset: {error}", error=str(exc))
