# tests: tests/e2e/test_isolation.py
"""`aiwg task diff | merge | discard`: the review of an isolated task's branch
(part of the `task` group)."""

from __future__ import annotations

import sys
from typing import Any

import click

from aiwg.cli.following import task_call
from aiwg.cli.render import Context, emit_json, fail, json_option, project_option, user_name
from aiwg.client import DaemonClient
from aiwg.errors import BRANCH_REFUSED, RpcError

pass_context = click.make_pass_decorator(Context, ensure=True)


def _branch_call(ctx: Context, method: str, task_id: str, **params: Any) -> Any:
    """The call; a refusal (dirty checkout, conflict, no branch) exits 1 with its reason."""
    with DaemonClient(ctx.paths.root) as client:
        try:
            return task_call(client, method, task_id, **params)
        except RpcError as exc:
            if exc.code != BRANCH_REFUSED and "did not run isolated" not in exc.message:
                raise
            message = exc.message.removeprefix("Invalid params: ")
            fail(message, 1)


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--stat", is_flag=True, help="Files changed and how much, instead of the diff itself.")
@project_option
@json_option
@pass_context
def diff(ctx: Context, task_id: str, stat: bool) -> None:
    """Show what an isolated task changed: its branch against the commit it started from."""
    result = _branch_call(ctx, "task.diff", task_id, stat=stat)
    if ctx.as_json:
        emit_json(result)
        return
    sys.stdout.write(result["diff"])
    if result.get("truncated"):
        click.echo(f"aiwg: the diff is cut short; see all of it with: git diff {result['base']} {result['branch']}",
                   err=True)


@click.command()
@click.argument("task_id", metavar="ID")
@click.option("--into", metavar="BRANCH", help="Merge into this branch (default: the one checked out in the "
              "project root).")
@click.option("--squash", is_flag=True, help="One commit with all of the task's changes instead of a merge commit.")
@project_option
@json_option
@pass_context
def merge(ctx: Context, task_id: str, into: str | None, squash: bool) -> None:
    """Merge an ended isolated task's branch. Refused, changing nothing, when the
    checkout has uncommitted changes or the merge would conflict."""
    params: dict[str, Any] = {"squash": squash, "by": f"cli:{user_name()}"}
    if into:
        params["into"] = into
    result = _branch_call(ctx, "task.merge", task_id, **params)
    if ctx.as_json:
        emit_json(result)
        return
    click.echo(f"Task {task_id} merged into {result['into']} ({(result.get('commit') or '')[:12]})")


@click.command()
@click.argument("task_id", metavar="ID")
@project_option
@json_option
@pass_context
def discard(ctx: Context, task_id: str) -> None:
    """Delete an ended isolated task's branch (and its kept worktree)."""
    result = _branch_call(ctx, "task.discard", task_id, by=f"cli:{user_name()}")
    if ctx.as_json:
        emit_json(result)
        return
    click.echo(f"Task {task_id}: branch {result['workspace']['branch']} deleted")
