# tests: tests/test_cli.py
"""Output for people (short lines, tables) and for scripts (--json), and exit codes."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import click

from aiwg.cli.text import duration, json_text, kv_lines
from aiwg.paths import ProjectPaths, project_dir_problem

__all__ = ["Context", "duration", "emit_error", "emit_json", "fail", "json_option", "kv_lines", "project_option",
           "user_name"]


@dataclass
class Context:
    project: str | None
    as_json: bool = False

    @property
    def paths(self) -> ProjectPaths:
        paths = ProjectPaths.for_project(self.project)
        problem = project_dir_problem(paths.root, bool(self.project))
        if problem:
            raise click.UsageError(problem)
        return paths


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--json` on every command (as well as on `aiwg` itself)."""

    def set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        global JSON_ERRORS
        if value:
            ctx.ensure_object(Context).as_json = True
            JSON_ERRORS = True

    return click.option(
        "--json",
        "as_json_flag",
        is_flag=True,
        expose_value=False,
        callback=set_json,
        help="Machine-readable JSON output.",
    )(func)


def project_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--project DIR` after the subcommand too (`aiwg daemon start --project DIR`)."""

    def set_project(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value:
            ctx.ensure_object(Context).project = value

    return click.option(
        "--project",
        "project_flag",
        metavar="DIR",
        expose_value=False,
        callback=set_project,
        is_eager=True,
        help="Project root (default: the current directory).",
    )(func)


def emit_json(value: Any) -> None:
    click.echo(json_text(value))


#: Set when --json was given anywhere on the command line, so errors are JSON too.
JSON_ERRORS = False


def fail(message: str, code: int) -> None:
    """Exit with `code`: the message on stderr, and with --json a JSON object on stdout."""
    click.echo(f"aiwg: {message}", err=True)
    if JSON_ERRORS:
        emit_error(message, code)
    sys.exit(code)


def emit_error(message: str, code: int) -> None:
    """A failure as --json promises it to scripts, on stdout."""
    click.echo(json.dumps({"error": message, "exit_code": code}))


def user_name() -> str:
    """Who decides: $USER, else the account's name (a root shell or a service may
    have no $USER), else the uid."""
    name = os.environ.get("USER")
    if name:
        return name
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())
