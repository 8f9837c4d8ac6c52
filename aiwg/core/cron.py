# tests: tests/core/test_cron.py
"""Cron arithmetic: when a job fires next, and what to do when a fire comes late.

Pure: the caller passes `now` (seconds since the epoch) and the time zone. A
scheduler arms one timer for `next_fire(expr, now)`; when it wakes it asks
`on_wake(scheduled, now, grace)` whether to fire, then re-arms from the wall
clock (`next_fire(expr, now)`) — never from the missed slot — so a clock jump
forward costs at most one late run and never a storm, and a jump backwards
does not repeat runs.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from typing import Literal

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

DEFAULT_MISFIRE_GRACE_SECONDS = 60.0


class CronError(ValueError):
    pass


class ZoneError(ValueError):
    pass


def normalise(expression: str) -> str:
    """The 5-field form of an expression (aliases expanded); CronError if it is not one."""
    text = " ".join(expression.split())
    text = ALIASES.get(text.lower(), text)
    if len(text.split(" ")) != 5:
        raise CronError(
            f"'{expression}' must have 5 fields (minute hour day-of-month month day-of-week) "
            "or be an alias such as @hourly or @daily"
        )
    from croniter import croniter

    if not croniter.is_valid(text):
        raise CronError(f"'{expression}' is not a valid cron expression")
    return text


def zone(name: str | None) -> tzinfo:
    """The IANA zone `name`, or the machine's local zone when None. ZoneError if unknown.

    The local zone is read as a real zone (from $TZ or /etc/localtime), not as
    today's UTC offset, so `0 9 * * *` stays 09:00 across a DST change."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name is not None:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ZoneError(f"'{name}' is not a known time zone (an IANA name such as Europe/Berlin or UTC)") from None
    import os

    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return ZoneInfo(env)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else timezone.utc


def zone_problem(name: str) -> str | None:
    try:
        zone(name)
    except ZoneError as exc:
        return str(exc)
    return None


def cron_problem(expression: str) -> str | None:
    """Why `expression` cannot be scheduled: not a cron expression, or one that
    matches no date at all (`0 0 31 2 *`), which croniter accepts and then fails
    on when asked for its next time."""
    from croniter import CroniterBadDateError, croniter

    try:
        text = normalise(expression)
    except CronError as exc:
        return str(exc)
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=timezone.utc)).get_next(float)
    except CroniterBadDateError:
        return f"'{expression}' never fires: no date matches it (such as 31 February)"
    return None


def next_fire(expression: str, after: float, tz: tzinfo | None = None) -> float:
    """The first fire time strictly after `after`, in epoch seconds; `tz` is the zone
    the expression is read in (None: UTC)."""
    from croniter import croniter

    zone = tz or timezone.utc
    start = datetime.fromtimestamp(after, zone)
    return float(croniter(normalise(expression), start).get_next(float))


def on_wake(scheduled: float, now: float, grace: float = DEFAULT_MISFIRE_GRACE_SECONDS) -> Literal["fire", "skip", "early"]:
    """A timer armed for `scheduled` went off at `now`: fire, skip (too late: more
    than `grace` seconds after its time), or early (the clock went back; re-arm)."""
    if now < scheduled:
        return "early"
    if now - scheduled > grace:
        return "skip"
    return "fire"
