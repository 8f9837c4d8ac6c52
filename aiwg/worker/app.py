# tests: tests/e2e/test_remote.py
"""`aiwg worker`: a Celery worker that runs aiwg tasks on its own machine.

Its pool is of threads (`-P threads`): each task is a thread that runs an agent
as a child process, so the worker is one process, and a worker that is killed
takes its leases with it (the daemon then fails its tasks as "worker lost").
Messages are acknowledged when received and one is fetched at a time per slot:
a task runs at most once, as locally. The worker says it is there under
`aiwg:worker:<name>` (its queue, slots and running tasks), renewed every few
seconds, which is what `aiwg executors` and `daemon status` show.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from aiwg.core.remote import (DEFAULT_QUEUE, PRESENCE_RENEW_SECONDS, PRESENCE_SECONDS, TASK_NAME, Payload,
                              PayloadError, shown_url, worker_key)
from aiwg.worker.repos import RepoCache
from aiwg.worker.run import RemoteRun, kill_leftovers


class Worker:
    def __init__(self, *, broker: str, queue: str = DEFAULT_QUEUE, concurrency: int = 2, cache: Path,
                 name: str | None = None, environ: Mapping[str, str] | None = None) -> None:
        import redis

        self.broker = broker
        self.queue = queue
        self.concurrency = concurrency
        self.cache = cache
        self.name = name or f"aiwg-{os.getpid()}@{socket.gethostname()}"
        self.environ = dict(os.environ if environ is None else environ)
        self.redis = redis.Redis.from_url(broker, socket_timeout=10, socket_connect_timeout=10,
                                          health_check_interval=30)
        self.repos = RepoCache(cache, self.environ)
        self.running_dir = cache / "running"
        self.running: dict[str, RemoteRun] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.started = time.time()

    # -- one task -----------------------------------------------------------------

    def run_task(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            payload = Payload.from_json(data)
        except PayloadError as exc:
            print(f"aiwg worker: a message refused: {exc}", flush=True)
            return None
        run = RemoteRun(payload, redis=self.redis, worker=self.name, repos=self.repos, environ=self.environ,
                        running_dir=self.running_dir)
        with self._lock:
            self.running[payload.task_id] = run
        try:
            report = run.run()
        finally:
            with self._lock:
                self.running.pop(payload.task_id, None)
        return None if report is None else json.loads(report.to_json())

    # -- presence -----------------------------------------------------------------

    def presence(self) -> dict[str, Any]:
        with self._lock:
            running = sorted(self.running)
        return {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(), "queue": self.queue,
                "concurrency": self.concurrency, "running": running, "started": self.started}

    def _announce(self) -> None:
        while True:
            try:
                self.redis.set(worker_key(self.name), json.dumps(self.presence()), ex=PRESENCE_SECONDS)
            except Exception:
                pass  # the broker is away: Celery says so; this tries again
            if self._stopped.wait(PRESENCE_RENEW_SECONDS):
                return

    # -- the Celery worker -----------------------------------------------------------

    def app(self) -> Any:
        from celery import Celery

        app = Celery("aiwg", broker=self.broker)
        app.conf.update(
            task_acks_late=False,  # at most once: a message is the worker's as soon as it has it
            worker_prefetch_multiplier=1,
            task_ignore_result=True,
            task_default_queue=self.queue,
            broker_connection_retry_on_startup=True,
            worker_hijack_root_logger=False,
            worker_redirect_stdouts=False,
            worker_send_task_events=False,
            broker_transport_options={"visibility_timeout": 24 * 3600},
        )
        app.task(name=TASK_NAME)(self.run_task)
        return app

    def main(self) -> int:
        self.running_dir.mkdir(parents=True, exist_ok=True)
        for task_id in kill_leftovers(self.running_dir):
            print(f"aiwg worker: killed what was left of task {task_id} by an earlier worker", flush=True)
        app = self.app()
        announcer = threading.Thread(target=self._announce, name="aiwg-presence", daemon=True)
        announcer.start()
        print(f"aiwg worker {self.name}: broker {shown_url(self.broker)}, queue {self.queue}, "
              f"{self.concurrency} slot(s), cache {self.cache}", flush=True)
        try:
            app.worker_main(["worker", "-P", "threads", "-c", str(self.concurrency), "-Q", self.queue,
                             "-n", self.name, "--without-gossip", "--without-mingle", "--without-heartbeat",
                             "-l", "WARNING"])
        finally:
            self._stopped.set()
            try:
                self.redis.delete(worker_key(self.name))
            except Exception:
                pass
        return 0
