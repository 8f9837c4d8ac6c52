# tests: tests/e2e/test_chat.py
"""`aiwg daemon chat`: an interactive chat with the project's AI, over the socket.

readline gives line editing and a persistent history (.aiwg/daemon/chat_history).
A line ending in a backslash continues on the next; a line of three quotes opens
a block that the next such line closes. While a turn runs a "thinking…" line
shows the elapsed time; Ctrl-C cancels the turn (its task is cancelled) and the
REPL carries on; Ctrl-D or /quit leaves. A second connection watches for the
daemon stopping, so the REPL says so and exits even while idle at the prompt.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from aiwg.cli.turns import TURN_TOPICS, answer_text, deferred_interrupt, failure_text, wait_turn
from aiwg.client import DaemonClient
from aiwg.core.conversations import new_conversation_id
from aiwg.errors import SHUTTING_DOWN, AiwgError, ConnectionClosed, DaemonNotRunning, RpcError
from aiwg.paths import ProjectPaths

HELP = """Commands:
  /help            this list
  /status          the daemon's pid, uptime, health and queue
  /tasks           recent tasks
  /reset           forget this conversation (the next message starts afresh)
  /quit            leave (so does Ctrl-D)
Ctrl-C cancels a running answer. End a line with \\ to continue it, or put \"\"\" on a
line of its own to start and end a multi-line message."""

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
HISTORY_LINES = 1000


class DaemonGone(Exception):
    pass


class Repl:
    def __init__(self, paths: ProjectPaths, conversation: str | None = None,
                 out: Any = None, err: Any = None) -> None:
        self.paths = paths
        self.conversation = conversation or new_conversation_id(secrets.token_bytes(5))
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.client = DaemonClient(paths.root, timeout=30)
        self.gone = threading.Event()
        self._interactive = sys.stdin.isatty()

    # -- the loop ------------------------------------------------------------

    def run(self) -> int:
        try:
            self.client.connect()
            self.client.subscribe(TURN_TOPICS)
            status = self.client.call("daemon.status")
        except DaemonNotRunning as exc:
            self.err.write(f"aiwg: {exc}\n")
            return 7
        self._start_watch()
        history = self._load_history()
        self.out.write(
            f"aiwg chat with the agent for {status.get('project', self.paths.root)} "
            f"(conversation {self.conversation}). /help for commands, Ctrl-D to quit.\n"
        )
        self.out.flush()
        try:
            while True:
                try:
                    text = self._read_message()
                except EOFError:
                    self.out.write("\n")
                    return 0
                except KeyboardInterrupt:
                    if self.gone.is_set():
                        raise DaemonGone() from None
                    self.out.write("^C (Ctrl-D or /quit to leave)\n")
                    continue
                if self.gone.is_set():
                    raise DaemonGone()
                if not text.strip():
                    continue
                if text.strip().startswith("/"):
                    if self._command(text.strip()) == "quit":
                        return 0
                    continue
                try:
                    self._ask(text)
                except RpcError as exc:
                    if exc.code == SHUTTING_DOWN:
                        raise DaemonGone() from None
                    self.out.write(f"aiwg: {exc}\n")  # a refused message; the REPL carries on
                    self.out.flush()
        except (DaemonGone, ConnectionClosed, DaemonNotRunning):
            self._clear_line()
            self.out.write("aiwg: the daemon stopped; leaving the chat.\n")
            return 1
        finally:
            self._save_history(history)
            self.client.close()

    def _read_message(self) -> str:
        line = input("you> ")
        if line.strip() == '"""':
            lines = []
            while True:
                more = input("... ")
                if more.strip() == '"""':
                    return "\n".join(lines)
                lines.append(more)
        lines = []
        while line.endswith("\\"):
            lines.append(line[:-1])
            line = input("... ")
        lines.append(line)
        return "\n".join(lines)

    # -- a turn ---------------------------------------------------------------

    def _ask(self, text: str) -> None:
        with deferred_interrupt() as held:
            reply = self.client.call("chat.send", message=text, conversation=self.conversation)
        task_id = reply["taskId"]
        if held.interrupted:
            if self.gone.is_set():
                raise DaemonGone()
            self.client.call("task.cancel", taskId=task_id)
            self.out.write(f"(cancelled; task {task_id})\n")
            self.out.flush()
            return
        self.conversation = reply.get("conversation", self.conversation)
        streamed: list[str] = []
        stream = reply.get("output") == "text"

        def chunk(data: str) -> None:
            if not streamed:
                self._clear_line()
            streamed.append(data)
            self.out.write(data)
            self.out.flush()

        def tick(elapsed: float) -> None:
            if not streamed:  # once the answer streams, it is its own progress
                self._thinking(elapsed)

        try:
            record = wait_turn(self.client, task_id, on_chunk=chunk if stream else None, on_tick=tick)
        except KeyboardInterrupt:
            if self.gone.is_set():
                raise DaemonGone() from None
            self._clear_line()
            try:
                self.client.call("task.cancel", taskId=task_id)
            except RpcError:
                pass
            self.out.write(f"(cancelled; task {task_id})\n")
            self.out.flush()
            return
        self._clear_line()
        if record.get("state") == "completed":
            if streamed:
                if not "".join(streamed).endswith("\n"):
                    self.out.write("\n")
            else:
                self.out.write(answer_text(record) + "\n")
        else:
            self.out.write(f"aiwg: {failure_text(record)} (task {task_id})\n")
        self.out.flush()

    def _thinking(self, elapsed: float) -> None:
        if not self._interactive:
            return
        frame = SPINNER[int(elapsed * 10) % len(SPINNER)]
        self.err.write(f"\r{frame} thinking… {elapsed:4.1f}s (Ctrl-C cancels)")
        self.err.flush()

    def _clear_line(self) -> None:
        if self._interactive:
            self.err.write("\r\033[K")
            self.err.flush()

    # -- commands --------------------------------------------------------------

    def _command(self, text: str) -> str | None:
        name = text.split()[0].lower()
        handlers: dict[str, Callable[[], Any]] = {
            "/help": lambda: self.out.write(HELP + "\n"),
            "/status": self._status,
            "/tasks": self._tasks,
            "/reset": self._reset,
        }
        if name in ("/quit", "/exit", "/q"):
            return "quit"
        handler = handlers.get(name)
        if handler is None:
            self.out.write(f"unknown command {name}; /help lists them\n")
        else:
            try:
                handler()
            except RpcError as exc:
                self.out.write(f"aiwg: {exc}\n")
        self.out.flush()
        return None

    def _status(self) -> None:
        s = self.client.call("daemon.status")
        sup = s.get("subsystems", {}).get("supervisor", {})
        self.out.write(
            f"pid {s['pid']}, up {s['uptime_seconds']} s, health {s['health']}; "
            f"running {sup.get('running', 0)}, queued {sup.get('queued', 0)}\n"
        )
        for issue in s.get("health_issues", []):
            self.out.write(f"  - {issue}\n")

    def _tasks(self) -> None:
        for task in self.client.call("task.list", limit=10):
            prompt = " ".join(task["prompt"].split())
            self.out.write(f"{task['id']}  {task['state']:<9}  {prompt[:60]}\n")

    def _reset(self) -> None:
        self.client.call("chat.reset", conversation=self.conversation)
        self.conversation = new_conversation_id(secrets.token_bytes(5))
        self.out.write(f"conversation reset; new conversation {self.conversation}\n")

    # -- the daemon going away --------------------------------------------------

    def _start_watch(self) -> None:
        """Watch for the daemon stopping on a second connection; interrupt the prompt."""
        watcher = DaemonClient(self.paths.root, timeout=10)
        watcher.connect()
        watcher.subscribe(["daemon:stopping"])
        watcher.timeout = None

        def watch() -> None:
            try:
                for _ in watcher.events():
                    break
            except AiwgError:
                pass
            finally:
                watcher.close()
            self.gone.set()
            os.kill(os.getpid(), signal.SIGINT)  # wakes input() and waits alike

        threading.Thread(target=watch, name="daemon-watch", daemon=True).start()

    # -- history -------------------------------------------------------------------

    def _load_history(self) -> Path | None:
        try:
            import readline
        except ImportError:
            return None
        path = self.paths.daemon_dir / "chat_history"
        try:
            readline.read_history_file(path)
        except (FileNotFoundError, OSError):
            pass
        readline.set_history_length(HISTORY_LINES)
        return path

    @staticmethod
    def _save_history(path: Path | None) -> None:
        if path is None:
            return
        try:
            import readline

            readline.write_history_file(path)
            os.chmod(path, 0o600)
        except OSError:
            pass


def run(paths: ProjectPaths, conversation: str | None = None) -> int:
    return Repl(paths, conversation).run()
