# tests: tests/daemon/test_cgroups.py, tests/e2e/test_tasks.py
"""One cgroup (v2) per task, so that nothing a task started outlives it.

A process group is left by anything that calls setsid; a cgroup is not, whatever
the process does with its session, environment or descriptors. Where the daemon
may write below its own cgroup (it runs as root, or in a systemd unit with
`Delegate=yes`: the units in etc/ ask for it), each task's processes go into
`<daemon's cgroup>/aiwg-<project hash>/<task id>`, and the whole cgroup is killed
(`cgroup.kill`, or SIGKILL to each member on kernels before 5.14) at timeout,
cancel, stop and the task's end, as systemd's `KillMode=control-group` does for
a service. No controller is needed: only `cgroup.procs` and `cgroup.kill`.

`open_task_cgroups` proves the arrangement works by behaviour at start (a probe
process placed, killed through its cgroup, the cgroup removed); where it does
not, the supervisor falls back to its subreaper sweep and says so in status.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

def tasks_dir_name(project: Path) -> str:
    """The directory of one project's task cgroups: daemons of several projects
    started from one shell share a cgroup, and must not see each other's tasks."""
    import hashlib

    return "aiwg-" + hashlib.sha256(os.fsencode(project)).hexdigest()[:12]


def _cgroup2_mount(mountinfo: str) -> str | None:
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return left.split()[4]
    return None


def _own_cgroup(proc_cgroup: str) -> str | None:
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def _cgroup_of(pid: int) -> str | None:
    """`pid`'s cgroup v2 path; OSError if the process is gone."""
    with open(f"/proc/{pid}/cgroup") as handle:
        return _own_cgroup(handle.read())


def own_cgroup_dir() -> tuple[Path | None, str]:
    """This process's cgroup v2 directory, or None and why not."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError as exc:
        return None, f"cannot read /proc: {exc}"
    mount = _cgroup2_mount(mountinfo)
    if mount is None:
        return None, "no cgroup v2 file system is mounted"
    own = _own_cgroup(proc_cgroup)
    if own is None:
        return None, "this process is in no cgroup v2 group"
    directory = Path(mount) / own.lstrip("/")
    if not directory.is_dir():
        return None, f"{directory} (this process's cgroup) is not visible here (another cgroup namespace?)"
    return directory, ""


class TaskCgroups:
    """The cgroups of the tasks under one delegated directory."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.kill_file = (base / "cgroup.kill").exists()

    def path(self, task_id: str) -> Path:
        return self.base / task_id

    def prepare(self, task_id: str) -> None:
        """Make the task's cgroup before its process starts: making one takes the
        kernel milliseconds, moving a process into it does not."""
        self.path(task_id).mkdir(exist_ok=True)

    def in_cgroup_of(self, pid: int, task_id: str) -> bool | None:
        """Is `pid` in the task's cgroup? None if it is gone. Reading this costs
        little; moving a process (writing cgroup.procs) costs the kernel a lock
        over every cgroup, so a process that joined by itself is not moved again."""
        try:
            own = _cgroup_of(pid)
        except OSError:
            return None
        return own is not None and own.endswith(f"/{self.base.name}/{task_id}")

    def place(self, task_id: str, pid: int) -> None:
        """Move `pid` (a task's process, just started) into the task's cgroup."""
        directory = self.path(task_id)
        if not directory.is_dir():
            directory.mkdir(exist_ok=True)
        with open(directory / "cgroup.procs", "w") as handle:
            handle.write(f"{pid}\n")

    def members(self, task_id: str) -> list[int]:
        try:
            return [int(p) for p in (self.path(task_id) / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self, task_id: str) -> int:
        """SIGKILL everything in the task's cgroup; how many were in it."""
        members = self.members(task_id)
        if not members:
            return 0
        if self.kill_file:
            try:
                (self.path(task_id) / "cgroup.kill").write_text("1\n")
                return len(members)
            except OSError:
                pass
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return len(members)

    def remove(self, task_id: str) -> bool | None:
        """Remove the task's cgroup if it is empty: True done (or gone already),
        None if something is still in it."""
        try:
            self.path(task_id).rmdir()
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return None
            raise
        return True

    def release(self, task_id: str) -> bool:
        """Kill what is left of the task and remove its cgroup; False while it is
        not empty yet (killed processes take a moment to go)."""
        try:
            if self.remove(task_id):  # empty, as after most tasks: nothing to read or kill
                return True
        except OSError:
            return False
        self.kill(task_id)
        try:
            return bool(self.remove(task_id))
        except OSError:
            return False

    def holds(self, pid: int) -> bool:
        """Is `pid` in one of this project's task cgroups (so its task's end kills it)?"""
        try:
            own = _cgroup_of(pid)
        except OSError:
            return False
        return own is not None and f"/{self.base.name}/" in own

    def leftovers(self) -> list[str]:
        """Task cgroups still there (a daemon that died, a release that waited)."""
        try:
            return sorted(entry.name for entry in os.scandir(self.base) if entry.is_dir())
        except OSError:
            return []


def open_task_cgroups(project: Path, base_dir: Path | None = None,
                      timeout: float = 2.0) -> tuple[TaskCgroups | None, str]:
    """The task cgroups if they work here, proved by a probe: a process is placed
    in a cgroup of its own, killed through it, and the cgroup removed. Else None
    and why (the supervisor then relies on its subreaper sweep)."""
    if base_dir is None:
        own, why = own_cgroup_dir()
        if own is None:
            return None, why
        base_dir = own / tasks_dir_name(project)
    try:
        base_dir.mkdir(exist_ok=True)
    except OSError as exc:
        return None, f"cannot create {base_dir}: {exc.strerror or exc} (run as root, or in a systemd unit with Delegate=yes)"
    cgroups = TaskCgroups(base_dir)
    probe = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    name = f"probe-{os.getpid()}"
    try:
        try:
            cgroups.place(name, probe.pid)
        except OSError as exc:
            return None, f"cannot move a process into {cgroups.path(name)}: {exc.strerror or exc}"
        if cgroups.members(name) != [probe.pid]:
            return None, f"{cgroups.path(name)} does not list the process moved into it"
        cgroups.kill(name)
        try:
            probe.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"killing {cgroups.path(name)} did not end the process in it"
        deadline = time.monotonic() + timeout
        while not cgroups.release(name):
            if time.monotonic() > deadline:
                return None, f"cannot remove {cgroups.path(name)}"
            time.sleep(0.01)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    return cgroups, ""
