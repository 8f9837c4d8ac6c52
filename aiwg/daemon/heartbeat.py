# tests: tests/daemon/test_heartbeat.py
"""Heartbeat service: writes .aiwg/daemon/heartbeat and state.json at start,
every `heartbeat_interval_seconds`, and at stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from aiwg.core.config import Config
from aiwg.daemon.statefile import write_json_atomic


class Heartbeat(Service):
    """Periodic atomic writes of liveness and full state for outside monitors."""

    name = "heartbeat"
    log = Logger()

    def __init__(
        self,
        *,
        reactor: IReactorTime,
        heartbeat_file: Path,
        state_file: Path,
        interval: float,
        heartbeat: Callable[[], dict[str, Any]],
        state: Callable[[], dict[str, Any]],
        beat: Callable[[], None] | None = None,
        writer: Any = None,
    ) -> None:
        self._reactor = reactor
        self._heartbeat_file = heartbeat_file
        self._state_file = state_file
        self.interval = interval
        self._heartbeat = heartbeat
        self._state = state
        self._beat = beat  # what else is done at each beat (the self-repair's backstop)
        self._writer = writer  # a BackgroundWriter for the periodic writes; None: written here
        self._loop: LoopingCall | None = None
        self.writes = 0
        self.last_error: str | None = None

    def startService(self) -> None:
        super().startService()
        self.write()  # synchronously: a failed first write fails the start
        if self._writer is not None:
            self._writer.start()
        self._arm()

    def _arm(self) -> None:
        self._cancel_timers()
        loop = LoopingCall(self._tick)
        loop.clock = self._reactor
        loop.start(self.interval, now=False)
        self._loop = loop

    def _cancel_timers(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> None:
        # LoopingCall stops for good on the first exception: never let one out.
        if self._beat is not None:
            try:
                self._beat()
            except Exception:
                self.log.failure("heartbeat: the checks of the beat failed")
        try:
            # Renamed into place, so a reader never sees half a file; not synced:
            # the next beat replaces it anyway, and a sync is a wait on the disk.
            # With a writer, the files are written on its thread: the reactor
            # gathers the state and goes back to sleep.
            if self._writer is not None:
                self.last_error = self._writer.error
                self._writer.write([(self._heartbeat_file, self._heartbeat()), (self._state_file, self._state())])
                self.writes += 1
                return
            self.write(sync=False)
            self.last_error = None
        except Exception as exc:
            self.last_error = f"cannot write {self._state_file.parent}: {exc}"
            self.log.failure("heartbeat write failed")

    def write(self, sync: bool = True) -> None:
        write_json_atomic(self._heartbeat_file, self._heartbeat(), sync=sync)
        write_json_atomic(self._state_file, self._state(), sync=sync)
        self.writes += 1

    def abort_start(self) -> None:
        """A later service failed to start: no heartbeat may name a dead daemon."""
        self._cancel_timers()
        try:
            self._heartbeat_file.unlink()
        except FileNotFoundError:
            pass

    def stopService(self) -> None:
        super().stopService()
        self._cancel_timers()
        if self._writer is not None:
            self._writer.close()  # what it has queued lands before the final write
        try:
            self.write()
        except Exception:
            self.log.failure("final state write failed")

    # -- reload ------------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        interval = config.daemon.heartbeat_interval_seconds
        if interval != self.interval:
            self.interval = interval
            if self.running:
                self._arm()

    def health_issues(self) -> list[str]:
        return [self.last_error] if self.last_error else []

    def status(self) -> dict[str, Any]:
        return {"interval_seconds": self.interval, "writes": self.writes}
