# tests: tests/core/test_tasks.py
"""The names of the states a task ends in, and of the events that say so: one
home for what the CLI, the daemon and the bridges all test against. Plain
strings, importable at no cost (the CLI's fast paths use them)."""

from __future__ import annotations

#: The states a task never leaves.
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled", "timeout", "rejected"})
#: The events that announce a task has ended, one per terminal state.
END_TOPICS = ("task:completed", "task:failed", "task:cancelled", "task:timeout", "task:rejected")
