# tests: tests/test_cli.py
"""The click application behind `aiwg`. Subcommand modules load only when used."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from aiwg import __version__
from aiwg.cli.render import Context, fail
from aiwg.errors import EXIT_USAGE, AiwgError, RpcError

_SUBCOMMANDS = {
    "automation": ("aiwg.cli.automation", "automation", "Show automation rules; enable or disable them."),
    "chat": ("aiwg.cli.chat", "chat", "Talk to the project's AI through the daemon."),
    "config": ("aiwg.cli.config", "config", "Check the configuration without starting; show it with defaults."),
    "daemon": ("aiwg.cli.daemon", "daemon", "Start, stop and inspect the project's daemon."),
    "event": ("aiwg.cli.event", "event", "Emit custom events and follow the event stream."),
    "executors": ("aiwg.cli.worker", "executors", "Local and remote executors: brokers, workers, remote tasks."),
    "messaging": ("aiwg.cli.messaging", "messaging", "Telegram, Slack and Discord bridges: state and a test."),
    "schedule": ("aiwg.cli.schedule", "schedule", "List scheduled jobs; run one now."),
    "task": ("aiwg.cli.task", "task", "Submit, inspect and cancel agent tasks."),
    "worker": ("aiwg.cli.worker", "worker", "Run remote tasks on this machine (a Celery worker)."),
}


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_SUBCOMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> Any:
        if name in _SUBCOMMANDS:
            module, attr, _ = _SUBCOMMANDS[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _SUBCOMMANDS[name][2]) for name in sorted(_SUBCOMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aiwg")
@click.option(
    "--project",
    "-C",
    metavar="DIR",
    envvar="AIWG_PROJECT",
    help="Project root (default: the current directory; env AIWG_PROJECT).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.pass_context
def cli(ctx: click.Context, project: str | None, as_json: bool) -> None:
    """aiwg: a per-project daemon that supervises AI coding agents.

    \b
    Shell completion (bash; zsh and fish likewise):
      eval "$(_AIWG_COMPLETE=bash_source aiwg)"
    """
    ctx.obj = Context(project=project, as_json=as_json)
    if as_json:
        from aiwg.cli import render

        render.JSON_ERRORS = True


def run(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="aiwg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        code = EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
        from aiwg.cli import render

        # --json promises JSON on stdout even for a usage error, which click may
        # raise before (or without) the option itself being parsed.
        if render.JSON_ERRORS or "--json" in (sys.argv[1:] if argv is None else argv):
            render.emit_error(exc.format_message(), code)
        sys.exit(code)
    except RpcError as exc:
        fail(f"error {exc.code}: {exc.message}", exc.exit_code)
    except AiwgError as exc:
        fail(exc.message, exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)
