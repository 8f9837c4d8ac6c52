# tests: tests/e2e/test_remote.py
"""One remote task on a worker, from its claim to its report: claimed once (a
message delivered twice runs once), its lease renewed while it runs (the daemon
calls a worker whose lease lapsed lost), its worktree made at the base commit,
its agent run as the local executor runs it (a session and process group of its
own, stdin closed, `CLAUDECODE` dropped, the timeout, the output cap, secrets
redacted), its output streamed as it comes, its changes pushed on its branch,
and how it ended written where the daemon reads it.

A cancel is a key the daemon sets; the lease thread sees it and stops the
agent's whole process group (TERM, then KILL after the task's grace).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from attrs import evolve

from aiwg import procfs
from aiwg.core import agents
from aiwg.core.remote import (EVENTS_MAXLEN, LEASE_RENEW_SECONDS, LEASE_SECONDS, OUTPUT_CHUNK_BYTES,
                              RESULT_TTL_SECONDS, Keys, Payload, Report)
from aiwg.daemon.tasks.git import REPOSITORY_VARIABLES, GitError
from aiwg.worker.repos import RepoCache


#: Tries, a second apart, to write a run's end while the broker is away.
FINISH_TRIES = 60


class RemoteRun:
    def __init__(self, payload: Payload, *, redis: Any, worker: str, repos: RepoCache, environ: Mapping[str, str],
                 running_dir: Path) -> None:
        self.payload = payload
        self.redis = redis
        self.worker = worker
        self.repos = repos
        self.environ = environ
        self.running_dir = running_dir
        self.keys = Keys(payload.namespace)
        self.stop_reason: str | None = None
        self._stop_at: float | None = None  # when the group gets SIGKILL
        self._done = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.sent = 0  # bytes of output streamed (up to the cap)
        self.total = 0  # bytes of output seen

    # -- the whole run -----------------------------------------------------------

    def run(self) -> Report | None:
        """The report (also written for the daemon), or None if another worker has the task."""
        p, r, keys = self.payload, self.redis, self.keys
        if not r.set(keys.claim(p.run), self.worker, nx=True, ex=RESULT_TTL_SECONDS):
            return None
        if r.exists(keys.cancel(p.run)):
            return self._finish(Report(worker=self.worker, reason="cancel", error="cancelled before it started"))
        r.set(keys.lease(p.run), self.worker, ex=LEASE_SECONDS)
        r.hset(keys.task(p.run), mapping={"state": "running", "worker": self.worker, "started": time.time()})
        r.xadd(keys.events, {"task": p.task_id, "run": p.run, "kind": "claimed", "worker": self.worker},
               maxlen=EVENTS_MAXLEN, approximate=True)
        lease = threading.Thread(target=self._keep_lease, name=f"aiwg-lease-{p.task_id}", daemon=True)
        lease.start()
        work: Path | None = None
        try:
            try:
                work = self.repos.checkout(p.git_remote, p.base, p.branch, p.task_id)
            except GitError as exc:
                return self._finish(Report(worker=self.worker, error=f"cannot check out the base commit: {exc}"))
            report = self._run_agent(work)
            if report.error is None:
                try:
                    head = self.repos.collect(work, p.git_remote, p.base, p.branch, p.commit_message, p.author)
                    report = evolve(report, head=head)
                except GitError as exc:
                    report = evolve(report, error=f"cannot push the task's branch: {exc}")
            return self._finish(report)
        finally:
            self._done.set()
            lease.join(timeout=5)
            if work is not None:
                try:
                    self.repos.remove(p.git_remote, work, p.branch)
                except GitError:
                    pass

    def _finish(self, report: Report) -> Report:
        """Say how it ended; a broker away for a moment is tried again for a while
        (the lease thread keeps trying too), so a finished run is not taken for a
        lost worker."""
        p, keys = self.payload, self.keys
        for attempt in range(FINISH_TRIES):
            pipe = self.redis.pipeline()
            pipe.hset(keys.task(p.run), mapping={"state": "finished", "report": report.to_json()})
            pipe.expire(keys.task(p.run), RESULT_TTL_SECONDS)
            pipe.xadd(keys.events, {"task": p.task_id, "run": p.run, "kind": "finished", "report": report.to_json()},
                      maxlen=EVENTS_MAXLEN, approximate=True)
            pipe.delete(keys.lease(p.run))
            try:
                pipe.execute()
                return report
            except Exception:
                if attempt == FINISH_TRIES - 1:
                    raise
                time.sleep(1.0)
        return report

    # -- the lease and the cancel --------------------------------------------------

    def _keep_lease(self) -> None:
        p, keys = self.payload, self.keys
        while not self._done.wait(LEASE_RENEW_SECONDS):
            try:
                pipe = self.redis.pipeline()
                pipe.set(keys.lease(p.run), self.worker, ex=LEASE_SECONDS)
                pipe.exists(keys.cancel(p.run))
                _, cancelled = pipe.execute()
            except Exception:
                continue  # the broker is away for a moment; the lease may lapse, the agent runs on
            if cancelled:
                self.stop("cancel")

    def stop(self, reason: str) -> None:
        """TERM the agent's group now, KILL it after the task's grace."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._stop_at = time.monotonic() + self.payload.kill_grace_seconds
        self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    # -- the agent ----------------------------------------------------------------

    def _run_agent(self, work: Path) -> Report:
        p = self.payload
        env, _ = agents.child_env(self.environ, p.env)
        for name in REPOSITORY_VARIABLES:
            env.pop(name, None)
        env[procfs.TASK_MARKER] = p.task_id
        redactor = agents.StreamRedactor(agents.secret_values(self.environ, p.env))
        executable = shutil.which(p.program, path=env.get("PATH", os.defpath))
        if executable is None:
            return Report(worker=self.worker, error=f"agent command '{p.program}' not found on the worker's PATH")
        if self.stop_reason is not None:
            return Report(worker=self.worker, reason=self.stop_reason, error="cancelled before it started")
        try:
            self.process = subprocess.Popen(list(p.argv), executable=executable, cwd=str(work), env=env,
                                            stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            return Report(worker=self.worker, error=f"could not start the agent: {exc}")
        marker = self.running_dir / f"{p.task_id}.json"
        marker.write_text(json.dumps({"pgid": self.process.pid, "task": p.task_id}))
        try:
            self._pump(redactor, time.monotonic() + p.timeout_seconds)
        finally:
            marker.unlink(missing_ok=True)
        code = self.process.returncode
        return Report(worker=self.worker, exit_code=code if code is not None and code >= 0 else None,
                      signal=-code if code is not None and code < 0 else None, reason=self.stop_reason,
                      output_bytes=self.sent)

    def _pump(self, redactor: agents.StreamRedactor, deadline: float) -> None:
        """Stream its output until both pipes close, stopping it at its deadline or a
        cancel; once it has exited, what it left in its group is stopped too."""
        assert self.process is not None
        proc = self.process
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ, 1)  # type: ignore[arg-type]
        selector.register(proc.stderr, selectors.EVENT_READ, 2)  # type: ignore[arg-type]
        open_pipes = 2
        exited = False
        while open_pipes:
            now = time.monotonic()
            if self.stop_reason is None and now >= deadline:
                self.stop("timeout")
            if self._stop_at is not None and now >= self._stop_at:
                self._signal(signal.SIGKILL)
                self._stop_at = now + 1.0  # and again, until the pipes close
            if not exited and proc.poll() is not None:
                exited = True
                self._signal(signal.SIGTERM)  # whatever it left behind
                grace_over = now + self.payload.kill_grace_seconds
                self._stop_at = grace_over if self._stop_at is None else min(self._stop_at, grace_over)
            for key, _ in selector.select(timeout=0.25):
                data = os.read(key.fileobj.fileno(), OUTPUT_CHUNK_BYTES)  # type: ignore[union-attr]
                fd = key.data
                if not data:
                    selector.unregister(key.fileobj)
                    open_pipes -= 1
                    data = redactor.flush(fd)
                else:
                    data = redactor.feed(fd, data)
                if data:
                    self._send(fd, data)
        selector.close()
        proc.wait()
        self._signal(signal.SIGKILL)  # nothing of it outlives its pipes

    def _send(self, fd: int, data: bytes) -> None:
        offset = self.total
        self.total += len(data)
        limit = self.payload.output_max_bytes
        if self.sent > limit:
            return
        room = limit - self.sent
        chunk = data[:room]
        if len(data) > room:
            chunk += f"\n[aiwg: output truncated at {limit} bytes]\n".encode()
            self.sent = limit + 1
        else:
            self.sent += len(chunk)
        try:
            self.redis.xadd(self.keys.events, {"task": self.payload.task_id, "run": self.payload.run, "kind": "output", "fd": fd,
                                               "offset": offset, "data": chunk},
                            maxlen=EVENTS_MAXLEN, approximate=True)
        except Exception:
            pass  # the broker is away: this chunk is lost to followers; the agent runs on


def kill_leftovers(running_dir: Path) -> list[str]:
    """At a worker's start: the process groups of agents a killed worker left behind
    (each recorded while it ran, and still marked with its task) are killed."""
    killed = []
    for marker in running_dir.glob("*.json"):
        try:
            record = json.loads(marker.read_text())
            pgid, task_id = int(record["pgid"]), str(record["task"])
        except (OSError, ValueError, KeyError, TypeError):
            marker.unlink(missing_ok=True)
            continue
        if procfs.task_marker(pgid) == task_id:
            try:
                os.killpg(pgid, signal.SIGKILL)
                killed.append(task_id)
            except (ProcessLookupError, PermissionError):
                pass
        marker.unlink(missing_ok=True)
    return killed
