"""The everyday commands' fast path (aiwg/cli/fast.py): none of the hot commands
imports click, Twisted or jsonschema; each prints what the click command prints,
with the same exit status, in text and in JSON; anything not plain (help, typos,
bad values, errors) is left to click, which says what it always says."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from aiwg.cli import fast
from tests.conftest import Project

#: The hot commands, each as a user types it.
HOT = (
    ["daemon", "status"],
    ["task", "list"],
    ["task", "list", "--state", "completed", "-n", "5"],
    ["task", "get", "ID"],
    ["task", "stats"],
    ["task", "submit", "hello there", "-p", "3", "--retries", "1"],
    ["event", "emit", "deploy:done", '{"version": "1.2"}'],
)
HEAVY = ("click", "twisted", "jsonschema")


def _shape(text: str) -> str:
    """What varies between two runs (ids, times, counts, pids) set aside."""
    text = re.sub(r"\bt-[a-z0-9]{10}\b", "t-ID", text)
    return re.sub(r"\d+", "N", text)


def _first_task(project: Project) -> str:
    submitted = project.aiwg("task", "submit", "a first task", "--json", check=True)
    return str(json.loads(submitted.stdout)["taskId"])


def test_the_hot_commands_import_neither_click_nor_twisted_nor_jsonschema(daemon: Project) -> None:
    task_id = _first_task(daemon)
    for args in HOT:
        args = [task_id if a == "ID" else a for a in args]
        for form in (args, [*args, "--json"]):
            code = (
                "import sys; from aiwg.cli import main\n"
                "try:\n    main(sys.argv[1:])\n"
                "except SystemExit as e:\n    code = e.code\n"
                f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
                "print('IMPORTED', heavy, code, file=sys.stderr)\n"
            )
            result = subprocess.run([sys.executable, "-c", code, *form], cwd=daemon.root, env=daemon.env,
                                    capture_output=True, text=True, timeout=60)
            assert result.stderr.strip().endswith("IMPORTED [] 0"), (form, result.stderr)


def test_the_fast_path_prints_what_click_prints(daemon: Project) -> None:
    task_id = _first_task(daemon)
    slow_env = {**daemon.env, "AIWG_CLI_FAST": "0"}
    for args in HOT:
        args = [task_id if a == "ID" else a for a in args]
        for form in (args, [*args, "--json"], ["--json", *args]):
            quick = daemon.aiwg(*form)
            slow = daemon.aiwg(*form, env=slow_env)
            assert quick.returncode == slow.returncode == 0, (form, quick.stderr, slow.stderr)
            assert _shape(quick.stdout) == _shape(slow.stdout), form
            assert _shape(quick.stderr) == _shape(slow.stderr), form


def test_what_is_not_plain_goes_to_click_and_is_said_as_always(project: Project) -> None:
    # No daemon: the fast path gives way, and click says so with its exit status.
    down = project.aiwg("task", "list")
    assert down.returncode == 7 and "no daemon is running" in down.stderr
    project.start()
    for form in (["task", "list", "--state", "bogus"], ["task", "list", "--limit", "0"],
                 ["task", "get"], ["task", "submit"], ["task", "list", "--help"], ["task", "lsit"],
                 ["event", "emit", "x:y", "not json"], ["task", "get", "t-nosuchtask"]):
        quick = project.aiwg(*form)
        slow = project.aiwg(*form, env={**project.env, "AIWG_CLI_FAST": "0"})
        assert quick.returncode == slow.returncode != 0 or form[-1] == "--help", form
        assert quick.stdout == slow.stdout and quick.stderr == slow.stderr, form


@pytest.mark.parametrize("argv", [
    ["daemon", "status", "--verbose"], ["task", "submit", "x", "--wait"], ["task", "submit", "x", "--until", "true"],
    ["task", "list", "-n"], ["task", "list", "--state=done"], ["task", "get", "a", "b"], ["--help"],
    ["task"], ["daemon", "statu"], ["task", "submit", "--", "-x"], ["task", "list", "-s"],
])
def test_forms_the_parser_leaves_to_click(argv: list[str]) -> None:
    assert fast.parse(argv) is None


def test_the_parser_reads_options_where_click_does() -> None:
    parsed = fast.parse(["--project", "/p", "task", "submit", "-p", "-5", "do it", "--timeout=2.5", "--isolate",
                         "--json"])
    assert parsed == {"command": ("task", "submit"), "arguments": ["do it"], "project": "/p", "as_json": True,
                      "options": {"priority": -5, "timeout": 2.5, "isolate": True}}
    assert fast.parse(["-C", "/q", "task", "stats"])["project"] == "/q"  # type: ignore[index]
    assert fast.parse(["task", "stats", "-C", "/q"]) is None  # -C is the top level's only
