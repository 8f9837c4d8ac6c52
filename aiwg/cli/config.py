# tests: tests/test_cli_config.py
"""`aiwg config …`: check a configuration without starting anything (as `nginx -t`
does), and show the one in effect with every default filled in."""

from __future__ import annotations

import json
import sys

import click

from aiwg.cli.render import Context, emit_json, fail, json_option, project_option
from aiwg.configfile import config_path, load_config
from aiwg.core.config import redacted
from aiwg.errors import EXIT_NOT_CONFIGURED, ConfigError

pass_context = click.make_pass_decorator(Context, ensure=True)

CONFIG_OPTION = click.option("--config", "-c", "config", metavar="FILE",
                             help="Configuration file (default .aiwg/daemon.json).")


@click.group()
def config() -> None:
    """Check the daemon's configuration, or show it with its defaults."""


@config.command()
@CONFIG_OPTION
@project_option
@json_option
@pass_context
def check(ctx: Context, config: str | None) -> None:
    """Validate the configuration without starting the daemon: exit 0, or 6 naming every bad key."""
    path = config_path(ctx.paths, config)
    try:
        loaded = load_config(ctx.paths, config)
    except ConfigError as exc:
        if ctx.as_json:
            emit_json({"valid": False, "path": str(path), "problems": exc.problems})
        else:
            click.echo(f"{path}: invalid", err=True)
            for problem in exc.problems:
                click.echo(f"  - {problem}", err=True)
        sys.exit(EXIT_NOT_CONFIGURED)
    exists = path.exists()
    if ctx.as_json:
        emit_json({"valid": True, "path": str(path), "exists": exists, "hash": loaded.digest,
                   "warnings": list(loaded.warnings)})
        return
    what = "valid" if exists else "not there: the defaults apply"
    click.echo(f"{path}: {what} (hash {loaded.digest})")
    for warning in loaded.warnings:
        click.echo(f"aiwg: warning: {warning}", err=True)


@config.command()
@CONFIG_OPTION
@project_option
@json_option
@pass_context
def show(ctx: Context, config: str | None) -> None:
    """The configuration in effect: the file with every default filled in, secrets written in it redacted."""
    try:
        loaded = load_config(ctx.paths, config)
    except ConfigError as exc:
        fail(str(exc), EXIT_NOT_CONFIGURED)
        return
    shown = redacted(loaded.data)
    if ctx.as_json:
        emit_json(shown)
    else:
        click.echo(f"// {loaded.source} (hash {loaded.digest}), defaults filled in")
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
