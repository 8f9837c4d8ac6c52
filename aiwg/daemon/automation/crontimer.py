# tests: tests/daemon/test_crontimer.py
"""One cron expression armed as one reactor timer: no polling loop.

The timer is set for the next fire time; when it goes off, `on_wake` decides
(fire, skip because it is too late, or re-arm because the clock went back),
and the next fire is computed from the wall clock, never from the missed
slot — so a suspended laptop or a clock jump costs at most one late run.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from aiwg.core import cron

#: A timer wakes a little after its time even on an idle machine; this much lateness
#: is never a misfire, so a grace of 0 means "skip anything more than a second late".
TIMER_SLACK = 1.0


class CronTimer:
    log = Logger()

    def __init__(
        self,
        *,
        reactor: IReactorTime,
        name: str,
        expression: str,
        zone: tzinfo,
        grace: float,
        on_fire: Callable[[float, float], Any],
        on_skip: Callable[[float, float], Any] | None = None,
    ) -> None:
        """`on_fire(scheduled, now)` runs each time the job is due; `on_skip(scheduled,
        now)` when a fire came more than `grace` seconds late."""
        self._reactor = reactor
        self.name = name
        self.expression = cron.normalise(expression)
        self.zone = zone
        self.grace = grace
        self._on_fire = on_fire
        self._on_skip = on_skip
        self._call: Any = None
        self.next_fire: float | None = None
        self.last_fire: float | None = None
        self.fires = 0
        self.skips = 0
        self._started = False

    @property
    def armed(self) -> bool:
        return self._call is not None and self._call.active()

    def start(self) -> None:
        self._started = True
        self._arm(self._reactor.seconds())

    def stop(self) -> None:
        self._started = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.next_fire = None

    def _arm(self, now: float) -> None:
        self.next_fire = cron.next_fire(self.expression, now, self.zone)
        self._call = self._reactor.callLater(max(0.0, self.next_fire - now), self._wake)

    def _wake(self) -> None:
        self._call = None
        scheduled = self.next_fire if self.next_fire is not None else self._reactor.seconds()
        now = self._reactor.seconds()
        verdict = cron.on_wake(scheduled, now, self.grace + TIMER_SLACK)
        if verdict == "early":
            # The wall clock went back: wait for the same slot again, not a new one.
            self._call = self._reactor.callLater(scheduled - now, self._wake)
            return
        try:
            if verdict == "fire":
                self.fires += 1
                self.last_fire = now
                self._on_fire(scheduled, now)
            else:
                self.skips += 1
                self.log.warn(
                    "schedule {name}: skipped the run due {late:.0f} s ago (later than the "
                    "misfire grace of {grace:.0f} s; the machine slept or the clock jumped)",
                    name=self.name, late=now - scheduled, grace=self.grace,
                )
                if self._on_skip is not None:
                    self._on_skip(scheduled, now)
        except Exception:
            self.log.failure("schedule {name}: firing failed", name=self.name)
        finally:
            if self._started and self._call is None:  # not stopped by the callback
                self._arm(self._reactor.seconds())
