# tests: tests/e2e/test_tasks.py
"""`aiwg task …`: submit, list, get (--follow), cancel, stats, export; diff, merge and
discard come from branches.py."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import Any

import click

from aiwg.cli import branches
from aiwg.cli.render import Context, duration, emit_json, fail, json_option, project_option, user_name
from aiwg.client import DaemonClient
from aiwg.cli.following import follow_all, follow_task, json_line, task_call, unknown_task_or_raise
from aiwg.errors import EXIT_FAILURE, RpcError
from aiwg.core import workspaces
from aiwg.core.states import END_TOPICS

pass_context = click.make_pass_decorator(Context, ensure=True)

STATES = ("awaiting_approval", "queued", "running", "completed", "failed", "cancelled", "timeout", "rejected")
#: Exit status of `task get --follow` and `task submit --wait` for each final state.


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
@click.option("--wait", "-w", is_flag=True, help="Wait, streaming output, and exit with the task's status; Ctrl-C cancels the task.")
@click.option("--detach", is_flag=True, help="With --wait: Ctrl-C stops waiting and leaves the task running.")
@project_option
@json_option
@pass_context
def submit(ctx: Context, prompt: str, priority: int, timeout: float | None, agent: str | None, retries: int,
           require_approval: bool, until: str | None, max_iterations: int | None, budget: float | None,
           iteration_timeout: float | None, check_timeout: float | None, isolate: bool | None, base: str | None,
           wait: bool, detach: bool) -> None:
    """Queue PROMPT for the agent (one argument; quote it). With --until, the task
    is a loop: agent, check, agent again with what failed, until the check passes
    or a limit is hit. For a loop, --timeout limits the whole loop."""
    params: dict[str, Any] = {"prompt": prompt, "priority": priority, "source": "cli", "retries": retries}
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
    if require_approval:
        params["requireApproval"] = True
    if timeout is not None:
        params["timeout"] = timeout
    if agent:
        params["agent"] = agent
    if isolate is not None:
        params["isolate"] = isolate
    if base:
        params["base"] = base
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
            click.echo(f"Task submitted: {result['taskId']} ({result['state']})", err=wait)
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
    if not tasks:
        click.echo("No tasks found" + (f" (there are {total}; --offset {offset} is past them)" if total else ""))
        return
    now = time.time()
    rows = [("ID", "STATE", "PRI", "SOURCE", "AGE", "DURATION", "PROMPT")]
    for t in tasks:
        created = _epoch(t["createdAt"])
        age = duration(now - created) if created else "-"
        took = duration(t["duration"] / 1000) if t.get("duration") is not None else "-"
        prompt = " ".join(t["prompt"].split())
        rows.append((t["id"], t["state"], str(t["priority"]), t["source"], age, took,
                     prompt if len(prompt) <= 50 else prompt[:49] + "…"))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for row in rows:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:6])) + "  " + row[6])
    shown_to = offset + len(tasks)
    if offset or shown_to < total:
        more = f"; next: --offset {shown_to}" if shown_to < total else ""
        click.echo(f"{offset + 1}–{shown_to} of {total}{more} (or --limit)", err=True)


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
    rows = [
        ("id", record["id"]), ("state", record["state"]), ("priority", record["priority"]),
        ("source", record["source"]), ("created", record["createdAt"]),
        ("started", record["startedAt"] or "-"), ("finished", record["completedAt"] or "-"),
        ("duration", duration(record["duration"] / 1000) if record["duration"] is not None else "-"),
        ("exit code", record["exitCode"] if record["exitCode"] is not None else "-"),
        ("attempts", record["attempts"]),
        ("output", f"{record['outputPath']} ({record['outputBytes']} bytes)"),
    ]
    if record.get("timeoutMinutes"):
        rows.append(("timeout", f"{record['timeoutMinutes']:g} min"))
    if record.get("costUsd") is not None:
        rows.append(("cost", f"${record['costUsd']:.4f}"))
    if record.get("sessionId"):
        rows.append(("session", record["sessionId"]))
    if record.get("error"):
        rows.append(("error", record["error"]))
    if record.get("workspace"):
        rows.append(("workspace", workspaces.summary(workspaces.WorkspaceRecord.from_json(record["workspace"]))))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key + ':':<{width + 1}} {value}")
    click.echo(f"{'prompt:':<{width + 1}} {record['prompt']}")
    loop = (record.get("metadata") or {}).get("loop")
    if isinstance(loop, dict):
        click.echo(f"{'loop:':<{width + 1}} until `{loop.get('until')}` passes, at most "
                   f"{loop.get('maxIterations')} iteration(s)"
                   + (f", budget ${loop['budget']:g}" if loop.get("budget") else ""))
        _iterations_table(record.get("iterations") or [])
    if record.get("result"):
        click.echo("result:")
        click.echo(record["result"])
    elif record.get("output"):
        click.echo("output (tail):")
        click.echo(record["output"].rstrip("\n"))


def _iterations_table(iterations: list[dict[str, Any]]) -> None:
    """One line per finished iteration: how the agent and the check did, what it cost."""
    if not iterations:
        click.echo("iterations: none finished yet")
        return
    rows = [("#", "AGENT", "CHECK", "COST", "TOTAL", "TIME", "HEAD", "CHANGED", "OUTCOME")]
    for it in iterations:
        agent = it.get("agent") or {}
        check = it.get("check") or {}
        after = ((it.get("git") or {}).get("after") or {})
        rows.append((
            str(it.get("iteration", "?")),
            _agent_cell(agent),
            _check_cell(check),
            f"${it['costUsd']:.4f}" if it.get("costUsd") is not None else "-",
            f"${it['totalCostUsd']:.4f}" if it.get("totalCostUsd") is not None else "-",
            duration(it.get("duration") or 0),
            (after.get("head") or "-")[:8] if after else "-",
            str(len(after.get("status") or [])) if after else "-",
            it.get("outcome") or "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    click.echo("iterations:")
    for row in rows:
        click.echo("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def _agent_cell(agent: dict[str, Any]) -> str:
    if not agent:
        return "-"
    error = agent.get("error")
    if not error:
        return "ok"
    if "timed out" in error:
        return "timeout"
    if agent.get("signal") is not None:
        return f"signal({agent['signal']})"
    return f"fail({agent.get('exitCode')})"


def _check_cell(check: dict[str, Any]) -> str:
    if not check:
        return "-"
    if check.get("exitCode") == 0:
        return "pass"
    if check.get("timedOut"):
        return "timeout"
    if check.get("exitCode") is not None:
        return f"fail({check['exitCode']})"
    return "error"


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
    keys = ("total", *STATES, "finishing")
    width = max(len(k) for k in keys) + 1
    digits = max(len(str(result.get(k, 0))) for k in keys)
    for key in keys:
        if key in result or key != "finishing":
            click.echo(f"{key + ':':<{width}} {result.get(key, 0):>{digits}}")


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


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


task.add_command(branches.diff)
task.add_command(branches.merge)
task.add_command(branches.discard)
