"""CLI behaviour that needs no daemon: the ping fast path, help, and no Twisted on client paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aiwg.cli import ping
from aiwg.cli.app import cli
from tests.conftest import AIWG, Project


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["daemon", "ping"], {"project": None, "as_json": False, "timeout": 5.0}),
        (["--json", "daemon", "ping"], {"project": None, "as_json": True, "timeout": 5.0}),
        (["daemon", "ping", "--json", "--timeout", "2"], {"project": None, "as_json": True, "timeout": 2.0}),
        (["--project", "/p", "daemon", "ping"], {"project": "/p", "as_json": False, "timeout": 5.0}),
        (["-C", "/p", "daemon", "ping", "--project=/q"], {"project": "/q", "as_json": False, "timeout": 5.0}),
        (["daemon", "ping", "--help"], None),
        (["daemon", "ping", "--timeout", "0"], None),
        (["daemon", "ping", "--timeout"], None),
        (["--timeout", "1", "daemon", "ping"], None),
        (["daemon", "status"], None),
        (["ping", "daemon"], None),
        (["daemon", "ping", "extra"], None),
    ],
)
def test_fast_path_parsing(argv: list[str], expected: dict | None) -> None:
    assert ping.parse_fast(argv) == expected


def test_client_commands_do_not_import_twisted(daemon: Project) -> None:
    for args in (["daemon", "ping"], ["daemon", "status"], ["event", "emit", "x:y"], ["daemon", "stop", "--help"]):
        code = (
            "import sys; from aiwg.cli import main\n"
            "try:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\n"
            "bad = [m for m in sys.modules if m == 'twisted' or m.startswith('twisted.')]\n"
            "print('TWISTED' if bad else 'CLEAN', file=sys.stderr)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, *args], cwd=daemon.root, env=daemon.env,
            capture_output=True, text=True, timeout=60,
        )
        assert result.stderr.strip().endswith("CLEAN"), (args, result.stderr)


def test_ping_fast_path_does_not_import_click(daemon: Project) -> None:
    code = (
        "import sys; from aiwg.cli import main\n"
        "try:\n    main(['daemon', 'ping'])\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('CLICK' if 'click' in sys.modules else 'NOCLICK', code, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=daemon.root, env=daemon.env,
                            capture_output=True, text=True, timeout=60)
    assert result.stderr.strip() == "NOCLICK 0"


def test_help_lists_commands_and_completion() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "daemon" in result.output and "event" in result.output
    assert "_AIWG_COMPLETE=bash_source aiwg" in result.output
    daemon_help = CliRunner().invoke(cli, ["daemon", "--help"])
    for command in ("start", "stop", "restart", "status", "ping", "reload", "logs"):
        assert command in daemon_help.output


#: Commands that drive a terminal (a REPL, tmux attach): machine output does not apply.
INTERACTIVE = {("daemon", "chat"), ("daemon", "attach")}


def test_every_command_accepts_json() -> None:
    from aiwg.cli.automation import automation
    from aiwg.cli.chat import chat
    from aiwg.cli.daemon import daemon
    from aiwg.cli.event import event
    from aiwg.cli.messaging import messaging
    from aiwg.cli.schedule import schedule
    from aiwg.cli.task import task

    for group in (daemon, event, task, automation, schedule, chat, messaging):
        for name, command in group.commands.items():
            if (group.name, name) in INTERACTIVE:
                continue
            options = {opt for p in command.params for opt in getattr(p, "opts", [])}
            assert "--json" in options, f"{group.name} {name}"


def test_shell_completion_script_is_generated(project: Project) -> None:
    result = subprocess.run([AIWG], env=dict(project.env, _AIWG_COMPLETE="bash_source"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "_aiwg_completion" in result.stdout


def test_event_emit_rejects_bad_payload(project: Project) -> None:
    result = project.aiwg("event", "emit", "deploy:done", "[1]")
    assert result.returncode == 2 and "JSON object" in result.stderr


def test_event_emit_and_recent_through_the_cli(daemon: Project) -> None:
    result = daemon.aiwg("event", "emit", "deploy:done", '{"v": 2}', "--json", check=True)
    assert json.loads(result.stdout)["topic"] == "deploy:done"
    with daemon.client() as client:
        assert client.call("events.recent", topic="deploy:*")[-1]["payload"] == {"v": 2}


def test_unknown_command_is_a_usage_error(project: Project) -> None:
    result = project.aiwg("daemon", "explode")
    assert result.returncode == 2 and "No such command" in result.stderr


def test_a_decision_is_signed_with_the_account_name_when_user_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    from aiwg.cli.render import user_name

    monkeypatch.setenv("USER", "alice")
    assert user_name() == "alice"
    monkeypatch.delenv("USER")
    assert user_name() == pwd.getpwuid(os.getuid()).pw_name


def test_a_project_that_is_not_a_directory_is_named_by_every_command(tmp_path: Path) -> None:
    """As `daemon start` says it: not "no daemon is running" (which sends people
    looking for a daemon), and with JSON on stdout under --json."""
    for args in (["task", "list"], ["daemon", "status"], ["daemon", "ping"], ["config", "check"],
                 ["messaging", "status"]):
        result = subprocess.run([AIWG, *args, "--project", str(tmp_path / "nowhere"), "--json"],
                                capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 2, (args, result.stderr)
        assert json.loads(result.stdout) == {"error": f"--project {tmp_path / 'nowhere'}: not a directory",
                                             "exit_code": 2}
