# tests: tests/test_cli.py
"""`aiwg daemon ping`, importable without click so the whole call stays fast."""

from __future__ import annotations

import json
import sys
import time
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the CLI start-up time
    from typing import Any

from aiwg.client import DaemonClient
from aiwg.errors import AiwgError, DaemonNotRunning, RpcError


def parse_fast(args: list[str]) -> dict[str, Any] | None:
    """The plain forms of `[--project DIR] [--json] daemon ping [--json] [--timeout S]
    [--project DIR]`; None for anything else (help, typos), which click handles."""
    request: dict[str, Any] = {"project": None, "as_json": False, "timeout": 5.0}
    words = list(args)
    position = 0
    seen: list[str] = []
    while position < len(words):
        word = words[position]
        value = None
        if "=" in word and word.startswith("--"):
            word, value = word.split("=", 1)
        if word in ("daemon", "ping"):
            seen.append(word)
        elif word == "--json":
            if value is not None:
                return None
            request["as_json"] = True
        elif word in ("--project", "-C", "--timeout"):
            if word == "--timeout" and seen != ["daemon", "ping"]:
                return None
            if value is None:
                position += 1
                if position >= len(words):
                    return None
                value = words[position]
            if word == "--timeout":
                try:
                    request["timeout"] = float(value)
                except ValueError:
                    return None
                if not 0 < request["timeout"] <= 3600:  # also rejects nan and inf
                    return None
            else:
                request["project"] = value
        else:
            return None
        position += 1
    return request if seen == ["daemon", "ping"] else None


def run(project: str | None, as_json: bool, timeout: float) -> int:
    """Ping the daemon; print the answer; return the exit status."""
    started = time.perf_counter()
    try:
        with DaemonClient(project, timeout=timeout) as client:
            result = client.call("ping")
    except RpcError as exc:
        return _failed(f"error {exc.code}: {exc.message}", exc.exit_code, as_json)
    except DaemonNotRunning as exc:
        from aiwg import instance
        from aiwg.paths import ProjectPaths, project_dir_problem

        paths = ProjectPaths.for_project(project)
        problem = project_dir_problem(paths.root, bool(project))
        if problem:
            return _failed(problem, 2, as_json)
        holder = instance.holder(paths)
        if holder is not None:
            return _failed(
                f"the daemon (pid {holder}) holds the lock for {paths.root} but does not "
                f"answer on {paths.client_socket()}",
                1,
                as_json,
            )
        return _failed(exc.message, exc.exit_code, as_json)
    except AiwgError as exc:
        return _failed(exc.message, exc.exit_code, as_json)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if as_json:
        print(json.dumps({**result, "rtt_ms": round(elapsed_ms, 3)}, indent=2))
    else:
        print(f"pong from pid {result.get('pid')} in {elapsed_ms:.1f} ms")
    return 0


def _failed(message: str, code: int, as_json: bool) -> int:
    """The error for people on stderr; with --json, also a JSON object on stdout."""
    sys.stderr.write(f"aiwg: {message}\n")
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}))
    return code
