"""Conversation memory: the session to resume, bounds on turns and bytes, expiry."""

from __future__ import annotations

import pytest

from aiwg.core.conversations import (
    Conversations,
    UnknownConversation,
    conversation_id_problem,
    prompt_with_history,
)


def test_the_latest_session_id_is_kept() -> None:
    chats = Conversations()
    c = chats.open("c1", now=0)
    assert c.session_id is None  # a first turn starts a new agent session
    chats.ask(c, "hello", "t-1", now=1)
    chats.answered("c1", "t-1", "hi", "completed", now=2, session_id="s-1")
    assert c.session_id == "s-1"
    chats.ask(c, "and then?", "t-2", now=3)
    chats.answered("c1", "t-2", "more", "completed", now=4, session_id="s-2")
    assert c.session_id == "s-2"  # every resumed run reports a new id
    chats.ask(c, "fails", "t-3", now=5)
    chats.answered("c1", "t-3", "", "failed", now=6, session_id=None)
    assert c.session_id == "s-2"  # a failed turn does not lose the session
    assert [t["role"] for t in chats.history("c1")] == ["user", "assistant"] * 3


def test_turn_and_byte_bounds_drop_the_oldest_turns() -> None:
    chats = Conversations(max_turns=4, max_bytes=1000)
    c = chats.open("c", now=0)
    for i in range(10):
        chats.ask(c, f"q{i}", f"t-{i}", now=i)
        chats.answered("c", f"t-{i}", f"a{i}", "completed", now=i)
    assert [t["text"] for t in chats.history("c")] == ["q8", "a8", "q9", "a9"]
    chats.ask(c, "x" * 900, "t-big", now=20)
    chats.answered("c", "t-big", "y" * 300, "completed", now=21)
    assert c.size <= 1000
    assert [t["text"][:1] for t in chats.history("c")] == ["y"]


def test_idle_conversations_expire_but_not_while_a_turn_runs() -> None:
    chats = Conversations(idle_seconds=100)
    old = chats.open("old", now=0)
    busy = chats.open("busy", now=0)
    chats.ask(busy, "slow question", "t-1", now=0)
    chats.open("new", now=90)
    assert chats.expire(now=150) == ["old"]
    assert {c.id for c in chats} == {"busy", "new"}
    chats.answered("busy", "t-1", "done", "completed", now=160)
    assert chats.expire(now=300) == ["new", "busy"]
    with pytest.raises(UnknownConversation):
        chats.get("old")
    assert old.turns == type(old.turns)()  # nothing recorded on it


def test_the_number_of_conversations_is_bounded() -> None:
    chats = Conversations(max_conversations=3)
    for i in range(5):
        chats.open(f"c{i}", now=i)
    assert [c.id for c in chats] == ["c2", "c3", "c4"]


def test_reset_forgets_and_a_late_answer_is_ignored() -> None:
    chats = Conversations()
    c = chats.open("c", now=0)
    chats.ask(c, "q", "t-1", now=0)
    assert chats.reset("c") is True
    assert chats.answered("c", "t-1", "late", "completed", now=1, session_id="s") is None
    fresh = chats.open("c", now=2)
    assert fresh.session_id is None and not fresh.turns
    assert chats.reset("nope") is False


def test_history_in_the_prompt_for_agents_without_sessions() -> None:
    chats = Conversations()
    c = chats.open("c", now=0)
    assert prompt_with_history(c, "first") == "first"
    chats.ask(c, "What is 2+2?", "t-1", now=0)
    chats.answered("c", "t-1", "4", "completed", now=1)
    chats.ask(c, "And doubled?", "t-2", now=2)
    prompt = prompt_with_history(c, "And doubled?")
    assert prompt.startswith("Earlier in this conversation:\n\nUser: What is 2+2?\n\nAssistant: 4\n\n")
    assert prompt.endswith("User: And doubled?")
    assert "And doubled?" not in prompt[: prompt.index("Reply to")]  # the new message only once
    small = prompt_with_history(c, "And doubled?", budget=14)  # room for the newest turn only
    assert "Assistant: 4" in small and "What is 2+2?" not in small


@pytest.mark.parametrize("value, ok", [("c-1", True), ("team:alice", True), ("", False), ("a b", False), ("x" * 65, False), (3, False)])
def test_conversation_ids(value: object, ok: bool) -> None:
    assert (conversation_id_problem(value) is None) is ok
