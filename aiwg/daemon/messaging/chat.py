# tests: tests/daemon/test_chat.py, tests/e2e/test_chat.py
"""Chat: each turn is a task (source `chat`); the daemon keeps the conversations.

A turn of an agent that reports sessions (output `claude-json`) resumes the
session the previous answer reported (`--resume <id>`, passed through the task's
metadata); other agents get the recent turns written into the prompt. Answers
are recorded when the turn's task ends. Idle conversations expire on a timer, so
memory stays flat however long the daemon runs; conversations are saved to
.aiwg/daemon/conversations.json every few seconds and at stop, so a restarted
daemon carries them on (a turn that was running is not).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from aiwg.core.config import Config
from aiwg.core.conversations import Conversations, UnknownConversation, new_conversation_id, prompt_with_history
from aiwg.core.events import Event
from aiwg.daemon.statefile import read_json, write_json_atomic
from aiwg.errors import InvalidParams
from aiwg.core.states import END_TOPICS

#: How often idle conversations are looked for.
EXPIRY_INTERVAL = 60.0
#: Conversations changed since the last save are written this often (and at stop),
#: so a restarted daemon carries them on.
SAVE_INTERVAL = 5.0


class ChatService(Service):
    name = "chat"
    log = Logger()

    def __init__(self, *, reactor: Any, bus: Any, config: Config, supervisor: Callable[[], Any],
                 state_file: Path | None = None) -> None:
        self._reactor = reactor
        self._state_file = state_file
        self._dirty = False
        self._bus = bus
        self._supervisor = supervisor
        self._section = config.data["chat"]
        self._output = config.data["agent"]["output"]
        self.chats = Conversations(**self._bounds(self._section))
        self._turn_of: dict[str, str] = {}  # running turn's task id → conversation id
        self._subscription: Any = None
        self._expiry: LoopingCall | None = None
        self._save_call: Any = None
        self.turns = 0

    @staticmethod
    def _bounds(section: dict[str, Any]) -> dict[str, Any]:
        return {
            "max_turns": int(section["max_turns"]),
            "max_bytes": int(section["max_history_kb"]) * 1024,
            "idle_seconds": float(section["idle_hours"]) * 3600,
            "max_conversations": int(section["max_conversations"]),
        }

    def startService(self) -> None:
        Service.startService(self)
        self._restore()
        self._subscription = self._bus.subscribe(list(END_TOPICS), self._ended)
        self._watch_expiry()

    def _changed(self) -> None:
        """Saved a few seconds after a change, once for a burst of them; an idle
        service (no change, no conversation) sets no timer at all."""
        self._dirty = True
        if self.running and (self._save_call is None or not self._save_call.active()):
            self._save_call = self._reactor.callLater(SAVE_INTERVAL, self._save_due)
        self._watch_expiry()

    def _save_due(self) -> None:
        self._save_call = None
        if self._dirty:
            self.save()

    def _watch_expiry(self) -> None:
        """Idle conversations are looked for every EXPIRY_INTERVAL while there are any."""
        if self.running and len(self.chats) and (self._expiry is None or not self._expiry.running):
            self._expiry = LoopingCall(self._tick)
            self._expiry.clock = self._reactor
            self._expiry.start(EXPIRY_INTERVAL, now=False)

    def _tick(self) -> None:
        self.expire()
        if not len(self.chats) and self._expiry is not None and self._expiry.running:
            self._expiry.stop()

    def _restore(self) -> None:
        if self._state_file is None:
            return
        saved = read_json(self._state_file, "chat", self.log)
        if saved is None:
            return
        count = self.chats.load(saved)
        gone = self.chats.expire(self._reactor.seconds())
        if count:
            self.log.info("chat: {count} conversation(s) restored", count=count - len(gone))

    def save(self) -> None:
        self._dirty = False
        if self._state_file is None:
            return
        try:
            write_json_atomic(self._state_file, self.chats.dump(), sync=False)
        except OSError as exc:
            self.log.error("chat: could not save conversations to {path}: {error}",
                           path=str(self._state_file), error=str(exc))

    def stopService(self) -> None:
        Service.stopService(self)
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        if self._dirty:
            self.save()

    # -- turns ---------------------------------------------------------------

    @property
    def output(self) -> str:
        """The agent's output format (agent.output): claude-json turns resume sessions."""
        return str(self._output)

    def send(self, message: str, conversation: str | None, priority: int | None, *,
             source: str = "chat", metadata: dict[str, Any] | None = None,
             reply_to: dict[str, Any] | None = None) -> Any:
        """Queue one turn; returns the task. The messaging bridges give their own
        source (`messaging:telegram`) and where to post the answer (metadata)."""
        now = self._reactor.seconds()
        conversation_id = conversation or new_conversation_id(secrets.token_bytes(5))
        chat = self.chats.open(conversation_id, now)
        resumable = self._output == "claude-json"
        metadata = {**(metadata or {}), "conversation": conversation_id}
        metadata.setdefault("source", "ipc-chat")
        prompt = message if resumable else prompt_with_history(chat, message)
        task = self._supervisor().add(
            prompt,
            priority=int(self._section["priority"]) if priority is None else priority,
            source=source,
            metadata=metadata,
            resume_session=chat.session_id if resumable else None,
            reply_to=reply_to,
            isolate=None if self._section.get("isolate") else False,  # a turn works in the project root
        )
        self.chats.ask(chat, message, task.id, now)
        self._turn_of[task.id] = conversation_id
        self._changed()
        self.turns += 1
        return task

    def _ended(self, event: Event) -> None:
        task_id = event.payload.get("taskId")
        conversation_id = self._turn_of.pop(task_id, None) if isinstance(task_id, str) else None
        if conversation_id is None:
            return
        store = getattr(self._supervisor(), "store", None)
        task = store.get(task_id) if store is not None else None
        if task is None:
            return
        answer = task.result if task.result is not None else (task.output_tail or "")
        self.chats.answered(conversation_id, task_id, answer if task.state.value == "completed" else (task.error or ""),
                            task.state.value, self._reactor.seconds(), session_id=task.session_id)
        self._changed()

    def reset(self, conversation: str) -> bool:
        self._changed()
        for task_id, owner in list(self._turn_of.items()):
            if owner == conversation:
                del self._turn_of[task_id]
        return self.chats.reset(conversation)

    def history(self, conversation: str) -> dict[str, Any]:
        try:
            chat = self.chats.get(conversation)
        except UnknownConversation:
            raise InvalidParams(
                f"Unknown conversation: {conversation} (parameter 'conversation'; it may have expired)",
                {"conversation": conversation},
            ) from None
        return {**chat.to_json(), "history": self.chats.history(conversation)}

    def expire(self) -> list[str]:
        gone = self.chats.expire(self._reactor.seconds())
        if gone:
            self._changed()
            self.log.info("chat: {count} idle conversation(s) expired", count=len(gone))
        return gone

    # -- reload and status -------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        self._output = config.data["agent"]["output"]
        section = config.data["chat"]
        if section != self._section:
            self._section = section
            for name, value in self._bounds(section).items():  # from the next turn on
                setattr(self.chats, name, value)

    def status(self) -> dict[str, Any]:
        return {"conversations": len(self.chats), "turns": self.turns, "running_turns": len(self._turn_of)}
