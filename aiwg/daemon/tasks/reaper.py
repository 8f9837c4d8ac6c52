# tests: tests/daemon/test_supervisor.py, tests/daemon/test_cgroups.py, tests/e2e/test_tasks.py
"""Making sure nothing a task started outlives it: its process group, the task
marker in its processes' environment, its cgroup where task cgroups work, and as
the daemon is the subreaper of its agents' descendants, the sweep of what it
adopts. The supervisor says which tasks run; the reaper finds and kills the rest.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Callable, Container

from twisted.logger import Logger

from aiwg import procfs
from aiwg.core.tasks import Task
from aiwg.daemon.tasks.cgroups import TaskCgroups


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), to tell our process from a reused pid."""
    fields = procfs.stat_fields(pid)
    return fields[19].decode() if fields is not None and len(fields) > 19 else None


class StartTimes:
    """Start times of the agents we spawn, as `process_start_time` gives them (clock
    ticks since boot), mostly without reading /proc: read just after the spawn, it
    waits for the agent's exec. The kernel stamps a child's start while it is
    being created, so between two readings of the boot-time clock taken around
    the spawn; when both fall in the same tick, that tick is its start time. The
    first spawns check this against /proc; after a mismatch, /proc it is."""

    def __init__(self) -> None:
        self._per_tick = 0
        self.trusted: bool | None = None  # None: not checked yet
        try:
            ticks = os.sysconf("SC_CLK_TCK")
            if sys.platform.startswith("linux") and ticks > 0 and 10**9 % ticks == 0:
                self._per_tick = 10**9 // ticks
                time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        except (AttributeError, OSError, ValueError):
            self._per_tick = 0
        if not self._per_tick:
            self.trusted = False

    def now(self) -> int:
        """The boot-time clock, in ticks (0 where it cannot be used)."""
        if not self._per_tick:
            return 0
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // self._per_tick

    def of(self, pid: int, before: int, after: int) -> str | None:
        """`pid`'s start time, spawned between the ticks `before` and `after`."""
        if self.trusted and before == after:
            return str(before)
        read = process_start_time(pid)
        if self.trusted is None and before == after and read is not None:
            self.trusted = read == str(before)
        return read


class Reaper:
    log = Logger()

    def __init__(self, *, killpg: Callable[[int, int], None] = os.killpg, cgroups: TaskCgroups | None = None,
                 containment_note: str = "") -> None:
        self.killpg = killpg
        self.cgroups = cgroups  # each task in a cgroup of its own, where that works
        self.containment_note = containment_note  # why not, where it does not
        self.subreaper = False
        #: Adopted processes without a task's marker: pid → (start time, tasks running when first seen).
        self._adopted: dict[int, tuple[bytes, frozenset[str]]] = {}
        self._cgroups_to_release: set[str] = set()

    @staticmethod
    def become_subreaper() -> bool:
        """Linux: orphans of our agents (even ones that left their process group with
        setsid) are re-parented to us instead of init, so the sweep can find them."""
        if not sys.platform.startswith("linux"):
            return False
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            return bool(libc.prctl(36, 1, 0, 0, 0) == 0)  # PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):
            return False


    def kill_leftover(self, task: Task) -> bool:
        """At start, for a task recorded as running: kill what is left of it, if
        its recorded group is really its own (not a reused pid)."""
        killed = self.kill_marked(task.id)
        pgid = task.pgid or task.pid
        if not pgid:
            return killed
        leader_start = process_start_time(pgid)
        if leader_start is not None and task.proc_start is not None and leader_start != task.proc_start:
            return killed  # the pid was reused by an unrelated process: not ours
        if leader_start is None and not self.group_alive(pgid):
            return killed
        # The leader is ours (same start time), or it is gone while members of its
        # group live on: a pgid is never reused while its group exists.
        try:
            self.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
        return True


    def kill_marked(self, task_id: str) -> bool:
        """Kill every process whose environment says it runs `task_id` (Linux /proc):
        catches a task whose pid was never recorded, and descendants that left its group."""
        killed = False
        for pid in procfs.all_pids():
            if pid == os.getpid() or procfs.task_marker(pid) != task_id:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                killed = True
            except OSError:
                continue
        return killed


    def group_alive(self, pgid: int) -> bool:
        try:
            self.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


    @property
    def watching(self) -> bool:
        """Whether adopted processes are still being watched (their tasks run)."""
        return bool(self._adopted)

    def sweep(self, known: set[int], running: set[str], live: Container[str]) -> int:
        """Kill adopted processes that belong to a task that has ended, and reap
        the ones that have died. Cheap: reads our own children list only.
        `known`: the pids of our own children (agents, commands); `running`: the
        tasks that run now; `live`: the tasks whose processes are ours to wait for.

        An adopted process that still carries a task's marker is that task's; one
        that dropped it (it escaped: new session, empty environment) belongs to
        whichever tasks were running when it was first seen here, and is killed
        once none of them runs any more."""
        if not self.subreaper:
            return 0
        killed = 0
        children = procfs.own_children() - known
        for pid in list(self._adopted):
            if pid not in children:
                del self._adopted[pid]
        for pid in children:
            fields = procfs.stat_fields(pid)
            if fields is None:
                continue
            if fields[0] == b"Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                continue
            if self.cgroups is not None and self.cgroups.holds(pid):
                continue  # in a task's cgroup: that task's end kills it, with the rest of its cgroup
            task_id = procfs.task_marker(pid)
            if task_id is not None:
                if task_id in live:
                    continue
                owners = f"task {task_id}"
            else:
                started = fields[19] if len(fields) > 19 else b""
                seen = self._adopted.get(pid)
                if seen is None or seen[0] != started:  # first seen here (or a reused pid)
                    seen = self._adopted[pid] = (started, frozenset(running))
                if seen[1] & running:
                    continue  # a task that ran when it was adopted still runs
                owners = f"task(s) {', '.join(sorted(seen[1]))}" if seen[1] else "a task that had ended"
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
                self._adopted.pop(pid, None)
                self.log.warn("killed process {pid} left behind by {owners}", pid=pid, owners=owners)
            except OSError:
                pass
        return killed


    @property
    def containment(self) -> str:
        """What makes sure nothing outlives its task, for daemon status."""
        if self.cgroups is not None:
            return f"cgroup: each task in its own cgroup under {self.cgroups.base}"
        sweep = "the subreaper sweep" if self.subreaper else "its process group and task marker"
        return f"process group: {sweep} ({self.containment_note})" if self.containment_note else \
            f"process group: {sweep}"


    def prepare_cgroup(self, task_id: str) -> str | None:
        """Make the task's cgroup before its process starts; the path of the
        `cgroup.procs` the process moves itself into, or None."""
        if self.cgroups is None:
            return None
        # Its cgroup is in use again (a resumed loop, a retry): no longer one to remove,
        # or the retry of an earlier removal would kill the new process in it.
        self._cgroups_to_release.discard(task_id)
        try:
            self.cgroups.prepare(task_id)
        except OSError as exc:
            self.log.warn("task {task_id}: cannot make its cgroup: {error}", task_id=task_id,
                          error=exc.strerror or str(exc))
            return None
        return str(self.cgroups.path(task_id) / "cgroup.procs")

    def place_in_cgroup(self, task_id: str, pid: int) -> None:
        """Make sure a task's process is in its cgroup: it joins by itself before
        it execs, so this moves it only if that failed (or has not happened: then
        moving it from outside is right too)."""
        if self.cgroups is None or self.cgroups.in_cgroup_of(pid, task_id) is not False:
            return
        try:
            self.cgroups.place(task_id, pid)
        except OSError as exc:
            self.log.warn("task {task_id}: cannot move pid {pid} into its cgroup: {error}", task_id=task_id,
                          pid=pid, error=exc.strerror or str(exc))


    def kill_cgroup(self, task_id: str) -> None:
        if self.cgroups is not None:
            self.cgroups.kill(task_id)


    def release_cgroup(self, task_id: str) -> bool:
        """The task has ended: whatever is left in its cgroup goes, and the cgroup.
        False while the cgroup is not empty yet (retry_releases tries again)."""
        if self.cgroups is None:
            return True
        try:
            if self.cgroups.remove(task_id):  # empty, as after most tasks
                return True
        except OSError:
            pass
        left = self.cgroups.members(task_id)
        if left:
            self.log.warn("task {task_id} ended; killing {n} process(es) it left behind (its cgroup)",
                          task_id=task_id, n=len(left))
        if not self.cgroups.release(task_id):
            self._cgroups_to_release.add(task_id)
            return False
        return True

    def retry_releases(self) -> bool:
        """Remove the task cgroups that were not empty yet; whether some still are."""
        for task_id in list(self._cgroups_to_release):
            if self.cgroups is None or self.cgroups.release(task_id):
                self._cgroups_to_release.discard(task_id)
        return bool(self._cgroups_to_release)

    def release_leftovers(self) -> None:
        """At start: the cgroups of tasks of a daemon that died go, with what is in them."""
        if self.cgroups is None:
            return
        for name in self.cgroups.leftovers():
            if self.cgroups.members(name):
                self.log.warn("killing what is left in the cgroup of {name}, from before the restart", name=name)
            if not self.cgroups.release(name):
                self._cgroups_to_release.add(name)

    def close(self) -> None:
        """At stop: every task cgroup goes, and the project's directory of them."""
        if self.cgroups is None:
            return
        for name in self.cgroups.leftovers():
            self.cgroups.release(name)
        try:
            self.cgroups.base.rmdir()
        except OSError:
            pass
