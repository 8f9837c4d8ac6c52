# tests: tests/e2e/test_tasks.py
"""`aiwg task …`: submit, list, get (--follow), cancel, stats, export; diff, merge and
discard come from branches.py."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

import click

from aiwg.cli import branches, views
from aiwg.cli.render import Context, emit_json, fail, json_option, project_option, user_name
from aiwg.client import DaemonClient
from aiwg.cli.following import follow_all, follow_task, json_line, task_call, unknown_task_or_raise
from aiwg.errors import EXIT_FAILURE, RpcError
from aiwg.core.states import END_TOPICS

pass_context = click.make_pass_decorator(Context, ensure=True)
STATES = views.STATES


@click.group()
def task() -> None:
    """Submit, inspect and cancel agent tasks."""


@task.command()
@click.argument("prompt")
@click.option("--priority", "-p", type=int, default=0, show_default=True, help="Higher runs sooner (10 critical … -5 background).")
@click.option("--timeout", "-t", type=click.FloatRange(min=0, min_open=True), help="Minutes before the task is stopped (default daemon.action_timeout_minutes).")
@click.option("--agent", help="Passed to the agent as --agent NAME.")
@click.option("--retries", type=click.IntRange(0, 100), default=0, help="Re-queue this many times if the daemon stops while it runs.")
@click.option("--require-approval", is_flag=True, help="Wait in state awaiting_approval until `aiwg task approve ID`.")
@click.option("--until", metavar="COMMAND", help="Loop: after each agent run, run COMMAND (through your shell, in the "
              "project root); exit 0 completes the task, anything else runs the agent again with its output.")
@click.option("--max-iterations", type=click.IntRange(1, 1000), help="Loop: iterations before the task fails (default 5).")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), metavar="USD",
              help="Loop: stop (failed) once the agent has reported spending this much in total.")
@click.option("--iteration-timeout", type=click.FloatRange(min=0, min_open=True), metavar="MIN",
              help="Loop: minutes one agent run may take (default daemon.action_timeout_minutes).")
@click.option("--check-timeout", type=click.FloatRange(min=0, min_open=True), metavar="MIN",
              help="Loop: minutes the check may take (default 10).")
@click.option("--isolate/--no-isolate", default=None, help="Run in a git worktree and on a branch of its own "
              "(default: as tasks.isolation says).")
@click.option("--base", metavar="REF", help="Isolated: the branch, tag or commit to start from (default: HEAD).")
@click.option("--executor", metavar="NAME", help="Where it runs: local, or a remote executor (celery) configured "
              "under executors (default: executors.default).")
@click.option("--wait", "-w", is_flag=True, help="Wait, streaming output, and exit with the task's status; Ctrl-C cancels the task.")
@click.option("--detach", is_flag=True, help="With --wait: Ctrl-C stops waiting and leaves the task running.")
@project_option
@json_option
@pass_context
def submit(ctx: Context, prompt: str, priority: int, timeout: float | None, agent: str | None, retries: int,
           require_approval: bool, until: str | None, max_iterations: int | None, budget: float | None,
           iteration_timeout: float | None, check_timeout: float | None, isolate: bool | None, base: str | None,
           executor: str | None, wait: bool, detach: bool) -> None:
    """Queue PROMPT for the agent (one argument; quote it). With --until, the task
    is a loop: agent, check, agent again with what failed, until the check passes
    or a limit is hit. For a loop, --timeout limits the whole loop."""
    params = views.submit_params(prompt, priority=priority, retries=retries, require_approval=require_approval,
                                 timeout=timeout, agent=agent, isolate=isolate, base=base, executor=executor)
    loop = {"maxIterations": max_iterations, "budget": budget, "iterationTimeout": iteration_timeout,
            "checkTimeout": check_timeout}
    loop = {k: v for k, v in loop.items() if v is not None}
    if loop and until is None:
        names = {"maxIterations": "--max-iterations", "budget": "--budget", "iterationTimeout": "--iteration-timeout",
                 "checkTimeout": "--check-timeout"}
        fail(f"{' and '.join(names[k] for k in loop)} need{'s' if len(loop) == 1 else ''} --until COMMAND "
             "(a loop's check)", 2)
    if until is not None:
        if not until.strip():
            fail("--until: the check command is empty", 2)
        params.update(until=until, **loop)
    with DaemonClient(ctx.paths.root) as client:
        if wait:
            client.subscribe(["task:output", "task:iteration", "task:queued", "task:started", "task:approved",
                              *END_TOPICS])
        result = client.request("task.submit", params)
        if ctx.as_json and not wait:
            emit_json(result)
            return
        if ctx.as_json:  # the first of the JSON Lines that --wait writes
            json_line({"type": "submitted", **result})
        else:
            click.echo(views.submitted(result), err=wait)
        if wait:
            sys.exit(follow_task(ctx.as_json, client, result["taskId"], subscribed=True, started_here=True,
                                 detach=detach))


@task.command("list")
@click.option("--state", "-s", type=click.Choice(STATES), help="Only tasks in this state.")
@click.option("--source", "-S", metavar="GLOB", help="Only tasks from this source: cli, chat, rule:*, schedule:nightly, …")
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@project_option
@json_option
@pass_context
def list_tasks(ctx: Context, state: str | None, source: str | None, limit: int, offset: int) -> None:
    """Tasks, newest first (a page of them: the footer says how many there are)."""
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    filters = {k: v for k, v in (("state", state), ("source", source)) if v}
    with DaemonClient(ctx.paths.root) as client:
        tasks = client.request("task.list", {**params, **filters})
        total = client.request("task.count", filters)["count"] if not ctx.as_json else None
    if ctx.as_json:
        emit_json(tasks)
        return
    lines, footer = views.task_list(tasks, total or 0, offset)
    click.echo("\n".join(lines))
    if footer:
        click.echo(footer, err=True)


@task.command()
@click.argument("task_id", metavar="[ID]", required=False)
@click.option("--all", "-a", "every", is_flag=True, help="Follow every task's output, each line prefixed with its task id, until Ctrl-C or the daemon stops.")
@project_option
@json_option
@pass_context
def follow(ctx: Context, task_id: str | None, every: bool) -> None:
    """Stream one task's output until it ends (as `get --follow`), or every task's with --all."""
    if task_id and every:
        fail("give a task ID or --all, not both", 2)
    if not task_id and not every:
        fail("give a task ID, or --all to follow every task", 2)
    with DaemonClient(ctx.paths.root) as client:
        if task_id:
            sys.exit(follow_task(ctx.as_json, client, task_id, subscribed=False))
        sys.exit(follow_all(ctx.as_json, client))


@task.command()
@click.argument("task_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True, help="Stream the output until the task ends; exit with its status.")
@project_option
@json_option
@pass_context
def get(ctx: Context, task_id: str, follow: bool) -> None:
    """Show one task (with --follow, stream its output live)."""
    with DaemonClient(ctx.paths.root) as client:
        if follow:
            sys.exit(follow_task(ctx.as_json, client, task_id, subscribed=False))
        record = task_call(client, "task.get", task_id)
    if ctx.as_json:
        emit_json(record)
        return
    click.echo(views.task_record(record))


@task.command()
@click.argument("task_id", metavar="ID")
@project_option
@json_option
@pass_context
def cancel(ctx: Context, task_id: str) -> None:
    """Cancel a queued or running task."""
    with DaemonClient(ctx.paths.root) as client:
        result = task_call(client, "task.cancel", task_id)
    if ctx.as_json:
        emit_json(result)
        if not result["cancelled"]:  # the same status in either format
            sys.exit(EXIT_FAILURE)
    elif result["cancelled"]:
        click.echo(f"Task {task_id} cancelled")
    else:
        fail(f"task {task_id} is already {result['state']}; nothing to cancel", 1)


def _decide(ctx: Context, method: str, task_id: str, **params: Any) -> dict[str, Any]:
    by = f"cli:{user_name()}"
    with DaemonClient(ctx.paths.root) as client:
        try:
            result: dict[str, Any] = client.call(method, taskId=task_id, by=by, **params)
        except RpcError as exc:
            state = (exc.data or {}).get("state") if isinstance(exc.data, dict) else None
            if state:
                fail(f"task {task_id} is not awaiting approval (it is {state})", 1)
            unknown_task_or_raise(exc, task_id)
    return result


@task.command()
@click.argument("task_id", metavar="ID")
@project_option
@json_option
@pass_context
def approve(ctx: Context, task_id: str) -> None:
    """Let a task that awaits approval run: it is queued."""
    result = _decide(ctx, "task.approve", task_id)
    if ctx.as_json:
        emit_json(result)
    else:
        click.echo(f"Task {task_id} approved: merged into {result['into']} ({(result.get('commit') or '')[:12]})"
                   if result.get("merged") else f"Task {task_id} approved (queued)")


@task.command()
@click.argument("task_id", metavar="ID")
@click.option("--reason", "-r", help="Why; kept in the task's error and sent with the notification.")
@project_option
@json_option
@pass_context
def reject(ctx: Context, task_id: str, reason: str | None) -> None:
    """End a task that awaits approval without running it."""
    result = _decide(ctx, "task.reject", task_id, **({"reason": reason} if reason else {}))
    if ctx.as_json:
        emit_json(result)
    else:
        click.echo(f"Task {task_id} rejected" + (": its branch is kept, unmerged" if "workspace" in result else ""))


@task.command()
@click.argument("task_id", metavar="ID")
@project_option
@json_option
@pass_context
def retry(ctx: Context, task_id: str) -> None:
    """Run an ended task again: a new task with the same prompt and settings."""
    with DaemonClient(ctx.paths.root) as client:
        result = task_call(client, "task.retry", task_id)
    if ctx.as_json:
        emit_json(result)
    else:
        click.echo(f"Task submitted: {result['taskId']} ({result['state']}), a retry of {task_id}")


@task.command("rm")
@click.argument("task_ids", metavar="ID...", nargs=-1, required=True)
@project_option
@json_option
@pass_context
def remove(ctx: Context, task_ids: tuple[str, ...]) -> None:
    """Delete ended tasks, with their output files; exit 1 if one could not be."""
    with DaemonClient(ctx.paths.root) as client:
        result = client.call("task.remove", taskIds=list(task_ids))
    if ctx.as_json:
        emit_json(result)
    else:
        for task_id in result["removed"]:
            click.echo(f"removed {task_id}")
        for task_id, why in result["kept"].items():
            click.echo(f"aiwg: kept {task_id}: {why}", err=True)
    if result["kept"]:
        sys.exit(EXIT_FAILURE)


def _age(text: str) -> float:
    """`7d`, `12h`, `30m`, `90s`, or a number of days, in seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text) * 86400
    except ValueError:
        raise click.BadParameter(f"{text!r}: give a number and d, h, m or s (7d, 12h)") from None


@task.command()
@click.option("--state", "-s", type=click.Choice(("completed", "failed", "cancelled", "timeout", "rejected")),
              help="Only ended tasks in this state.")
@click.option("--older-than", metavar="AGE", help="Only tasks that ended longer ago than this: 7d, 12h, 30m.")
@project_option
@json_option
@pass_context
def prune(ctx: Context, state: str | None, older_than: str | None) -> None:
    """Delete ended tasks (all, or in a state, or ended long ago), with their output files."""
    params: dict[str, Any] = {}
    if state:
        params["state"] = state
    if older_than:
        params["olderThan"] = _age(older_than)
    with DaemonClient(ctx.paths.root) as client:
        result = client.call("task.prune", **params)
    if ctx.as_json:
        emit_json(result)
    else:
        click.echo(f"removed {len(result['removed'])} ended task(s)")


@task.command()
@project_option
@json_option
@pass_context
def stats(ctx: Context) -> None:
    """Counts of tasks by state."""
    with DaemonClient(ctx.paths.root) as client:
        result = client.call("task.stats")
    if ctx.as_json:
        emit_json(result)
        return
    click.echo(views.task_stats(result))


@task.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
@project_option
@json_option  # accepted everywhere; the export is JSON either way
@pass_context
def export(ctx: Context, output: str | None) -> None:
    """All tasks as JSON, in AIWG's tasks.json shape ({version, updatedAt, tasks})."""
    tasks: list[Any] = []
    with DaemonClient(ctx.paths.root) as client:
        offset = 0
        while True:
            page = client.call("task.list", limit=1000, offset=offset)
            tasks.extend(page)
            if len(page) < 1000:
                break
            offset += 1000
    tasks.reverse()  # oldest first, as tasks.json kept them
    document = {
        "version": 1,
        "updatedAt": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "tasks": tasks,
    }
    text = json.dumps(document, indent=2) + "\n"
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
        click.echo(f"exported {len(tasks)} task(s) to {output}", err=True)
    else:
        click.echo(text, nl=False)


task.add_command(branches.diff)
task.add_command(branches.merge)
task.add_command(branches.discard)
