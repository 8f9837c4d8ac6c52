# tests: tests/e2e/test_chat.py
"""The project's tmux session (`aiwg daemon start --tmux`): three panes — the daemon
log followed live, the output of running tasks, and the chat REPL.

One session per project: the session records its project in a tmux user option
(@aiwg_project), and the name in use is kept in .aiwg/daemon/tmux-session so
`attach` and `stop` find it. Stdlib only; tmux is driven through its CLI.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from aiwg.errors import AiwgError
from aiwg.paths import ProjectPaths

PROJECT_OPTION = "@aiwg_project"


class TmuxError(AiwgError):
    pass


def executable() -> str:
    found = shutil.which("tmux")
    if found is None:
        raise TmuxError("tmux is not installed (or not on PATH); install it, or start without --tmux")
    return found


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([executable(), *args], capture_output=True, text=True, timeout=15)
    if check and result.returncode != 0:
        raise TmuxError(f"tmux {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _exists(name: str) -> bool:
    return _run("has-session", "-t", f"={name}", check=False).returncode == 0


def _owner(name: str) -> str | None:
    # The options commands take no `=` exact-match prefix (tmux 3.3); has-session
    # has already made sure the name exists.
    result = _run("show-options", "-t", name, "-v", PROJECT_OPTION, check=False)
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _record(paths: ProjectPaths) -> Path:
    return paths.daemon_dir / "tmux-session"


def session_name(paths: ProjectPaths, configured: str) -> str:
    """The configured name, unless a session of that name is not this project's (another
    project's, or the user's own): then the directory's name is appended, and a number
    after that if need be. Never the name of a session that is not ours."""
    root = str(paths.root)
    suffix = re.sub(r"[^A-Za-z0-9_-]", "-", paths.root.name)[:32] or "project"
    candidates = [configured, f"{configured}-{suffix}"] + [f"{configured}-{suffix}-{n}" for n in range(2, 100)]
    for name in candidates:
        if not _exists(name) or _owner(name) == root:
            return name
    raise TmuxError(f"no free tmux session name like {configured!r}; set tmux.session in .aiwg/daemon.json")


def current(paths: ProjectPaths) -> str | None:
    """The project's session, if it exists."""
    try:
        name = _record(paths).read_text().strip()
    except OSError:
        return None
    if not name or not _exists(name) or _owner(name) != str(paths.root):
        return None
    return name


def _aiwg(paths: ProjectPaths, *args: str) -> str:
    command = [sys.executable, "-m", "aiwg", *args, "--project", str(paths.root)]
    return " ".join(shlex.quote(part) for part in command)


def create(paths: ProjectPaths, configured: str) -> str:
    """Create the three-pane session (detached) for a daemon that has just started;
    returns its name. A session of this project left over from a daemon that died
    (its task and chat panes have closed with it) is replaced."""
    existing = current(paths)
    if existing is not None:
        _run("kill-session", "-t", f"={existing}", check=False)
    name = session_name(paths, configured)
    if _exists(name):  # ours (session_name never picks another's): a stale one
        _run("kill-session", "-t", f"={name}", check=False)
    root = str(paths.root)
    log = shlex.quote(str(paths.log_file))
    _run("new-session", "-d", "-s", name, "-x", "200", "-y", "50", "-c", root,
         f"tail -n 50 -F {log}")
    _run("set-option", "-t", name, PROJECT_OPTION, root)
    _run("rename-window", "-t", f"={name}:", "aiwg")
    _run("split-window", "-t", f"={name}:", "-v", "-c", root, _aiwg(paths, "task", "follow", "--all"))
    _run("split-window", "-t", f"={name}:", "-h", "-c", root, _aiwg(paths, "daemon", "chat"))
    _run("select-pane", "-t", f"={name}:.2")
    record = _record(paths)
    record.write_text(name + "\n")
    record.chmod(0o600)
    return name


def kill(paths: ProjectPaths) -> bool:
    name = current(paths)
    try:
        _record(paths).unlink()
    except OSError:
        pass
    if name is None:
        return False
    _run("kill-session", "-t", f"={name}", check=False)
    return True


def attach(paths: ProjectPaths) -> None:
    """Replace this process with `tmux attach` (or switch the client inside tmux)."""
    tmux = executable()
    name = current(paths)
    if name is None:
        raise TmuxError(
            f"no tmux session for {paths.root}; start the daemon with `aiwg daemon start --tmux`"
        )
    verb = "switch-client" if os.environ.get("TMUX") else "attach-session"
    os.execv(tmux, [tmux, verb, "-t", f"={name}"])


def panes(name: str) -> list[str]:
    """The command each pane runs (for status and tests)."""
    result = _run("list-panes", "-t", f"={name}:", "-F", "#{pane_start_command}")
    return [line for line in result.stdout.splitlines() if line]
