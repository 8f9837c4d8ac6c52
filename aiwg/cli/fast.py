# tests: tests/test_cli_fast.py
"""The everyday commands without click: `daemon status`, `task list`, `task get`,
`task stats`, `task submit` (without --wait or a loop) and `event emit`.

Importing click and the command modules costs more than the call itself, and
these are what scripts, prompts and status bars run again and again. Only their
plain, well-formed forms are taken here; anything else (help, a typo, an option
this parser does not know, an error of any kind) goes to the click application,
which then says exactly what it always says. The output is printed by the same
functions the click commands use (views.py, status.py, text.py). Setting
AIWG_CLI_FAST=0 sends everything to click.
"""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the CLI start-up time
    from typing import Any

from aiwg.cli import views
from aiwg.cli.text import json_text
from aiwg.errors import AiwgError, DaemonNotRunning, RpcError

#: Options of each command: name → (key, kind); kind "flag", "str", "int", "float", or
#: a tuple of allowed values. `--project` and `--json` are everyone's.
_OPTIONS: dict[tuple[str, ...], dict[str, tuple[str, Any]]] = {
    ("daemon", "status"): {},
    ("task", "stats"): {},
    ("task", "get"): {},
    ("task", "list"): {
        "--state": ("state", views.STATES), "-s": ("state", views.STATES),
        "--source": ("source", "str"), "-S": ("source", "str"),
        "--limit": ("limit", "int"), "-n": ("limit", "int"), "--offset": ("offset", "int"),
    },
    ("task", "submit"): {
        "--priority": ("priority", "int"), "-p": ("priority", "int"),
        "--timeout": ("timeout", "float"), "-t": ("timeout", "float"),
        "--agent": ("agent", "str"), "--retries": ("retries", "int"),
        "--require-approval": ("require_approval", "flag"),
        "--isolate": ("isolate", "flag"), "--no-isolate": ("no_isolate", "flag"),
        "--base": ("base", "str"), "--executor": ("executor", "str"),
    },
    ("event", "emit"): {"--payload": ("payload", "str"), "-d": ("payload", "str")},
}
#: How many positional arguments each takes.
_ARGUMENTS = {("task", "get"): (1, 1), ("task", "submit"): (1, 1), ("event", "emit"): (1, 2)}


def parse(args: list[str]) -> dict[str, Any] | None:
    """The command, its options and arguments; None for anything not plain."""
    project = None
    as_json = False
    words: list[str] = []
    options: dict[str, Any] = {}
    arguments: list[str] = []
    command: tuple[str, ...] | None = None
    position = 0
    while position < len(args):
        word = args[position]
        value = None
        if word.startswith("--") and "=" in word:
            word, value = word.split("=", 1)
        if word == "--json" and value is None:
            as_json = True
        elif word in ("--project", "-C") and (command is None or word == "--project"):
            if value is None:
                position += 1
                if position >= len(args):
                    return None
                value = args[position]
            project = value
        elif command is None:
            if word.startswith("-") or value is not None:
                return None
            words.append(word)
            if tuple(words) in _OPTIONS:
                command = tuple(words)
            elif len(words) >= 2:
                return None
        elif word in _OPTIONS[command]:
            key, kind = _OPTIONS[command][word]
            if kind == "flag":
                if value is not None:
                    return None
                options[key] = True
            else:
                if value is None:
                    position += 1
                    if position >= len(args):
                        return None
                    value = args[position]
                parsed = _value(kind, value)
                if parsed is None:
                    return None
                options[key] = parsed
        elif word.startswith("-") or value is not None:
            return None
        else:
            arguments.append(word)
        position += 1
    if command is None:
        return None
    least, most = _ARGUMENTS.get(command, (0, 0))
    if not least <= len(arguments) <= most:
        return None
    if "AIWG_PROJECT" in os.environ and project is None:
        project = os.environ["AIWG_PROJECT"]
    return {"command": command, "options": options, "arguments": arguments, "project": project,
            "as_json": as_json}


def _value(kind: Any, text: str) -> Any:
    if isinstance(kind, tuple):
        return text if text in kind else None
    if kind == "str":
        return text if text else None
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        return None


def run(request: dict[str, Any]) -> int | None:
    """Do it and return the exit status; None to let click do it (and say why not)."""
    from aiwg.paths import ProjectPaths, project_dir_problem

    paths = ProjectPaths.for_project(request["project"])
    if project_dir_problem(paths.root, bool(request["project"])):
        return None
    command, options, arguments = request["command"], request["options"], request["arguments"]
    call = _CALLS[command](options, arguments)
    if call is None:
        return None
    from aiwg.client import DaemonClient

    try:
        with DaemonClient(paths.root, **({"timeout": 10} if command == ("daemon", "status") else {})) as client:
            results = [client.emit(**params) if method == "emit" else client.call(method, **params)
                       for method, params in call]
    except (DaemonNotRunning, RpcError):
        return None  # refused before anything was done: click says it, as always
    except AiwgError as exc:
        if command not in (("task", "submit"), ("event", "emit")):
            return None  # asking again changes nothing: click says it, as always
        # The request may have been taken: never sent twice. Said as click would say it.
        sys.stderr.write(f"aiwg: {exc.message}\n")
        if request["as_json"]:
            sys.stdout.write(json.dumps({"error": exc.message, "exit_code": exc.exit_code}) + "\n")
        return exc.exit_code
    text = _PRINT[command](results, options, request["as_json"])
    if isinstance(text, tuple):
        out, err = text
    else:
        out, err = text, None
    sys.stdout.write(out + "\n")
    if err:
        sys.stderr.write(err + "\n")
    return 0


def _list_call(options: dict[str, Any], arguments: list[str]) -> Any:
    limit, offset = options.get("limit", 20), options.get("offset", 0)
    if not 1 <= limit <= 1000 or offset < 0:
        return None
    filters = {k: options[k] for k in ("state", "source") if options.get(k)}
    return [("task.list", {"limit": limit, "offset": offset, **filters}), ("task.count", filters)]


def _submit_call(options: dict[str, Any], arguments: list[str]) -> Any:
    prompt = arguments[0]
    if not 0 <= options.get("retries", 0) <= 100 or options.get("timeout", 1) <= 0:
        return None
    if options.get("isolate") and options.get("no_isolate"):
        return None
    isolate = True if options.get("isolate") else False if options.get("no_isolate") else None
    return [("task.submit", views.submit_params(
        prompt, priority=options.get("priority", 0), retries=options.get("retries", 0),
        require_approval=bool(options.get("require_approval")), timeout=options.get("timeout"),
        agent=options.get("agent"), isolate=isolate, base=options.get("base"), executor=options.get("executor")))]


def _emit_call(options: dict[str, Any], arguments: list[str]) -> Any:
    if options.get("payload") is not None and len(arguments) > 1:
        return None
    text = options.get("payload", arguments[1] if len(arguments) > 1 else None)
    data: Any = {}
    if text:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
    return [("emit", {"topic": arguments[0], "payload": data})]  # DaemonClient.emit: the task it runs in, if any


_CALLS = {
    ("daemon", "status"): lambda o, a: [("daemon.status", {})],
    ("task", "stats"): lambda o, a: [("task.stats", {})],
    ("task", "get"): lambda o, a: [("task.get", {"taskId": a[0]})],
    ("task", "list"): _list_call,
    ("task", "submit"): _submit_call,
    ("event", "emit"): _emit_call,
}


def _status(results: list[Any], options: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json_text({"running": True, **results[0]})
    from aiwg.cli.status import status_text
    return status_text(results[0])


def _list(results: list[Any], options: dict[str, Any], as_json: bool) -> Any:
    tasks, count = results
    if as_json:
        return json_text(tasks)
    lines, footer = views.task_list(tasks, count["count"], options.get("offset", 0))
    return "\n".join(lines), footer


def _get(results: list[Any], options: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json_text(results[0])
    return views.task_record(results[0])


def _stats(results: list[Any], options: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json_text(results[0])
    return views.task_stats(results[0])


def _submitted(results: list[Any], options: dict[str, Any], as_json: bool) -> str:
    return json_text(results[0]) if as_json else views.submitted(results[0])


def _emitted(results: list[Any], options: dict[str, Any], as_json: bool) -> str:
    return json_text(results[0]) if as_json else views.published(results[0])


_PRINT = {
    ("daemon", "status"): _status, ("task", "list"): _list, ("task", "get"): _get, ("task", "stats"): _stats,
    ("task", "submit"): _submitted, ("event", "emit"): _emitted,
}
