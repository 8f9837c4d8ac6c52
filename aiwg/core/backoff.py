# tests: tests/core/test_backoff.py
"""Reconnect delays for the messaging bridges: exponential, capped, with jitter.

Pure: the random source is injected. Each failure doubles the ceiling (from
`base` up to `cap`) and the delay is drawn from its upper half, so many
clients that lost the same server do not come back in the same instant, and
no delay is ever shorter than half of what the count of failures calls for.
A server's own instruction (429 retry_after, Retry-After) wins when longer.
"""

from __future__ import annotations

import random
from typing import Callable


class Backoff:
    def __init__(self, base: float = 1.0, cap: float = 300.0, rand: Callable[[], float] = random.random) -> None:
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rand = rand
        self.failures = 0

    def ceiling(self) -> float:
        return min(self.cap, self.base * (2 ** max(0, self.failures - 1)))

    def failed(self, server_says: float | None = None) -> float:
        """Count a failure; the delay before the next attempt."""
        self.failures += 1
        top = self.ceiling()
        delay = top / 2 + self._rand() * top / 2
        if server_says is not None and server_says > delay:
            return float(server_says)
        return delay

    def succeeded(self) -> None:
        self.failures = 0
