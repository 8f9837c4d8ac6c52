# tests: tests/core/test_conversations.py
"""Chat conversations: turns, the agent session to resume, and the bounds that keep
memory flat however long the daemon runs. Pure: times come in as `now`.

For an agent with resumable sessions (`claude --output-format json` reports a
`session_id`; `--resume <id>` continues it, and every resumed run reports a new
id) a follow-up turn resumes the latest session. For other agents the recent
turns are written into the prompt instead.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from typing import Any, Iterator

from attrs import define, field, frozen

DEFAULT_MAX_TURNS = 50
DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_IDLE_SECONDS = 24 * 3600.0
DEFAULT_MAX_CONVERSATIONS = 200
#: How much history goes into the prompt of an agent that cannot resume a session.
PROMPT_HISTORY_BYTES = 16 * 1024

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class UnknownConversation(KeyError):
    pass


def new_conversation_id(random_bytes: bytes) -> str:
    """`c-` and 10 hex digits: the id of a conversation nobody named (the REPL's
    and chat.send's alike)."""
    return "c-" + random_bytes[:5].hex()


def conversation_id_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        return "must be 1-64 letters, digits or _ . : -"
    return None


@frozen
class Turn:
    role: str  # "user" or "assistant"
    text: str
    at: float
    task_id: str | None = None
    state: str | None = None  # the task's final state, for assistant turns

    @property
    def size(self) -> int:
        return len(self.text.encode("utf-8", "replace"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "text": self.text, "at": self.at}
        if self.task_id:
            out["taskId"] = self.task_id
        if self.state:
            out["state"] = self.state
        return out


@define
class Conversation:
    id: str
    created_at: float
    last_active: float
    session_id: str | None = None
    turns: deque[Turn] = field(factory=deque)
    size: int = 0
    pending: dict[str, str] = field(factory=dict)  # task id → the user's message

    def to_json(self) -> dict[str, Any]:
        return {
            "conversation": self.id,
            "createdAt": self.created_at,
            "lastActive": self.last_active,
            "sessionId": self.session_id,
            "turns": len(self.turns),
            "bytes": self.size,
            "pending": list(self.pending),
        }


class Conversations:
    """Every open conversation, bounded in turns, bytes, idle time and number."""

    def __init__(
        self,
        *,
        max_turns: int = DEFAULT_MAX_TURNS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        max_conversations: int = DEFAULT_MAX_CONVERSATIONS,
    ) -> None:
        self.max_turns = max_turns
        self.max_bytes = max_bytes
        self.idle_seconds = idle_seconds
        self.max_conversations = max_conversations
        self._open: OrderedDict[str, Conversation] = OrderedDict()  # least recently active first

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Conversation]:
        return iter(list(self._open.values()))

    def get(self, conversation_id: str) -> Conversation:
        try:
            return self._open[conversation_id]
        except KeyError:
            raise UnknownConversation(conversation_id) from None

    def open(self, conversation_id: str, now: float) -> Conversation:
        """The conversation with this id, created if new (the oldest idle one is
        dropped when there are too many)."""
        conversation = self._open.get(conversation_id)
        if conversation is None:
            conversation = Conversation(id=conversation_id, created_at=now, last_active=now)
            self._open[conversation_id] = conversation
            while len(self._open) > self.max_conversations:
                self._open.popitem(last=False)
        return conversation

    def ask(self, conversation: Conversation, message: str, task_id: str, now: float) -> None:
        """A user turn was submitted as task `task_id`."""
        conversation.pending[task_id] = message
        self._add(conversation, Turn("user", message, now, task_id))

    def answered(
        self,
        conversation_id: str,
        task_id: str,
        text: str,
        state: str,
        now: float,
        session_id: str | None = None,
    ) -> Conversation | None:
        """The task behind a turn ended: record the answer and the latest session id.
        A conversation that expired or was reset meanwhile is left alone."""
        conversation = self._open.get(conversation_id)
        if conversation is None or conversation.pending.pop(task_id, None) is None:
            return None
        if session_id:
            conversation.session_id = session_id  # every resumed run reports a new one
        self._add(conversation, Turn("assistant", text, now, task_id, state))
        return conversation

    def _add(self, conversation: Conversation, turn: Turn) -> None:
        conversation.turns.append(turn)
        conversation.size += turn.size
        conversation.last_active = turn.at
        self._open.move_to_end(conversation.id)
        while conversation.turns and (
            len(conversation.turns) > self.max_turns or conversation.size > self.max_bytes
        ):
            dropped = conversation.turns.popleft()
            conversation.size -= dropped.size

    def reset(self, conversation_id: str) -> bool:
        """Forget a conversation: the next turn starts a new agent session."""
        return self._open.pop(conversation_id, None) is not None

    def expire(self, now: float) -> list[str]:
        """Drop conversations idle for longer than `idle_seconds` (none with a turn
        still running). Returns their ids."""
        gone = []
        for conversation in list(self._open.values()):
            if now - conversation.last_active < self.idle_seconds:
                break  # ordered by activity: the rest are newer
            if conversation.pending:
                continue
            del self._open[conversation.id]
            gone.append(conversation.id)
        return gone

    def history(self, conversation_id: str) -> list[dict[str, Any]]:
        return [turn.to_json() for turn in self.get(conversation_id).turns]

    def dump(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart (running turns excepted)."""
        return {"version": 1, "conversations": [
            {"id": c.id, "createdAt": c.created_at, "lastActive": c.last_active,
             "sessionId": c.session_id, "turns": [t.to_json() for t in c.turns]}
            for c in self._open.values()
        ]}

    def load(self, saved: Any) -> int:
        """Restore what `dump` wrote (bounds applied); returns how many were restored.
        Anything malformed is skipped, never fatal."""
        items = saved.get("conversations") if isinstance(saved, dict) else None
        count = 0
        for item in items if isinstance(items, list) else []:
            try:
                conversation = self.open(str(item["id"]), float(item["createdAt"]))
                conversation.session_id = item.get("sessionId") or None
                for turn in item.get("turns") or []:
                    self._add(conversation, Turn(str(turn["role"]), str(turn["text"]), float(turn["at"]),
                                                 turn.get("taskId"), turn.get("state")))
                conversation.last_active = float(item["lastActive"])
                count += 1
            except (KeyError, TypeError, ValueError):
                continue
        return count


def prompt_with_history(conversation: Conversation, message: str, budget: int = PROMPT_HISTORY_BYTES) -> str:
    """For agents that cannot resume a session: the recent finished turns, newest
    kept first within `budget` bytes, then the new message."""
    lines: list[str] = []
    used = 0
    for turn in reversed(conversation.turns):
        if turn.role == "user" and turn.task_id in conversation.pending:
            continue  # this very message, or one still being answered
        label = "User" if turn.role == "user" else "Assistant"
        entry = f"{label}: {turn.text.strip()}"
        size = len(entry.encode("utf-8", "replace")) + 1
        if used + size > budget:
            break
        lines.append(entry)
        used += size
    if not lines:
        return message
    lines.reverse()
    return (
        "Earlier in this conversation:\n\n" + "\n\n".join(lines)
        + "\n\nReply to the user's new message, taking the conversation above into account.\n\n"
        + f"User: {message}"
    )
