# tests: tests/e2e/test_jsonrpc_socket.py
"""`aiwg event …`: emit custom events, follow the daemon's event stream."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from aiwg.cli import views
from aiwg.cli.render import Context, emit_json, fail, json_option, project_option
from aiwg.client import DaemonClient
from aiwg.errors import EXIT_USAGE, ConnectionClosed

pass_context = click.make_pass_decorator(Context, ensure=True)


@click.group()
def event() -> None:
    """Emit custom events and follow the event stream."""


@event.command()
@click.argument("topic")
@click.argument("payload_arg", metavar="[PAYLOAD]", required=False)
@click.option("--payload", "-d", metavar="JSON", help="The event's payload, a JSON object.")
@project_option
@json_option
@pass_context
def emit(ctx: Context, topic: str, payload_arg: str | None, payload: str | None) -> None:
    """Publish TOPIC (e.g. deployment:complete) with an optional JSON object payload.

    Rules with an `event` trigger on the topic fire; subscribers receive it.
    Inside an agent's task the event names the task (AIWG_TASK_ID), so the
    automation loop guard can count how deep a chain of rules has gone."""
    if payload is not None and payload_arg is not None:
        fail("give the payload once: either PAYLOAD or --payload", EXIT_USAGE)
    payload = payload if payload is not None else payload_arg
    data: Any = {}
    if payload:
        try:
            data = json.loads(payload)
        except ValueError as exc:
            fail(f"PAYLOAD must be a JSON object: {exc}", EXIT_USAGE)
        if not isinstance(data, dict):
            fail("PAYLOAD must be a JSON object, e.g. '{\"version\": \"1.2.3\"}'", EXIT_USAGE)
    with DaemonClient(ctx.paths.root) as client:
        result = client.emit(topic, data)
    if ctx.as_json:
        emit_json(result)
    else:
        click.echo(views.published(result))


@event.command()
@click.argument("patterns", nargs=-1)
@project_option
@json_option
@pass_context
def follow(ctx: Context, patterns: tuple[str, ...]) -> None:
    """Print events as they happen (PATTERNS like task:* or *; default all). Ctrl-C stops."""
    with DaemonClient(ctx.paths.root, timeout=10) as client:
        client.subscribe(list(patterns) or ["*"])
        client.timeout = None
        try:
            for item in client.events():
                if ctx.as_json:
                    click.echo(json.dumps(item))
                else:
                    payload = json.dumps(item.get("payload") or {})
                    click.echo(f"{item.get('timestamp')} {item.get('topic')} {payload}")
        except KeyboardInterrupt:
            sys.exit(130)
        except ConnectionClosed:
            click.echo("aiwg: the daemon closed the connection (it stopped)", err=True)
