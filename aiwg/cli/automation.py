# tests: tests/e2e/test_automation.py
"""`aiwg automation …`: see the rules, and switch automation (or one rule) on and off."""

from __future__ import annotations

import click

from aiwg.cli.render import Context, emit_json, json_option, project_option
from aiwg.client import DaemonClient

pass_context = click.make_pass_decorator(Context, ensure=True)


@click.group()
def automation() -> None:
    """Show automation rules; enable or disable them."""


@automation.command()
@project_option
@json_option
@pass_context
def status(ctx: Context) -> None:
    """Whether automation is on, and each rule with its trigger and counters."""
    with DaemonClient(ctx.paths.root) as client:
        result = client.call("automation.status")
    if ctx.as_json:
        emit_json(result)
        return
    state = "enabled" if result["enabled"] else "DISABLED (aiwg automation enable)"
    limits = result.get("limits", {})
    click.echo(
        f"Automation: {state}, {result['ruleCount']} rule(s); loop guard: "
        f"{limits.get('max_fires_per_minute', '?')} fires/min per rule, chain depth {limits.get('max_chain_depth', '?')}"
    )
    if not result["rules"]:
        click.echo("No rules configured (add them under `rules` in .aiwg/daemon.json).")
        return
    width = max([34] + [len(_trigger_text(r)) for r in result["rules"]])
    click.echo(f"{'RULE':<24} {'ON':<4} {'TRIGGER':<{width}} {'FIRES':>5} {'THROT':>5} {'SKIP':>5}  LAST FIRED")
    for rule in result["rules"]:
        text = _trigger_text(rule)
        on = "yes" if rule["enabled"] else "no"
        if rule.get("enabledBy") == "override":
            on += "*"
        click.echo(
            f"{rule['id'][:24]:<24} {on:<4} {text:<{width}} {rule['fireCount']:>5} "
            f"{rule['throttledCount']:>5} {rule.get('skippedCount', 0):>5}  {rule['lastFired'] or '-'}"
        )
        for line in _detail_lines(rule):
            click.echo(f"    {line}")
        if rule.get("lastError"):
            click.echo(f"    last error: {rule['lastError']}")
    if any(r.get("enabledBy") == "override" for r in result["rules"]):
        click.echo("* set with aiwg automation enable/disable --rule (overrides the config file)")


def _trigger_text(rule: dict) -> str:
    trigger = rule["trigger"]
    text = f"{trigger['type']} {trigger.get('pattern') or trigger.get('cron') or trigger.get('topic') or ''}".strip()
    if rule["condition"]["type"] == "debounce":
        text += f" (+{rule['condition']['interval_ms']}ms)"
    return text


def _detail_lines(rule: dict) -> list[str]:
    """What the trigger column cannot hold: a command condition (and how its
    last run went) and a loop action, each on a line of its own."""
    lines = []
    condition = rule["condition"]
    if condition["type"] == "command":
        line = f"if: {condition['run']}  (fires on {condition['expect']}, timeout {condition['timeout_seconds']:g}s)"
        check = condition.get("lastCheck")
        if condition.get("running"):
            line += "; running now"
        elif check:
            outcome = check.get("error") or f"exit {check['exitCode']}"
            line += f"; last: {outcome} at {check['at']}"
        lines.append(line)
    loop = rule.get("action", {}).get("loop")
    if loop:
        lines.append(f"loop: until {loop['until']}  (at most {loop['maxIterations']} iterations"
                     + (f", budget ${loop['budget']:g}" if loop.get("budget") is not None else "") + ")")
    return lines


def _toggle(ctx: Context, rule: str | None, enabled: bool) -> None:
    method = "automation.enable" if enabled else "automation.disable"
    with DaemonClient(ctx.paths.root) as client:
        result = client.call(method, **({"ruleId": rule} if rule else {}))
    if ctx.as_json:
        emit_json(result)
        return
    word = "enabled" if enabled else "disabled"
    click.echo(f"rule {rule} {word}" if rule else f"automation {word}")


@automation.command()
@click.option("--rule", "-r", metavar="ID", help="Only this rule.")
@project_option
@json_option
@pass_context
def enable(ctx: Context, rule: str | None) -> None:
    """Turn automation (or one rule) on; remembered across restarts."""
    _toggle(ctx, rule, True)


@automation.command()
@click.option("--rule", "-r", metavar="ID", help="Only this rule.")
@project_option
@json_option
@pass_context
def disable(ctx: Context, rule: str | None) -> None:
    """Turn automation (or one rule) off; the daemon keeps running. Remembered across restarts."""
    _toggle(ctx, rule, False)
