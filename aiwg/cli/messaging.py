# tests: tests/e2e/test_messaging.py, tests/test_cli.py
"""`aiwg messaging …`: the chat-app bridges' state, and a test notification."""

from __future__ import annotations

import sys
from typing import Any

import click

from aiwg.cli.text import bridge_line  # noqa: F401 (status.py and this module's status)
from aiwg.cli.render import Context, emit_json, json_option, project_option
from aiwg.client import DaemonClient
from aiwg.errors import EXIT_FAILURE

pass_context = click.make_pass_decorator(Context, ensure=True)

PLATFORMS = ("telegram", "slack", "discord")
COUNTERS = ("sent", "received", "refused", "failed", "rate_limited", "dropped", "reconnects", "outbox")


@click.group()
def messaging() -> None:
    """Telegram, Slack and Discord bridges: state, counters, a test notification."""


@messaging.command()
@project_option
@json_option
@pass_context
def status(ctx: Context) -> None:
    """Each bridge's state (connected, reconnecting, disabled, error) and counters; exit 1 if one is in error."""
    with DaemonClient(ctx.paths.root) as client:
        result = client.call("messaging.status")
    failing = [p for p, info in result["adapters"].items() if info.get("state") == "error"]
    if ctx.as_json:
        emit_json(result)
    else:
        if not result["enabled"]:
            click.echo("No messaging bridge is enabled (see `messaging` in .aiwg/daemon.json).")
        for platform in PLATFORMS:
            info = result["adapters"].get(platform, {"state": "disabled"})
            click.echo(f"{platform:<9} {bridge_line(info)}")
            counts = [f"{k}={info[k]}" for k in COUNTERS if k in info]
            if counts:
                click.echo(f"          {', '.join(counts)}")
    if failing:  # as `systemctl is-failed` would: a bridge that is on and not working fails the check
        sys.exit(EXIT_FAILURE)


@messaging.command()
@click.option("--platform", "-P", type=click.Choice(PLATFORMS), help="Only this bridge (default: every enabled one).")
@project_option
@json_option
@pass_context
def test(ctx: Context, platform: str | None) -> None:
    """Send a test notification to every notification target now; exit 1 if one failed."""
    params: dict[str, Any] = {} if platform is None else {"platform": platform}
    with DaemonClient(ctx.paths.root, timeout=120) as client:
        result = client.call("messaging.test", **params)
    results = result["results"]
    failed = any(not t.get("ok") for targets in results.values() for t in targets)
    if ctx.as_json:
        emit_json(result)
    else:
        for name, targets in results.items():
            if not targets:
                click.echo(f"{name}: no notification target (set chat_ids / channel_ids or webhook_url)")
            for target in targets:
                outcome = "sent" if target.get("ok") else f"FAILED: {target.get('error')}"
                click.echo(f"{name} → {target['target']}: {outcome}")
    if failed or not any(results.values()):
        sys.exit(1)
