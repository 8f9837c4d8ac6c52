# tests: tests/e2e/test_automation.py
"""`aiwg schedule …`: the cron jobs, when they fire next, and running one now."""

from __future__ import annotations

import click

from aiwg.cli.render import Context, emit_json, json_option, project_option
from aiwg.client import DaemonClient

pass_context = click.make_pass_decorator(Context, ensure=True)


@click.group()
def schedule() -> None:
    """List scheduled jobs; run one now."""


@schedule.command("list")
@project_option
@json_option
@pass_context
def list_jobs(ctx: Context) -> None:
    """Jobs (and schedule-triggered rules) with their next fire time."""
    with DaemonClient(ctx.paths.root) as client:
        result = client.call("schedule.list")
    if ctx.as_json:
        emit_json(result)
        return
    if not result["jobs"]:
        hint = "" if result["enabled"] else " (schedule.enabled is false)"
        click.echo(f"No scheduled jobs{hint}.")
        return
    if not result["enabled"]:
        click.echo("The scheduler is off (schedule.enabled is false); only schedule rules run.")
    click.echo(f"{'JOB':<24} {'CRON':<16} {'ACTION':<18} {'NEXT FIRE':<25} LAST FIRE")
    for job in result["jobs"]:
        nxt = job["nextFire"] or ("disabled" if not job["enabled"] else "-")
        click.echo(
            f"{job['name'][:24]:<24} {job['cron'][:16]:<16} {job['action'][:18]:<18} "
            f"{nxt:<25} {job['lastFire'] or '-'}"
        )
        if job.get("lastError"):
            click.echo(f"    last error: {job['lastError']}")


@schedule.command()
@click.argument("name")
@project_option
@json_option
@pass_context
def run(ctx: Context, name: str) -> None:
    """Run job NAME's action now, as if it had fired."""
    with DaemonClient(ctx.paths.root) as client:
        result = client.call("schedule.run", name=name)
    if ctx.as_json:
        emit_json(result)
        return
    if "taskId" in result:
        click.echo(f"job {name}: task {result['taskId']} submitted")
    else:
        health = result.get("health", {})
        click.echo(f"job {name}: {result['action']} done ({health.get('status', 'ok')})")
        for issue in health.get("issues", []):
            click.echo(f"  - {issue}")
