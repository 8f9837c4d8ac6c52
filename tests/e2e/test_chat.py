"""Chat end to end: the real daemon, the fake claude, `aiwg chat send`, the REPL driven
for real inside tmux, and `aiwg daemon start --tmux`.

Every tmux call goes to a private server (TMUX_TMPDIR in a fresh directory, TMUX
unset), killed at the end of the test, so the tests never touch a user's sessions and
can run in parallel. Waits are bounded polls of `capture-pane` or the socket.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from aiwg.errors import INVALID_PARAMS, RpcError
from tests.conftest import AIWG, Project, wait_for

pytestmark = pytest.mark.e2e

FAST = {"kill_grace_seconds": 0.5, "shutdown_grace_seconds": 1}
FINISHED = ("completed", "failed", "timeout", "cancelled")

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


# -- helpers -------------------------------------------------------------------


def configure(project: Project, **sections: Any) -> None:
    daemon = {**FAST, **sections.pop("daemon", {})}
    project.write_config(json.dumps({"daemon": daemon, **sections}))


def call(project: Project, method: str, **params: Any) -> Any:
    with project.client() as client:
        return client.call(method, **params)


def wait_finished(project: Project, task_id: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(
        lambda: (t := call(project, "task.get", taskId=task_id))["state"] in FINISHED and t,
        timeout=timeout)


def wait_answered(project: Project, conversation: str, task_id: str) -> dict[str, Any]:
    """The conversation once the turn of `task_id` has its answer recorded."""
    def answered() -> dict[str, Any] | None:
        found = call(project, "chat.history", conversation=conversation)
        done = any(t["role"] == "assistant" and t.get("taskId") == task_id for t in found["history"])
        return found if done else None
    return wait_for(answered)


def turn(project: Project, message: str, conversation: str | None = None) -> dict[str, Any]:
    """One chat.send over the socket, waited for; returns the reply, the task and its agent run."""
    params: dict[str, Any] = {"message": message}
    if conversation is not None:
        params["conversation"] = conversation
    reply = call(project, "chat.send", **params)
    task = wait_finished(project, reply["taskId"])
    wait_answered(project, reply["conversation"], reply["taskId"])
    [run] = [r for r in project.fake.runs() if r["env"].get("AIWG_TASK_ID") == task["id"]]
    return {"reply": reply, "task": task, "run": run}


def resume_arg(run: dict[str, Any]) -> str | None:
    """The session the agent was asked to resume (`--resume ID` on its argv)."""
    argv = run["argv"]
    return argv[argv.index("--resume") + 1] if "--resume" in argv else None


def agent_prompt(run: dict[str, Any]) -> str:
    argv = run["argv"]
    assert argv[-2] == "--", argv  # the prompt comes last, after every option
    return argv[-1]


#: A follow-up's answer from the fake, which says so when it resumed a session.
RESUMED = r"(?:resumed sess-\d+: )?"


def unresumed(text: str) -> str:
    return re.sub(rf"^{RESUMED}", "", text)


# -- a private tmux server -------------------------------------------------------


class Tmux:
    """A tmux server of this test's own (its socket under a fresh TMUX_TMPDIR)."""

    def __init__(self, env: dict[str, str]) -> None:
        # A short directory: the server's socket path must fit in sun_path.
        self.dir = Path(tempfile.mkdtemp(prefix="aiwg-tmux-"))
        self.env = {k: v for k, v in env.items() if k != "TMUX"}
        self.env["TMUX_TMPDIR"] = str(self.dir)
        conf = self.dir / "tmux.conf"  # not the user's ~/.tmux.conf
        conf.write_text("set -g exit-empty off\nset -g history-limit 5000\n")
        self("-f", str(conf), "start-server")

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["tmux", *args], env=self.env, capture_output=True, text=True,
                                timeout=15, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def sessions(self) -> list[str]:
        return self("list-sessions", "-F", "#{session_name}", check=False).stdout.split()

    def new(self, name: str, command: str) -> None:
        """A detached 200x50 session running `command`; its pane stays after the command
        exits, with its exit status printed, so the last output and the exit can be looked
        at. (bash carries on after a child that handled Ctrl-C itself.)"""
        wrapped = f'bash -c {shlex.quote(command + "; echo [exit $?]")}'
        self("new-session", "-d", "-s", name, "-x", "200", "-y", "50", wrapped,
             ";", "set-option", "-t", name, "remain-on-exit", "on")

    def screen(self, target: str) -> str:
        return self("capture-pane", "-p", "-J", "-t", target).stdout

    def lines(self, target: str) -> list[str]:
        return [line.rstrip() for line in self.screen(target).splitlines() if line.strip()]

    def wait_screen(self, target: str, pattern: str, timeout: float = 10) -> str:
        """The pane's text once `pattern` (a regex) shows in it."""
        def shown() -> str | None:
            text = self.screen(target)
            return text if re.search(pattern, text, re.M) else None
        try:
            return wait_for(shown, timeout=timeout, interval=0.05)
        except AssertionError:
            raise AssertionError(f"{pattern!r} not shown within {timeout}s in pane {target}:\n"
                                 f"{self.screen(target)}") from None

    def type(self, target: str, text: str) -> None:
        self("send-keys", "-t", target, "-l", text)
        self("send-keys", "-t", target, "Enter")

    def dead(self, target: str) -> bool:
        return self("display-message", "-p", "-t", target, "#{pane_dead}").stdout.strip() == "1"

    def exit_status(self, target: str) -> int:
        """How the pane's command exited, once it has (`new` has it print its status:
        tmux 3.3a does not always learn a dead pane's status)."""
        code = int(re.search(r"^\[exit (\d+)\]$", self.wait_screen(target, r"^\[exit \d+\]$"), re.M).group(1))
        wait_for(lambda: self.dead(target))
        return code

    def kill(self) -> None:
        self("kill-server", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def tmux(project: Project) -> Iterator[Tmux]:
    server = Tmux(project.env)
    project.env.pop("TMUX", None)
    project.env["TMUX_TMPDIR"] = str(server.dir)  # every aiwg call talks to this server only
    yield server
    server.kill()


def repl_command(project: Project, *extra: str) -> str:
    return shlex.join([sys.executable, "-m", "aiwg", "daemon", "chat", "--project", str(project.root),
                       *extra])


def prompt_back(tmux: Tmux, target: str, count: int) -> None:
    """The REPL shows its `count`th prompt and waits at it (the last line is the prompt)."""
    wait_for(lambda: (lines := tmux.lines(target)) and lines[-1] == "you>"
             and sum(line.startswith("you>") for line in lines) >= count,
             timeout=10, interval=0.05)


# -- chat.send over the socket ---------------------------------------------------


def test_each_follow_up_resumes_the_session_the_previous_answer_reported(project: Project) -> None:
    configure(project)
    project.start()
    first = turn(project, "What is in this repo?")
    conversation = first["reply"]["conversation"]
    assert first["reply"]["output"] == "claude-json"
    assert resume_arg(first["run"]) is None
    first_session = first["task"]["sessionId"]
    assert first_session == f"sess-{first['run']['pid']}"  # what the fake reported

    second = turn(project, "And the tests?", conversation)
    assert second["reply"]["conversation"] == conversation
    assert second["task"]["metadata"]["resumeSession"] == first_session
    assert resume_arg(second["run"]) == first_session
    assert second["task"]["result"] == f"resumed {first_session}: done: And the tests?"
    second_session = second["task"]["sessionId"]
    assert second_session == f"sess-{second['run']['pid']}" != first_session

    third = turn(project, "Thanks.", conversation)
    assert resume_arg(third["run"]) == second_session  # the latest session, not the first

    other = turn(project, "A new question")
    assert other["reply"]["conversation"] != conversation
    assert resume_arg(other["run"]) is None
    assert "resumeSession" not in other["task"]["metadata"]


def test_history_records_the_turns_and_reset_starts_afresh(project: Project) -> None:
    configure(project)
    project.start()
    first = turn(project, "hello @result:hi-there", "my-chat")
    assert first["reply"]["conversation"] == "my-chat"
    assert first["task"]["source"] == "chat"
    assert first["task"]["metadata"]["conversation"] == "my-chat"
    failed = turn(project, "break @exit:3", "my-chat")
    assert failed["task"]["state"] == "failed"
    # The conversation asks the agent to resume the session the first answer reported.
    assert failed["task"]["metadata"]["resumeSession"] == first["task"]["sessionId"]

    found = call(project, "chat.history", conversation="my-chat")
    assert found["conversation"] == "my-chat" and found["turns"] == 4 and found["pending"] == []
    assert [(t["role"], t.get("state"), t.get("taskId")) for t in found["history"]] == [
        ("user", None, first["task"]["id"]),
        ("assistant", "completed", first["task"]["id"]),
        ("user", None, failed["task"]["id"]),
        ("assistant", "failed", failed["task"]["id"]),
    ]
    texts = [t["text"] for t in found["history"]]
    assert texts[:3] == ["hello @result:hi-there", "hi-there", "break @exit:3"]
    assert texts[3] == failed["task"]["error"] and texts[3]
    # A failed run of the fake still reports a session: the next turn resumes that one.
    assert found["sessionId"] == failed["task"]["sessionId"]

    assert call(project, "chat.reset", conversation="my-chat") == {"reset": True, "conversation": "my-chat"}
    with pytest.raises(RpcError) as caught:
        call(project, "chat.history", conversation="my-chat")
    assert caught.value.code == INVALID_PARAMS and "my-chat" in caught.value.message

    after = turn(project, "start over", "my-chat")
    assert "resumeSession" not in after["task"]["metadata"]
    assert resume_arg(after["run"]) is None
    found = call(project, "chat.history", conversation="my-chat")
    assert [t["text"] for t in found["history"]] == ["start over", "done: start over"]
    assert call(project, "chat.reset", conversation="never-was") == {"reset": False, "conversation": "never-was"}

    with pytest.raises(RpcError) as caught:
        call(project, "chat.history", conversation="no-such-chat")
    assert caught.value.code == INVALID_PARAMS == -32602
    assert "Unknown conversation: no-such-chat" in caught.value.message


def test_an_agent_without_sessions_gets_the_earlier_turns_in_its_prompt(project: Project) -> None:
    configure(project, agent={"command": ["claude", "-p", "{prompt}"], "output": "text"})
    project.start()
    first = turn(project, "My name is Ada. @result:Hello-Ada")
    conversation = first["reply"]["conversation"]
    assert first["reply"]["output"] == "text"
    assert agent_prompt(first["run"]) == "My name is Ada. @result:Hello-Ada"  # nothing earlier yet

    second = turn(project, "What is my name? @result:You-are-Ada", conversation)
    prompt = agent_prompt(second["run"])
    assert resume_arg(second["run"]) is None
    assert "resumeSession" not in second["task"]["metadata"]
    assert prompt == (
        "Earlier in this conversation:\n\n"
        "User: My name is Ada. @result:Hello-Ada\n\n"
        "Assistant: Hello-Ada\n\n"
        "Reply to the user's new message, taking the conversation above into account.\n\n"
        "User: What is my name? @result:You-are-Ada")

    third = turn(project, "Bye", conversation)
    prompt = agent_prompt(third["run"])
    earlier = prompt.split("\n\nReply to the user's new message")[0].split("\n\n")
    assert earlier == ["Earlier in this conversation:",
                       "User: My name is Ada. @result:Hello-Ada", "Assistant: Hello-Ada",
                       "User: What is my name? @result:You-are-Ada", "Assistant: You-are-Ada"]
    assert prompt.endswith("\n\nUser: Bye")

    other = turn(project, "Who am I?")
    assert agent_prompt(other["run"]) == "Who am I?"  # another conversation knows nothing of Ada


# -- aiwg chat send --------------------------------------------------------------


def test_chat_send_prints_the_answer_and_exits_with_the_turns_status(project: Project) -> None:
    configure(project)
    project.start()
    ok = project.aiwg("chat", "send", "Say hi @result:Hi-from-the-agent")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "Hi-from-the-agent\n"
    [conversation] = re.findall(r"continue with --conversation (c-[0-9a-f]+)", ok.stderr)

    again = project.aiwg("chat", "send", "And again @result:second", "--conversation", conversation)
    assert again.returncode == 0, again.stderr
    assert again.stdout.rstrip("\n").endswith("second")
    assert f"--conversation {conversation}" in again.stderr
    assert call(project, "chat.history", conversation=conversation)["turns"] == 4

    failing = project.aiwg("chat", "send", "Break it @exit:3", "--conversation", conversation)
    assert failing.returncode == 1
    assert failing.stdout == ""
    task_id = re.search(r"\(task (t-[0-9a-z-]+)\)", failing.stderr).group(1)
    error = call(project, "task.get", taskId=task_id)["error"]
    assert error and f"the turn failed: {error} (task {task_id})" in failing.stderr

    as_json = project.aiwg("chat", "send", "Structured @result:as-json", "--json")
    assert as_json.returncode == 0, as_json.stderr
    record = json.loads(as_json.stdout)
    assert record["state"] == "completed" and record["answer"] == "as-json"
    assert record["sessionId"] and record["conversation"].startswith("c-")


def test_chat_send_no_wait_returns_the_ids_at_once(project: Project) -> None:
    configure(project)
    project.start()
    began = time.monotonic()
    result = project.aiwg("chat", "send", "Take your time @sleep:30", "--no-wait", "--json", check=True)
    took = time.monotonic() - began
    reply = json.loads(result.stdout)
    assert took < 10  # not the 30 s the turn takes
    assert reply["conversation"].startswith("c-") and reply["state"] in ("queued", "running")
    task = call(project, "task.get", taskId=reply["taskId"])
    assert task["source"] == "chat" and task["state"] in ("queued", "running")
    assert task["metadata"]["conversation"] == reply["conversation"]
    assert call(project, "chat.history", conversation=reply["conversation"])["pending"] == [reply["taskId"]]
    call(project, "task.cancel", taskId=reply["taskId"])
    assert wait_finished(project, reply["taskId"])["state"] == "cancelled"


def test_chat_send_interrupted_cancels_the_turn_and_exits_130(project: Project) -> None:
    # A text agent's output streams, so the CLI's stdout shows when it is waiting for the turn.
    configure(project, agent={"command": ["claude", "-p", "{prompt}"], "output": "text"})
    project.start()
    out_file = project.root.parent / "chat-send.out"
    with out_file.open("w") as out:
        # Ctrl-C as a terminal sends it, even where this test runs with SIGINT ignored (in the
        # background of a shell, which the CLI would inherit).
        waiting = subprocess.Popen([AIWG, "chat", "send", "Take your time @print:1 @sleep:30"],
                                   cwd=project.root, env=project.env, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: out_file.read_text().startswith("filler output line"))
        [running] = call(project, "task.list", state="running")
        waiting.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = waiting.communicate(timeout=20)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 130
    assert err == f"aiwg: cancelled; task {running['id']}\n"
    assert wait_finished(project, running["id"])["state"] == "cancelled"


def test_chat_send_exits_124_when_the_turn_times_out(project: Project) -> None:
    configure(project, daemon={"action_timeout_minutes": 0.02})  # 1.2 s
    project.start()
    result = project.aiwg("chat", "send", "Think hard @sleep:30", timeout=30)
    assert result.returncode == 124
    assert result.stdout == ""
    assert "the turn timed out" in result.stderr
    task_id = re.search(r"\(task (t-[0-9a-z-]+)\)", result.stderr).group(1)
    assert call(project, "task.get", taskId=task_id)["state"] == "timeout"


# -- the REPL, for real inside tmux ------------------------------------------------


@needs_tmux
def test_the_repl_answers_cancels_with_ctrl_c_and_carries_on(project: Project, tmux: Tmux) -> None:
    configure(project)
    project.start()
    tmux.new("t", repl_command(project))
    banner = tmux.wait_screen("t", r"^you>")
    conversation = re.search(r"\(conversation (c-[0-9a-f]+)\)", banner).group(1)

    tmux.type("t", "hello @result:first-answer")
    tmux.wait_screen("t", r"^first-answer$")
    prompt_back(tmux, "t", 2)

    tmux.type("t", "think slowly @sleep:30")
    tmux.wait_screen("t", r"thinking… +\d+\.\ds \(Ctrl-C cancels\)")  # interactive: the indicator shows
    [slow] = [t for t in call(project, "task.list") if "@sleep:30" in t["prompt"]]
    assert slow["state"] == "running" and slow["metadata"]["conversation"] == conversation
    tmux("send-keys", "-t", "t", "C-c")
    tmux.wait_screen("t", rf"^\(cancelled; task {slow['id']}\)$")
    assert wait_finished(project, slow["id"])["state"] == "cancelled"
    prompt_back(tmux, "t", 3)
    assert not tmux.dead("t")

    tmux.type("t", "still there? @result:yes-still-here")
    tmux.wait_screen("t", rf"^{RESUMED}yes-still-here$")
    prompt_back(tmux, "t", 4)
    history = call(project, "chat.history", conversation=conversation)["history"]
    assert [(t["role"], unresumed(t["text"]), t.get("state")) for t in history] == [
        ("user", "hello @result:first-answer", None),
        ("assistant", "first-answer", "completed"),
        ("user", "think slowly @sleep:30", None),
        ("assistant", "cancelled while running", "cancelled"),
        ("user", "still there? @result:yes-still-here", None),
        ("assistant", "yes-still-here", "completed"),
    ]

    tmux.type("t", "/quit")
    assert tmux.exit_status("t") == 0


@needs_tmux
def test_repl_multi_line_input_commands_and_history(project: Project, tmux: Tmux) -> None:
    configure(project)
    project.start()
    history_file = project.paths.daemon_dir / "chat_history"
    assert not history_file.exists()
    tmux.new("t", repl_command(project))
    banner = tmux.wait_screen("t", r"^you>")
    conversation = re.search(r"\(conversation (c-[0-9a-f]+)\)", banner).group(1)

    tmux.type("t", "first line \\")  # a trailing backslash continues the message
    tmux.wait_screen("t", r"^\.\.\. ?$")
    tmux.type("t", "second line @result:one-message")
    tmux.wait_screen("t", r"^one-message$")
    prompt_back(tmux, "t", 2)
    [task] = call(project, "task.list")
    assert task["prompt"] == "first line \nsecond line @result:one-message"
    assert [agent_prompt(r) for r in project.fake.runs()] == [task["prompt"]]
    assert call(project, "chat.history", conversation=conversation)["turns"] == 2

    tmux.type("t", '"""')  # a block between lines of three quotes is one message too
    tmux.type("t", "block one")
    tmux.type("t", "  block two @result:block-answer")
    tmux.type("t", '"""')
    tmux.wait_screen("t", rf"^{RESUMED}block-answer$")
    prompt_back(tmux, "t", 3)
    block = call(project, "task.list")[0]
    assert block["prompt"] == "block one\n  block two @result:block-answer"

    tmux.type("t", "/tasks")
    screen = tmux.wait_screen("t", rf"^{task['id']}  completed  first line second line @result:one-message$")
    assert re.search(rf"^{block['id']}  completed  block one block two @result:block-answer$", screen, re.M)
    prompt_back(tmux, "t", 4)

    tmux.type("t", "/status")
    tmux.wait_screen("t", rf"^pid {project.pid()}, up \d+(\.\d+)? s, health \w+; running 0, queued 0$")
    prompt_back(tmux, "t", 5)

    tmux.type("t", "/nonsense")
    tmux.wait_screen("t", r"^unknown command /nonsense; /help lists them$")
    prompt_back(tmux, "t", 6)
    tmux("send-keys", "-t", "t", "C-c")  # at the prompt, Ctrl-C only says how to leave
    tmux.wait_screen("t", r"\(Ctrl-D or /quit to leave\)$")
    prompt_back(tmux, "t", 7)

    tmux.type("t", "/reset")
    screen = tmux.wait_screen("t", r"^conversation reset; new conversation c-[0-9a-f]+$")
    fresh = re.search(r"^conversation reset; new conversation (c-[0-9a-f]+)$", screen, re.M).group(1)
    assert fresh != conversation
    with pytest.raises(RpcError) as caught:  # the daemon forgot the old one
        call(project, "chat.history", conversation=conversation)
    assert caught.value.code == INVALID_PARAMS
    prompt_back(tmux, "t", 8)
    tmux.type("t", "after the reset @result:fresh-start")
    tmux.wait_screen("t", r"^fresh-start$")
    assert [t["text"] for t in call(project, "chat.history", conversation=fresh)["history"]] == [
        "after the reset @result:fresh-start", "fresh-start"]
    prompt_back(tmux, "t", 9)

    tmux("send-keys", "-t", "t", "C-d")  # Ctrl-D leaves too
    assert tmux.exit_status("t") == 0
    saved = history_file.read_text()
    for line in ("/tasks", "/reset", "after the reset @result:fresh-start"):
        assert line in saved.splitlines()
    assert history_file.stat().st_mode & 0o777 == 0o600


@needs_tmux
def test_the_repl_leaves_when_the_daemon_stops_while_it_waits_at_the_prompt(
    project: Project, tmux: Tmux,
) -> None:
    configure(project)
    pid = project.start()
    tmux.new("t", repl_command(project))
    tmux.wait_screen("t", r"^you>")
    prompt_back(tmux, "t", 1)
    wait_for(lambda: call(project, "daemon.status")["clients"] >= 3)  # this call, the REPL and its watcher

    stopped = project.aiwg("daemon", "stop", check=True)
    assert f"aiwg daemon stopped (pid {pid})" in stopped.stdout
    tmux.wait_screen("t", r"^aiwg: the daemon stopped; leaving the chat\.$")
    assert tmux.exit_status("t") == 1
    assert (project.paths.daemon_dir / "chat_history").exists()


# -- aiwg daemon start --tmux ------------------------------------------------------


def session_project(tmux: Tmux, session: str) -> str:
    return tmux("show-options", "-t", session, "-v", "@aiwg_project").stdout.strip()


@needs_tmux
def test_start_with_tmux_opens_log_task_output_and_chat_panes(project: Project, tmux: Tmux) -> None:
    configure(project)
    started = project.aiwg("daemon", "start", "--tmux", "--json", check=True)
    assert json.loads(started.stdout)["tmux_session"] == "aiwg-daemon"
    assert tmux.sessions() == ["aiwg-daemon"]
    assert session_project(tmux, "aiwg-daemon") == str(project.root)
    pid = project.pid()
    commands = tmux("list-panes", "-t", "aiwg-daemon:", "-F", "#{pane_start_command}").stdout.splitlines()
    assert len(commands) == 3
    assert "tail -n 50 -F" in commands[0] and str(project.paths.log_file) in commands[0]
    assert "task follow --all" in commands[1] and "daemon chat" in commands[2]
    log, follow, chat = "aiwg-daemon:.0", "aiwg-daemon:.1", "aiwg-daemon:.2"

    tmux.wait_screen(log, rf"info +\[daemon\.root\.DaemonService\] daemon started \(pid {pid}\)")
    tmux.wait_screen(follow, r"^following the output of every task \(0 running now\); Ctrl-C stops$")
    tmux.wait_screen(chat, rf"^aiwg chat with the agent for {re.escape(str(project.root))} \(conversation c-")
    tmux.wait_screen(chat, r"^you>")

    submitted = project.aiwg("task", "submit", "hello @result:from-the-task", "--json", check=True)
    task_id = json.loads(submitted.stdout)["taskId"]
    screen = tmux.wait_screen(follow, rf"^── {task_id} completed")
    assert re.search(rf"^── {task_id} started \(pid \d+\)$", screen, re.M)
    [line] = [line for line in screen.splitlines() if line.startswith(f"[{task_id}] ")]
    assert json.loads(line.removeprefix(f"[{task_id}] "))["result"] == "from-the-task"
    tmux.wait_screen(log, rf"\b{task_id}\b")  # the daemon log, followed live

    tmux.type(chat, "and from the chat pane? @result:chat-pane-answer")  # the REPL pane works
    tmux.wait_screen(chat, r"^chat-pane-answer$")
    [turn_task] = [t for t in call(project, "task.list") if t["source"] == "chat"]
    tmux.wait_screen(follow, rf"^── {turn_task['id']} completed")

    stopped = project.aiwg("daemon", "stop", check=True)
    assert f"aiwg daemon stopped (pid {pid})" in stopped.stdout
    assert "aiwg-daemon" not in tmux.sessions()
    assert not (project.paths.daemon_dir / "tmux-session").exists()


@needs_tmux
def test_attach_joins_the_session_and_a_second_project_gets_its_own(
    project: Project, tmux: Tmux,
) -> None:
    configure(project)
    missing = project.aiwg("daemon", "attach")
    assert missing.returncode != 0
    assert f"no tmux session for {project.root}" in missing.stderr
    assert "aiwg daemon start --tmux" in missing.stderr

    project.start("--tmux")
    assert tmux("list-clients", "-t", "aiwg-daemon").stdout == ""
    # From a pane of another session, with TMUX unset so tmux nests the client.
    tmux.new("outer", shlex.join(["env", "-u", "TMUX", AIWG, "daemon", "attach", "--project", str(project.root)]))
    outer_tty = tmux("display-message", "-p", "-t", "outer", "#{pane_tty}").stdout.strip()
    clients = wait_for(lambda: tmux("list-clients", "-t", "aiwg-daemon", "-F", "#{client_tty}").stdout.split())
    assert clients == [outer_tty]
    tmux.wait_screen("outer", r"you>")  # the attached client shows the session, chat pane and all

    second = Project(project.root.parent / "second", Path(project.env["XDG_RUNTIME_DIR"]))
    second.env = dict(project.env)  # the same fake claude and tmux server
    second.root.mkdir()
    configure(second)
    try:
        info = json.loads(second.aiwg("daemon", "start", "--tmux", "--json", check=True).stdout)
        assert info["tmux_session"] == "aiwg-daemon-second"
        assert sorted(tmux.sessions()) == ["aiwg-daemon", "aiwg-daemon-second", "outer"]
        assert session_project(tmux, "aiwg-daemon-second") == str(second.root)
        assert session_project(tmux, "aiwg-daemon") == str(project.root)  # the first is untouched
        tmux.wait_screen("aiwg-daemon-second:.2", rf"^aiwg chat with the agent for {re.escape(str(second.root))} ")
        assert tmux("list-panes", "-t", "aiwg-daemon:", "-F", "#{pane_dead}").stdout.split() == ["0"] * 3
        assert tmux("list-clients", "-t", "aiwg-daemon", "-F", "#{client_tty}").stdout.split() == [outer_tty]
        second.aiwg("daemon", "stop", check=True)
        assert sorted(tmux.sessions()) == ["aiwg-daemon", "outer"]
    finally:
        if second.running():
            second.aiwg("daemon", "stop", "--timeout", "30")

    project.aiwg("daemon", "stop", check=True)
    assert tmux.sessions() == ["outer"]
    assert tmux.exit_status("outer") == 0  # the attached client left with the session
    gone = project.aiwg("daemon", "attach")
    assert gone.returncode != 0 and f"no tmux session for {project.root}" in gone.stderr


@needs_tmux
def test_starting_with_tmux_never_kills_a_session_it_does_not_own(project: Project, tmux: Tmux) -> None:
    configure(project)
    tmux.new("aiwg-daemon", "sleep 300")       # the user's own sessions, named as ours would be
    tmux.new("aiwg-daemon-proj", "sleep 300")
    info = json.loads(project.aiwg("daemon", "start", "--tmux", "--json", check=True).stdout)
    for session in ("aiwg-daemon", "aiwg-daemon-proj"):
        commands = tmux("list-panes", "-t", f"{session}:", "-F", "#{pane_start_command}").stdout
        assert "sleep 300" in commands, f"the user's session {session} was replaced: {commands}"
    name = info["tmux_session"]
    assert name not in ("aiwg-daemon", "aiwg-daemon-proj") and name in tmux.sessions()
    assert session_project(tmux, name) == str(project.root)


@needs_tmux
def test_start_with_tmux_after_a_crash_brings_back_all_three_panes(project: Project, tmux: Tmux) -> None:
    configure(project)
    project.start("--tmux")
    tmux.wait_screen("aiwg-daemon:.1", r"^following the output of every task")
    tmux.wait_screen("aiwg-daemon:.2", r"^you>")
    os.kill(project.pid(), signal.SIGKILL)
    wait_for(lambda: not project.running())
    # The task and chat panes leave when the daemon goes; only the log pane stays.
    wait_for(lambda: len(tmux("list-panes", "-t", "aiwg-daemon:").stdout.splitlines()) == 1)

    info = json.loads(project.aiwg("daemon", "start", "--tmux", "--json", check=True).stdout)
    assert info["tmux_session"] == "aiwg-daemon"
    wait_for(lambda: len(tmux("list-panes", "-t", "aiwg-daemon:").stdout.splitlines()) == 3, timeout=5)
    tmux.wait_screen("aiwg-daemon:.2", r"^you>")
