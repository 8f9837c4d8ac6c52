# tests: tests/core/test_messaging.py
"""What the messaging bridges say and whom they listen to. Pure: no network here.

- Commands: `/status`, `/tasks [state]`, `/task <prompt>`, `/cancel <id>`,
  `/reset` (this chat's conversation), `/help`;
  anything else from an allowed user is a chat turn. A bot's own mention suffix
  (`/status@my_bot`) is accepted.
- The allowlist: an empty list admits nobody, never everybody.
- Text for each platform: Telegram HTML (escaped, at most 4,096 characters a
  message), Slack mrkdwn (`&`, `<`, `>` escaped, 40,000), Discord (2,000, with
  mentions never expanded by the caller's choice of allowed_mentions). Long
  answers are split on line boundaries where possible.
- Notifications from bus events: one short title, the task's id, state,
  duration, prompt excerpt, error and output tail, each cut to fit.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Mapping

from attrs import frozen

LIMITS = {"telegram": 4096, "slack": 40000, "discord": 2000}
#: The keys of a bridge's settings that hold secrets (tokens, webhook URLs).
SECRET_KEYS = ("bot_token", "app_token", "webhook_url")
COMMANDS = ("status", "tasks", "task", "cancel", "approve", "reject", "diff", "merge", "discard", "reset", "help")
SEVERITIES = ("info", "warning", "error")

#: Severity of the events a bridge may be asked to forward.
_SEVERITY = {
    "task:failed": "error",
    "task:timeout": "error",
    "health:degraded": "error",
    "automation:throttled": "warning",
    "automation:error": "error",
    "daemon:stopping": "warning",
    "daemon:reload_failed": "error",
    "schedule:skipped": "warning",
    "task:cancelled": "warning",
    "task:awaiting_approval": "warning",
    "task:rejected": "warning",
}


@frozen
class Command:
    name: str  # one of COMMANDS, or "chat"
    argument: str = ""


def parse_command(text: str, bot_name: str | None = None) -> Command:
    """`/task fix the tests` → Command("task", "fix the tests"); plain text → chat."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return Command("chat", stripped)
    head, _, rest = stripped[1:].partition(" ")
    name, _, addressee = head.partition("@")
    if addressee and bot_name and addressee.lower() != bot_name.lower():
        return Command("chat", stripped)  # a command for another bot in the group
    name = name.lower()
    if name not in COMMANDS:
        return Command("unknown", name)
    return Command(name, rest.strip())


def allowed(user: str | int | None, chat: str | int | None, users: Iterable[Any], chats: Iterable[Any]) -> bool:
    """Allowed when the user is listed, or the chat/channel is; nothing listed: nobody."""
    user_ids = {str(u) for u in users}
    chat_ids = {str(c) for c in chats}
    return (user is not None and str(user) in user_ids) or (chat is not None and str(chat) in chat_ids)


def severity(topic: str) -> str:
    return _SEVERITY.get(topic, "info")


def at_least(topic: str, minimum: str) -> bool:
    return SEVERITIES.index(severity(topic)) >= SEVERITIES.index(minimum if minimum in SEVERITIES else "info")


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at the last newline in the second
    half of a piece, else at the last space there, else at the limit."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n")
        if cut < limit / 2:
            cut = window.rfind(" ")
        if cut < limit / 2:
            cut = limit
        pieces.append(rest[:cut].rstrip("\n"))
        rest = rest[cut:].lstrip("\n") if rest[cut:cut + 1] == "\n" else rest[cut:].lstrip(" ")
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def telegram_html(text: str) -> str:
    return html.escape(text, quote=False)


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def excerpt(text: str | None, length: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= length else flat[: max(0, length - 1)] + "…"


def _duration(ms: Any) -> str | None:
    if not isinstance(ms, (int, float)):
        return None
    seconds = ms / 1000
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _changes(workspace: Mapping[str, Any]) -> str:
    if workspace.get("state") == "empty":
        return "no changes"
    files = workspace.get("filesChanged") or 0
    return (f"{files} file{'s' if files != 1 else ''}, +{workspace.get('insertions') or 0} "
            f"-{workspace.get('deletions') or 0}")


@frozen
class Notice:
    """A platform-neutral notification: the adapters render it."""

    title: str
    severity: str
    fields: tuple[tuple[str, str], ...] = ()
    body: str = ""

    def plain(self) -> str:
        lines = [self.title] + [f"{k}: {v}" for k, v in self.fields]
        if self.body:
            lines += ["", self.body]
        return "\n".join(lines)


def notice_for(topic: str, payload: Mapping[str, Any], project: str) -> Notice:
    """A notification for one bus event."""
    level = severity(topic)
    fields: list[tuple[str, str]] = [("project", project)]
    body = ""
    task_id = payload.get("taskId")
    if topic == "task:awaiting_approval" and task_id:
        title = f"Task {task_id} awaits approval"
        fields += [("prompt", excerpt(str(payload.get("prompt") or ""), 300)),
                   ("source", str(payload.get("source") or "?")),
                   ("expires", str(payload.get("expiresAt") or "?"))]
        body = (f"Approve: /approve {task_id}\nReject: /reject {task_id} [reason]\n"
                f"Or from a shell: aiwg task approve {task_id}")
    elif topic in ("task:awaiting_merge", "task:merged", "task:discarded") and task_id:
        workspace = payload.get("workspace") or {}
        title = {"task:awaiting_merge": f"Task {task_id} completed; its branch awaits approval to merge",
                 "task:merged": f"Task {task_id} merged into {workspace.get('mergedInto', '?')}",
                 "task:discarded": f"Task {task_id}'s branch discarded"}[topic]
        fields += [("branch", str(workspace.get("branch") or "?")), ("changes", _changes(workspace))]
        if payload.get("by"):
            fields.append(("by", str(payload["by"])))
        if topic == "task:awaiting_merge":
            body = (f"Review: /diff {task_id}\nMerge: /approve {task_id} (or /merge {task_id})\n"
                    f"Keep unmerged: /reject {task_id}\nOr from a shell: aiwg task diff {task_id}")
    elif topic == "task:approved" and task_id:
        title = f"Task {task_id} approved"
        fields += [("by", str(payload.get("by") or "?")), ("prompt", excerpt(str(payload.get("prompt") or ""), 200))]
    elif topic == "task:iteration" and task_id:
        code = payload.get("checkExitCode")
        how = "check passed" if payload.get("passed") else (
            f"check failed (exit {code})" if code is not None else "check did not finish")
        title = f"Task {task_id}: iteration {payload.get('iteration')}/{payload.get('maxIterations')}, {how}"
        if payload.get("prompt"):
            fields.append(("prompt", excerpt(str(payload["prompt"]), 200)))
        if payload.get("totalCostUsd") is not None:
            fields.append(("spent", f"${float(payload['totalCostUsd']):.4g}"))
        if payload.get("reason"):
            fields.append(("ends", excerpt(str(payload["reason"]), 300)))
    elif topic.startswith("task:") and task_id:
        state = str(payload.get("state") or topic.split(":", 1)[1])
        title = f"Task {task_id} {state}"
        if payload.get("prompt"):
            fields.append(("prompt", excerpt(str(payload["prompt"]), 200)))
        duration = _duration(payload.get("duration"))
        if duration:
            fields.append(("duration", duration))
        if payload.get("exitCode") is not None:
            fields.append(("exit code", str(payload["exitCode"])))
        if payload.get("error"):
            fields.append(("error", excerpt(str(payload["error"]), 300)))
        workspace = payload.get("workspace")
        if isinstance(workspace, Mapping) and workspace.get("branch"):
            fields.append(("branch", f"{workspace['branch']} ({_changes(workspace)})"))
        if state == "completed" and payload.get("result"):
            body = str(payload["result"])[-1500:]
        elif payload.get("outputTail"):
            body = str(payload["outputTail"])[-1500:]
    elif topic == "health:degraded":
        title = "Daemon health degraded"
        body = "\n".join(f"- {issue}" for issue in payload.get("issues") or [])
    elif topic.startswith("automation:"):
        title = f"Automation {topic.split(':', 1)[1]}: rule {payload.get('ruleId', '?')}"
        for key in ("reason", "error", "taskId"):
            if payload.get(key):
                fields.append((key, excerpt(str(payload[key]), 300)))
    else:
        title = topic
        for key, value in list(payload.items())[:6]:
            fields.append((str(key), excerpt(str(value), 200)))
    return Notice(title=title, severity=level, fields=tuple(fields), body=body)


@frozen
class Inbound:
    """One message from a chat app, as every bridge hands it to the hub.

    `where` is the platform's own reply address (chat and message ids, channel
    and thread) and must be JSON: it is kept in a task's record (reply_to) so a result
    finds its way back after a restart; keys starting with `_` are one-shot
    handles (a slash command's response URL) and are not kept. `conversation` names the chat or thread,
    which is one conversation with the agent.
    """

    platform: str
    user: str
    chat: str
    text: str
    where: Mapping[str, Any]
    conversation: str
    user_name: str = ""
    command: Command | None = None  # set by platform-native slash commands
    must_answer: bool = False  # the platform needs a reply to every request (Discord interactions)


HELP = (
    "Commands:\n"
    "/status: the daemon's health and queue\n"
    "/tasks [state]: recent tasks (awaiting_approval, queued, running, completed, failed, cancelled, "
    "timeout, rejected)\n"
    "/task <prompt>: queue a task for the agent; the result is posted here\n"
    "/cancel <id>: cancel a queued or running task\n"
    "/approve <id>, /reject <id> [reason]: decide on a task that awaits approval\n"
    "/diff <id>, /merge <id>, /discard <id>: review an isolated task's branch\n"
    "/reset: forget this chat's conversation with the AI\n"
    "/help: this list\n"
    "Anything else is a question for the project's AI; each chat or thread is one conversation."
)

REFUSAL = "Sorry, you are not allowed to use this bot. Ask the project's owner to add your user id ({user})."


def umbrella(text: str) -> Command:
    """`/aiwg tasks failed` (one registered slash command for everything): a known
    command word, else the whole text is a chat turn; nothing at all is /help."""
    words = text.strip()
    if not words:
        return Command("help")
    parsed = parse_command("/" + words.lstrip("/"))
    return Command("chat", words) if parsed.name == "unknown" else parsed


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def status_text(project: str, status: Mapping[str, Any]) -> str:
    """The /status answer from daemon.status."""
    state = str(status.get("health") or "unknown")
    supervisor = (status.get("subsystems") or {}).get("supervisor") or {}
    lines = [
        f"aiwg daemon for {project}: {state}, up {age(float(status.get('uptime_seconds') or 0))}",
        f"tasks: {supervisor.get('running', 0)} running, {supervisor.get('queued', 0)} queued "
        f"(at most {supervisor.get('maxConcurrency', '?')} at once)",
    ]
    for issue in status.get("health_issues") or []:
        lines.append(f"- {issue}")
    return "\n".join(lines)


def tasks_text(tasks: Iterable[Mapping[str, Any]], now: float, state: str | None) -> str:
    """The /tasks answer: one line a task, newest first."""
    lines = [
        f"{t['id']}  {t['state']:<9}  {age(now - float(t['created']))} ago  {excerpt(str(t['prompt']), 60)}"
        for t in tasks
    ]
    if not lines:
        return f"No {state} tasks." if state else "No tasks yet."
    return ("Recent tasks" + (f" ({state})" if state else "") + ":\n") + "\n".join(lines)


def result_text(task: Mapping[str, Any]) -> str:
    """A /task's outcome, posted where it was asked for."""
    state = task["state"]
    head = f"Task {task['id']} {state}"
    if task.get("duration") is not None:
        head += f" in {_duration(task['duration'])}"
    if state == "completed":
        return head + (":\n" + str(task["result"]) if task.get("result") else ".")
    detail = task.get("error") or ""
    tail = (task.get("output") or "")[-1500:]
    return head + (f": {detail}" if detail else ".") + (f"\n{tail}" if tail else "")
