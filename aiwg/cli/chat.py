# tests: tests/e2e/test_chat.py
"""`aiwg chat send`: one chat turn from the shell; follow-ups with --conversation."""

from __future__ import annotations

import sys

import click

from aiwg.cli.following import EXIT_FOR_STATE
from aiwg.cli.render import Context, emit_json, fail, json_option, project_option
from aiwg.cli.turns import TURN_TOPICS, answer_text, deferred_interrupt, failure_text, wait_turn
from aiwg.client import DaemonClient

pass_context = click.make_pass_decorator(Context, ensure=True)

#: Exit status for each final state of a turn (as `aiwg task get --follow`).


@click.group()
def chat() -> None:
    """Talk to the project's AI through the daemon."""


@chat.command()
@click.argument("message")
@click.option("--conversation", "-c", metavar="ID", help="Continue this conversation (printed by the first turn).")
@click.option("--priority", "-p", type=int, help="Task priority of the turn (default chat.priority, 5).")
@click.option("--no-wait", is_flag=True, help="Return at once with the task and conversation ids.")
@project_option
@json_option
@pass_context
def send(ctx: Context, message: str, conversation: str | None, priority: int | None, no_wait: bool) -> None:
    """Ask MESSAGE; prints the answer as it arrives, exits non-zero if the turn fails."""
    params: dict = {"message": message}
    if conversation:
        params["conversation"] = conversation
    if priority is not None:
        params["priority"] = priority
    with DaemonClient(ctx.paths.root) as client:
        if not no_wait:
            client.subscribe(TURN_TOPICS)
        with deferred_interrupt() as held:
            reply = client.request("chat.send", params)
        if held.interrupted and not no_wait:
            client.call("task.cancel", taskId=reply["taskId"])
            fail(f"cancelled; task {reply['taskId']}", 130)
            return
        if no_wait:
            if ctx.as_json:
                emit_json(reply)
            else:
                click.echo(f"Task submitted: {reply['taskId']} (conversation {reply['conversation']})")
            return
        streamed: list[str] = []

        def chunk(data: str) -> None:
            if not ctx.as_json:
                streamed.append(data)
                sys.stdout.write(data)
                sys.stdout.flush()

        client.timeout = None
        try:
            record = wait_turn(client, reply["taskId"], on_chunk=chunk if reply.get("output") == "text" else None)
        except KeyboardInterrupt:
            client.timeout = 10
            client.call("task.cancel", taskId=reply["taskId"])
            fail(f"cancelled; task {reply['taskId']}", 130)
            return
    if ctx.as_json:
        emit_json({"conversation": reply["conversation"], "taskId": reply["taskId"], "state": record["state"],
                   "answer": answer_text(record) if record["state"] == "completed" else None,
                   "error": record.get("error"), "sessionId": record.get("sessionId")})
        sys.exit(EXIT_FOR_STATE.get(record["state"], 1))
    if record["state"] == "completed":
        if streamed:
            if not "".join(streamed).endswith("\n"):
                click.echo()
        else:
            click.echo(answer_text(record))
        click.echo(f"(conversation {reply['conversation']}; continue with --conversation {reply['conversation']})", err=True)
        return
    fail(f"{failure_text(record)} (task {reply['taskId']})", EXIT_FOR_STATE.get(record["state"], 1))
