"""CronTimer with an injected Clock: arming, firing, misfire grace and clock jumps."""

from __future__ import annotations

from datetime import datetime, timezone

from twisted.internet.task import Clock

from aiwg.daemon.automation.crontimer import CronTimer


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def make(expression: str, start: str, grace: float = 60) -> tuple[CronTimer, Clock, list, list]:
    clock = Clock()
    clock.advance(at(start))
    fired: list[tuple[float, float]] = []
    skipped: list[tuple[float, float]] = []
    timer = CronTimer(reactor=clock, name="job", expression=expression, zone=timezone.utc, grace=grace,
                      on_fire=lambda s, n: fired.append((s, n)), on_skip=lambda s, n: skipped.append((s, n)))
    timer.start()
    return timer, clock, fired, skipped


def test_one_timer_armed_for_the_next_slot_no_polling() -> None:
    timer, clock, fired, _ = make("*/15 * * * *", "2026-03-01 10:07:30")
    assert timer.next_fire == at("2026-03-01 10:15:00")
    calls = clock.getDelayedCalls()
    assert len(calls) == 1 and calls[0].getTime() == at("2026-03-01 10:15:00")
    clock.advance(at("2026-03-01 10:14:59") - clock.seconds())
    assert fired == []
    clock.advance(1)
    assert fired == [(at("2026-03-01 10:15:00"), at("2026-03-01 10:15:00"))]
    assert timer.next_fire == at("2026-03-01 10:30:00")  # re-armed from the wall clock
    assert len(clock.getDelayedCalls()) == 1


def test_every_minute_fires_every_minute() -> None:
    timer, clock, fired, _ = make("* * * * *", "2026-03-01 10:00:30")
    for _ in range(10):
        clock.advance(60)
    assert len(fired) == 10
    assert [s for s, _ in fired] == [at("2026-03-01 10:01:00") + 60 * i for i in range(10)]


def test_aliases_are_understood() -> None:
    timer, _, _, _ = make("@daily", "2026-03-01 10:00:00")
    assert timer.next_fire == at("2026-03-02 00:00:00")


def test_a_late_wake_within_grace_fires_once() -> None:
    timer, clock, fired, skipped = make("0 * * * *", "2026-03-01 09:59:00", grace=60)
    clock.advance(60 + 45)  # the reactor was busy; woke 45 s late
    assert len(fired) == 1 and skipped == []
    assert fired[0][1] - fired[0][0] == 45


def test_a_clock_jump_far_forward_skips_once_and_never_storms() -> None:
    timer, clock, fired, skipped = make("* * * * *", "2026-03-01 10:00:30", grace=60)
    clock.advance(6 * 3600)  # suspended for six hours: 360 slots missed
    assert fired == [] and len(skipped) == 1  # too late: logged and skipped, once
    assert timer.next_fire == at("2026-03-01 16:01:00")  # re-armed from now, not the missed slot
    clock.advance(30)
    assert len(fired) == 1 and len(skipped) == 1


def test_one_late_run_when_the_jump_is_within_grace() -> None:
    timer, clock, fired, skipped = make("*/5 * * * *", "2026-03-01 10:04:59", grace=120)
    clock.advance(61)  # the 10:05 slot, 60 s late
    assert len(fired) == 1 and skipped == []
    assert timer.next_fire == at("2026-03-01 10:10:00")


def test_the_clock_going_back_does_not_repeat_or_fire_early() -> None:
    timer, clock, fired, _ = make("0 * * * *", "2026-03-01 10:59:00")
    scheduled = timer.next_fire
    # The wall clock steps back an hour: the Clock cannot go back, so wake the
    # timer as a real reactor would and check it treats the wake as early.
    timer._call.cancel()
    timer._call = None
    clock.rightNow = at("2026-03-01 10:00:00")
    timer._wake()
    assert fired == []
    assert timer.next_fire == scheduled and timer.armed
    clock.advance(scheduled - clock.seconds())
    assert len(fired) == 1


def test_stop_cancels_and_a_failing_callback_does_not_stop_the_schedule() -> None:
    clock = Clock()
    clock.advance(at("2026-03-01 10:00:30"))
    calls = []

    def boom(s: float, n: float) -> None:
        calls.append(s)
        raise RuntimeError("action failed")

    timer = CronTimer(reactor=clock, name="job", expression="* * * * *", zone=timezone.utc, grace=60, on_fire=boom)
    timer.start()
    clock.advance(60)
    clock.advance(60)
    assert len(calls) == 2  # still armed after a failure
    timer.stop()
    assert clock.getDelayedCalls() == [] and not timer.armed
    clock.advance(600)
    assert len(calls) == 2


def test_time_zone_is_respected_across_dst() -> None:
    from zoneinfo import ZoneInfo

    clock = Clock()
    clock.advance(at("2026-03-28 12:00:00"))  # Berlin switches to summer time on 2026-03-29
    fired = []
    timer = CronTimer(reactor=clock, name="job", expression="0 9 * * *", zone=ZoneInfo("Europe/Berlin"),
                      grace=60, on_fire=lambda s, n: fired.append(s))
    timer.start()
    assert timer.next_fire == at("2026-03-29 07:00:00")  # 09:00 CEST = 07:00 UTC
    clock.advance(timer.next_fire - clock.seconds())
    assert timer.next_fire == at("2026-03-30 07:00:00")
    assert fired == [at("2026-03-29 07:00:00")]


def test_a_grace_of_zero_still_allows_ordinary_timer_lateness() -> None:
    timer, clock, fired, skipped = make("* * * * *", "2026-03-01 10:00:30", grace=0)
    clock.advance(30.002)  # woke 2 ms after the minute, as real timers do
    assert len(fired) == 1 and skipped == []
    clock.advance(59.998 + 5)  # 5 s late: a real misfire
    assert len(fired) == 1 and len(skipped) == 1
