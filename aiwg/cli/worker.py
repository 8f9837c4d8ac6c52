# tests: tests/e2e/test_remote.py
"""`aiwg worker`: run remote tasks on this machine (a Celery worker, in the
foreground); `aiwg worker status`: the workers a broker knows of. And
`aiwg executors`: what the project's daemon says of its executors."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from aiwg.cli.render import Context, emit_json, fail, json_option
from aiwg.client import DaemonClient
from aiwg.core.remote import DEFAULT_QUEUE, shown_url, url_problem
from aiwg.errors import EXIT_NOT_CONFIGURED


def _broker_option(function: Any) -> Any:
    return click.option("--broker", envvar="AIWG_BROKER", required=True, metavar="URL",
                        help="The Redis broker (redis://, rediss://; env AIWG_BROKER).")(function)


def _checked(broker: str) -> str:
    problem = url_problem(broker)
    if problem:
        fail(f"--broker {shown_url(broker)}: {problem}", EXIT_NOT_CONFIGURED)
    return broker


def _celery_or_fail() -> None:
    from importlib.util import find_spec

    missing = [name for name in ("celery", "redis") if find_spec(name) is None]
    if missing:
        fail(f"aiwg worker needs Celery and the Redis client ({', '.join(missing)} not installed): "
             "pip install 'aiwg-daemon[celery]'", EXIT_NOT_CONFIGURED)


@click.group("worker", invoke_without_command=True)
@_broker_option
@click.option("--queue", "-Q", default=DEFAULT_QUEUE, show_default=True, help="The queue to take tasks from.")
@click.option("--concurrency", "-c", default=2, show_default=True, type=click.IntRange(1, 256),
              help="Tasks run at once.")
@click.option("--cache", type=click.Path(file_okay=False), default=None,
              help="Where the projects' repositories and the tasks' worktrees go "
                   "(default: $XDG_CACHE_HOME/aiwg-worker).")
@click.option("--name", "-n", default=None, help="This worker's name (default: aiwg-<pid>@<host>).")
@click.pass_context
def worker(ctx: click.Context, broker: str, queue: str, concurrency: int, cache: str | None,
           name: str | None) -> None:
    """Run aiwg tasks sent to QUEUE on this machine (foreground; Ctrl-C stops
    after the running tasks end, a second Ctrl-C at once)."""
    if ctx.invoked_subcommand is not None:
        ctx.meta["broker"] = broker
        return
    _celery_or_fail()
    from aiwg.worker.app import Worker

    base = Path(cache) if cache else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aiwg-worker"
    sys.exit(Worker(broker=_checked(broker), queue=queue, concurrency=concurrency, cache=base.resolve(),
                    name=name).main())


@worker.command("status")
@json_option
@click.pass_context
def worker_status(ctx: click.Context) -> None:
    """The workers the broker knows of: their queues, slots and running tasks."""
    _celery_or_fail()
    import redis

    from aiwg.core.remote import WORKER_PREFIX

    broker = _checked(ctx.meta["broker"])
    client = redis.Redis.from_url(broker, socket_timeout=5, socket_connect_timeout=5)
    try:
        names = sorted(client.scan_iter(match=WORKER_PREFIX + "*", count=500))
        workers = [json.loads(v) for v in client.mget(names) if v] if names else []
    except redis.RedisError as exc:
        fail(f"broker {shown_url(broker)} unreachable: {exc}", 1)
    root: Context = ctx.find_root().obj
    if root.as_json:
        emit_json({"broker": shown_url(broker), "workers": workers})
        return
    if not workers:
        click.echo(f"no workers on {shown_url(broker)}")
        return
    for item in workers:
        running = ", ".join(item.get("running") or []) or "idle"
        click.echo(f"{item['name']}  queue {item['queue']}  {len(item.get('running') or [])}/{item['concurrency']} "
                   f"busy  ({running})")


@click.command("executors")
@json_option
@click.pass_obj
def executors(obj: Context) -> None:
    """The daemon's executors: brokers, workers seen, queue depth, remote tasks."""
    with DaemonClient(obj.paths.root) as client:
        status = client.request("daemon.status", {})
    section = ((status.get("subsystems") or {}).get("supervisor") or {}).get("executors") or {}
    if obj.as_json:
        emit_json(section)
        return
    click.echo(f"default executor: {section.get('default', 'local')}")
    for name, item in (section.get("remote") or {}).items():
        state = "reachable" if item.get("reachable") else f"UNREACHABLE ({item.get('error')})"
        click.echo(f"{name}: broker {item.get('broker')} {state}; queue {item.get('queue')}")
        click.echo(f"  waiting {item.get('waiting', 0)}, published {item.get('published', 0)}, "
                   f"running {item.get('running', 0)}")
        for w in item.get("workers") or []:
            click.echo(f"  worker {w['name']}: {len(w.get('running') or [])}/{w['concurrency']} busy")
