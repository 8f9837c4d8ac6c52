# tests: tests/e2e/test_remote.py
"""The blocking side of a remote executor: Redis, Celery and git calls made on a
thread of its own (one at a time, in order), and the reader thread that follows
the project's events stream with a consumer group, hands each batch to the
reactor and acknowledges it once handled, so that a daemon that dies between
the two is given the batch again when it comes back (handling is idempotent).

redis and celery are imported here, on first use, in these threads: a daemon
with no remote executor configured never imports them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread, deferToThreadPool
from twisted.python.threadpool import ThreadPool

from aiwg.core import agents
from aiwg.core.remote import (DAEMON_GROUP, RESULT_TTL_SECONDS, TASK_NAME, WORKER_PREFIX, Keys, RemoteSettings,
                              Report)
from aiwg.core.workspaces import ChangeSize, change_size
from aiwg.daemon.tasks.git import GitError, git_environment, run_blocking

#: How long one read of the events stream waits for an entry.
READ_BLOCK_MS = 1000


class Channel:
    def __init__(self, reactor: Any, settings: RemoteSettings, namespace: str, root: Path,
                 environ: Mapping[str, str]) -> None:
        self.reactor = reactor
        self.settings = settings
        self.keys = Keys(namespace)
        self.root = root
        self.environ = environ
        self._git_env = git_environment(environ)
        self._pool = ThreadPool(minthreads=0, maxthreads=1, name=f"aiwg-{settings.kind}")
        self._clients: dict[str, Any] = {}  # "state", "broker": made on the channel's thread
        self._app: Any = None
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- URLs -----------------------------------------------------------------------

    def url(self, which: str = "state") -> str:
        """The broker's URL (or the backend's, for state), `${VAR}` expanded from the
        daemon's environment; ValueError names an unset variable."""
        template = self.settings.broker if which == "broker" else (self.settings.backend or self.settings.broker)
        value, missing = agents.expand(template, self.environ)
        if missing:
            key = "broker" if which == "broker" or not self.settings.backend else "backend"
            raise ValueError(f"executors.{self.settings.kind}.{key}: ${{{missing[0]}}} is not set in the "
                             "daemon's environment")
        return value

    # -- the thread of calls ------------------------------------------------------

    def start(self) -> None:
        self._pool.start()

    def call(self, function: Callable[..., Any], *args: Any) -> Deferred:
        return deferToThreadPool(self.reactor, self._pool, function, *args)

    def stop(self) -> None:
        self._stopping.set()
        self._pool.stop()

    def reconnect(self) -> None:
        """New settings: the next call connects afresh (on the channel's thread)."""
        def drop() -> None:
            self._clients, self._app = {}, None

        self.call(drop)

    def _connect(self, which: str = "state", wait: float = 0.0) -> Any:
        """A Redis client for the state (or the broker), with the settings' timeouts;
        `wait`: how long one of its calls blocks on purpose (a read of the stream)."""
        import redis

        timeout = self.settings.connect_timeout
        return redis.Redis.from_url(self.url(which), socket_timeout=timeout + wait + 5, socket_connect_timeout=timeout)

    def _client(self, which: str = "state") -> Any:
        client = self._clients.get(which)
        if client is None:
            client = self._clients[which] = self._connect(which)
        return client

    # -- calls (each runs on the channel's thread) ---------------------------------------

    def look(self) -> dict[str, Any]:
        """The broker reachable, the workers that serve the queue, its depth."""
        client = self._client()
        client.ping()
        names = list(client.scan_iter(match=WORKER_PREFIX + "*", count=500))
        workers = []
        for raw in client.mget(names) if names else []:
            try:
                item = json.loads(raw) if raw else None
            except ValueError:
                item = None
            if isinstance(item, dict) and item.get("queue") == self.settings.queue:
                workers.append(item)
        depth = self._broker_depth()
        return {"workers": sorted(workers, key=lambda w: str(w.get("name"))), "depth": depth}

    def _broker_depth(self) -> int | None:
        """Messages waiting in the queue (kombu's Redis transport keeps them in a list
        named after the queue, with one more list per priority)."""
        try:
            client = self._client("broker" if self.settings.backend else "state")
            return int(sum(client.llen(name) for name in [self.settings.queue] +
                           [f"{self.settings.queue}\x06\x16{p}" for p in (3, 6, 9)]))
        except Exception:
            return None

    def publish(self, run: str, payload: dict[str, Any]) -> None:
        client = self._client()
        client.hset(self.keys.task(run), mapping={"state": "published", "published": time.time()})
        client.expire(self.keys.task(run), RESULT_TTL_SECONDS)
        if self._app is None:
            from celery import Celery

            self._app = Celery("aiwg-daemon", broker=self.url("broker"))
            self._app.conf.update(broker_connection_retry_on_startup=False, task_ignore_result=True)
        self._app.send_task(TASK_NAME, args=[payload], queue=self.settings.queue, ignore_result=True,
                            retry=True, retry_policy={"max_retries": 1, "interval_start": 0.2})

    def cancel(self, run: str) -> None:
        self._client().set(self.keys.cancel(run), "1", ex=RESULT_TTL_SECONDS)

    def states(self, runs: list[str]) -> dict[str, tuple[bool, str | None, Report | None]]:
        """Each run's lease (held?), its state in its hash, and its report if it ended."""
        pipe = self._client().pipeline()
        for run in runs:
            pipe.exists(self.keys.lease(run))
            pipe.hmget(self.keys.task(run), ["state", "report"])
        answers = pipe.execute()
        out = {}
        for index, run in enumerate(runs):
            lease, (state, report) = answers[2 * index], answers[2 * index + 1]
            out[run] = (bool(lease), state.decode() if state else None,
                        Report.from_json(report) if report else None)
        return out

    # -- git (on the channel's thread) -----------------------------------------------

    def git(self, *args: str) -> str:
        return run_blocking(str(self.root), *args, env=self._git_env)

    def send_base(self, task_id: str, base_ref: str) -> str:
        """The base commit, pushed to git_remote where a worker fetches it; its id."""
        base = self.git("rev-parse", "--verify", "--end-of-options", f"{base_ref}^{{commit}}")
        self.git("push", "--quiet", self.settings.git_remote, f"{base}:refs/aiwg/base/{task_id}")
        return base

    def fetch_branch(self, task_id: str, branch: str, base: str, head: str) -> ChangeSize:
        """The task's branch, fetched into the project from git_remote; its size."""
        self.git("fetch", "--quiet", "--no-tags", self.settings.git_remote, f"+refs/heads/{branch}:refs/heads/{branch}")
        return change_size(self.git("diff", "--shortstat", base, head))

    def forget_refs(self, task_id: str, branch: str | None) -> None:
        """git_remote holds nothing of a task once the daemon has what it needs."""
        refs = [f"refs/aiwg/base/{task_id}"] + ([f"refs/heads/{branch}"] if branch else [])
        try:
            self.git("push", "--quiet", self.settings.git_remote, *[f":{ref}" for ref in refs])
        except GitError:
            pass  # one was never there

    # -- the events stream -----------------------------------------------------------

    def follow(self, handle: Callable[[list[tuple[str, dict[bytes, bytes]]]], Any],
               trouble: Callable[[str | None], Any]) -> None:
        """Start the reader: `handle(entries)` on the reactor for each batch (pending
        ones first), `trouble(error or None)` when the stream cannot be read or can again."""
        self._reader = threading.Thread(target=self._read, args=(handle, trouble), daemon=True,
                                        name=f"aiwg-{self.settings.kind}-events")
        self._reader.start()

    def _read(self, handle: Callable[..., Any], trouble: Callable[[str | None], Any]) -> None:
        import redis

        client = None
        last = "0"  # this consumer's pending entries first: a batch a killed daemon never acknowledged
        failing = False
        while not self._stopping.is_set():
            try:
                if client is None:
                    client = self._connect(wait=READ_BLOCK_MS / 1000)  # its own: it blocks in reads
                    self._ensure_group(client)
                answer = client.xreadgroup(DAEMON_GROUP, "daemon", {self.keys.events: last}, count=500,
                                           block=READ_BLOCK_MS)
            except (redis.RedisError, ValueError, OSError) as exc:
                client = None
                if not failing:
                    failing = True
                    self.reactor.callFromThread(trouble, f"{exc}")
                self._stopping.wait(1.0)
                continue
            if failing:
                failing = False
                self.reactor.callFromThread(trouble, None)
            entries = [(_text(i), fields) for i, fields in answer[0][1]] if answer else []
            if last != ">":
                if not entries:
                    last = ">"
                    continue
                last = entries[-1][0]
            if not entries:
                continue
            try:
                blockingCallFromThread(self.reactor, handle, entries)
            except Exception:
                continue  # logged on the reactor; the entries stay pending for the next start
            try:
                client.xack(self.keys.events, DAEMON_GROUP, *[i for i, _ in entries])
            except redis.RedisError:
                client = None

    def _ensure_group(self, client: Any) -> None:
        import redis

        try:
            client.xgroup_create(self.keys.events, DAEMON_GROUP, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

