# tests: tests/daemon/test_housekeeping.py, tests/e2e/test_tasks.py, tests/e2e/test_full_disk.py
"""What keeps tasks from leaving things behind while they come and go: the sweep
for processes that outlived their task (soon after each end, and every few
seconds while tasks run and until nothing of theirs is left: an idle daemon
does not wake for it), finished tasks pruned beyond retention with their output
files, and the health of the output directory once a write to it has failed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Container

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

PRUNE_INTERVAL_SECONDS = 600
SWEEP_INTERVAL_SECONDS = 10
#: After a task ends, its escaped leftovers are swept this much later.
ORPHAN_SWEEP_DELAY = 0.05
#: The output directory is healthy again with this much room.
ROOM_AGAIN_BYTES = 1024 * 1024


class Housekeeping:
    """`ours()` says what is the supervisor's now: the pids of its own children,
    the tasks that run (or are starting), and those whose processes it waits for."""

    log = Logger()

    def __init__(self, *, clock: Any, store: Callable[[], Any], reaper: Any, actions_dir: Path,
                 forget_records: Callable[[str], Any], retention: Callable[[], tuple[int, float]],
                 ours: Callable[[], tuple[set[int], set[str], Container[str]]]) -> None:
        self._clock = clock
        self._store = store
        self._reaper = reaper
        self._actions_dir = actions_dir
        self._forget_records = forget_records
        self._retention = retention
        self._ours = ours
        self._loop: LoopingCall | None = None  # prunes
        self._sweeps: LoopingCall | None = None  # sweeps, while tasks run or leftovers remain
        self._sweep_call: Any = None
        self.output_problem: str | None = None  # task output that could not be written, while it lasts

    def start(self) -> None:
        self.prune()
        self._loop = LoopingCall(self._prune_tick)
        self._loop.clock = self._clock
        self._loop.start(PRUNE_INTERVAL_SECONDS, now=False)
        self.sweep_orphans()  # what a crash left may still be around: swept until it is not
        if self._reaper.watching:
            self.busy()

    def busy(self) -> None:
        """A task's process has started: sweep every few seconds until nothing of
        any task is left."""
        if self._sweeps is None or not self._sweeps.running:
            self._sweeps = LoopingCall(self._sweep_tick)
            self._sweeps.clock = self._clock
            self._sweeps.start(SWEEP_INTERVAL_SECONDS, now=False)

    def stop(self) -> None:
        for loop in (self._loop, self._sweeps):
            if loop is not None and loop.running:
                loop.stop()
        if self._sweep_call is not None and self._sweep_call.active():
            self._sweep_call.cancel()
        self._sweep_call = None

    def _prune_tick(self) -> None:
        try:
            self.prune()
        except Exception:
            self.log.failure("task housekeeping failed")

    def _sweep_tick(self) -> None:
        """Sweep; once no task runs and no adopted process is left to watch, the
        next task's start resumes the sweeps."""
        try:
            self.sweep_orphans()
            _, running, _ = self._ours()
            if not running and not self._reaper.watching and self._sweeps is not None and self._sweeps.running:
                self._sweeps.stop()
        except Exception:
            self.log.failure("task housekeeping failed")

    # -- orphans -------------------------------------------------------------

    def sweep_orphans(self) -> int:
        """Clear out what ended tasks left behind (see Reaper.sweep)."""
        if self._reaper.retry_releases():
            self._sweep_call = self._clock.callLater(0.5, self.sweep_orphans)
        known, running, live = self._ours()
        return self._reaper.sweep(known, running, live)

    def sweep_soon(self) -> None:
        """A task has ended: sweep for what it left behind shortly, once for all the
        tasks that end meanwhile (a sweep reads /proc: not once per task)."""
        if self._sweep_call is None or not self._sweep_call.active():
            self._sweep_call = self._clock.callLater(ORPHAN_SWEEP_DELAY, self.sweep_orphans)

    # -- retention -------------------------------------------------------------

    def prune(self) -> None:
        max_tasks, max_age = self._retention()
        try:
            removed = self._store().prune(max_tasks=max_tasks, max_age_seconds=max_age, now=self._clock.seconds())
        except Exception:
            self.log.failure("pruning finished tasks failed")
            return
        self._forget_files(removed)
        if removed:
            self.log.info("pruned {count} finished task(s) beyond retention", count=len(removed))

    def remove_finished(self, **which: Any) -> list[str]:
        """Delete finished tasks as asked (`task rm`, `task prune`: see
        TaskStore.remove_finished), with their output files and loop records."""
        removed = self._store().remove_finished(**which)
        self._forget_files(removed)
        if removed:
            self.log.info("removed {count} finished task(s) on request", count=len(removed))
        return [task_id for task_id, _ in removed]

    def _forget_files(self, removed: list[tuple[str, str | None]]) -> None:
        for task_id, path in removed:
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            if (self._actions_dir / task_id).is_dir():  # a loop's iteration records
                self._forget_records(task_id)

    # -- the output directory ------------------------------------------------------

    def output_write_failed(self, task_id: str, exc: OSError) -> None:
        """A task's output could not be written: remembered for the health until the
        file system has room again."""
        if self.output_problem is None:
            self.log.error("task {task_id}: cannot write its output under {path}: {error}; the agent runs on, "
                           "its output is no longer kept", task_id=task_id, path=str(self._actions_dir),
                           error=exc.strerror or str(exc))
        self.output_problem = (f"cannot write task output under {self._actions_dir}: {exc.strerror or exc} "
                               f"(task {task_id}); free some space or fix the file system")

    def output_issue(self) -> str | None:
        """The output problem, while it lasts."""
        if self.output_problem is not None and self._output_writable():
            self.output_problem = None
        return self.output_problem

    def _output_writable(self) -> bool:
        try:
            info = os.statvfs(self._actions_dir)
        except OSError:
            return False
        return info.f_bavail * info.f_frsize >= ROOM_AGAIN_BYTES and os.access(self._actions_dir, os.W_OK)
