"""Cron arithmetic and the misfire policy (pure: times are passed in)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from aiwg.core.cron import CronError, cron_problem, next_fire, normalise, on_wake


def ts(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def test_every_minute_fires_on_every_minute_boundary() -> None:
    now = ts("2026-11-24T10:00:30")
    first = next_fire("* * * * *", now)
    assert first == ts("2026-11-24T10:01:00")
    assert next_fire("* * * * *", first) == ts("2026-11-24T10:02:00")  # strictly after


def test_steps_lists_ranges_and_aliases() -> None:
    now = ts("2026-11-24T10:07:00")
    assert next_fire("*/30 * * * *", now) == ts("2026-11-24T10:30:00")
    assert next_fire("0 9 * * 1-5", ts("2026-11-27T10:00:00")) == ts("2026-11-30T09:00:00")  # Fri → Mon
    assert next_fire("@hourly", now) == ts("2026-11-24T11:00:00")
    assert next_fire("@daily", now) == ts("2026-11-25T00:00:00")
    assert normalise("@Daily") == "0 0 * * *"


def test_time_zone() -> None:
    now = ts("2026-11-24T10:00:00")
    tz = ZoneInfo("America/New_York")  # UTC-5 in November
    assert next_fire("0 9 * * *", now, tz) == ts("2026-11-24T14:00:00")


def test_dst_spring_forward_does_not_loop() -> None:
    tz = ZoneInfo("Europe/Berlin")
    before = ts("2026-03-29T00:30:00", "Europe/Berlin")
    fires = [before]
    for _ in range(5):
        fires.append(next_fire("30 * * * *", fires[-1], tz))
    assert fires == sorted(set(fires))  # strictly increasing, no repeats


@pytest.mark.parametrize("bad", ["", "* * * *", "61 * * * *", "* * * * * *", "@sometimes", "a b c d e"])
def test_bad_expressions(bad: str) -> None:
    assert cron_problem(bad) is not None
    with pytest.raises(CronError):
        normalise(bad)


@pytest.mark.parametrize("never", ["0 0 31 2 *", "0 0 30 2 *", "0 12 31 4,6,9,11 *"])
def test_an_expression_that_matches_no_date_is_a_problem(never: str) -> None:
    """croniter accepts it, then fails when asked for its next time."""
    assert cron_problem(never) == f"'{never}' never fires: no date matches it (such as 31 February)"


def test_rare_but_real_dates_are_fine() -> None:
    assert cron_problem("0 0 29 2 *") is None  # every leap year
    assert cron_problem("0 0 31 2 1") is None  # day of month OR day of week: Mondays in February


def test_misfire_policy() -> None:
    assert on_wake(scheduled=100, now=100.2) == "fire"
    assert on_wake(scheduled=100, now=160) == "fire"
    assert on_wake(scheduled=100, now=160.1) == "skip"  # later than the 60 s grace
    assert on_wake(scheduled=100, now=99) == "early"  # the clock went back
    assert on_wake(scheduled=100, now=400, grace=600) == "fire"


def test_a_clock_jump_forward_gives_at_most_one_late_run() -> None:
    expr = "* * * * *"
    scheduled = ts("2026-11-24T10:01:00")
    woke = scheduled + 3 * 3600 + 5  # the machine slept / the clock jumped 3 hours
    fired = [on_wake(scheduled, woke, grace=10)]
    rearmed = next_fire(expr, woke)  # from the wall clock, not the missed slot
    assert fired == ["skip"]
    assert rearmed == ts("2026-11-24T13:02:00")
    assert on_wake(rearmed, rearmed + 0.01) == "fire"
