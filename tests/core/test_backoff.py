"""Reconnect delays: doubling to a cap, jittered in the upper half, reset on success."""

from __future__ import annotations

import pytest

from aiwg.core.backoff import Backoff


def test_delays_double_up_to_the_cap_within_the_upper_half() -> None:
    low = Backoff(base=1, cap=60, rand=lambda: 0.0)
    high = Backoff(base=1, cap=60, rand=lambda: 1.0)
    assert [low.failed() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert [high.failed() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_success_resets_and_the_server_wins_when_longer() -> None:
    backoff = Backoff(base=2, cap=100, rand=lambda: 0.5)
    backoff.failed()
    backoff.failed()
    backoff.succeeded()
    assert backoff.failed() == 1.5
    assert backoff.failed(server_says=15) == 15  # Retry-After longer than ours
    assert backoff.failed(server_says=0.1) == 6.0  # ours longer


def test_jitter_spreads_clients() -> None:
    import random

    rng = random.Random(7)
    delays = {round(Backoff(base=1, cap=60, rand=rng.random).failed(), 3) for _ in range(50)}
    assert len(delays) > 40 and all(0.5 <= d <= 1 for d in delays)


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(base=10, cap=5)
