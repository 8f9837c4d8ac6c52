# tests: tests/daemon/test_messaging_hub.py, tests/e2e/test_messaging.py
"""The messaging hub: one child service per enabled bridge, and what they share.

- Notifications: bus events whose topic a bridge's `notify.topics` match (and
  severe enough for its `notify.min_severity`) become Notices in its outbox.
  Chat answers are not notified: the asker gets them as replies.
- Commands and chat: every bridge hands incoming messages to `inbound`, which
  checks the allowlist (empty: nobody), then runs the command or queues a chat
  turn. Where to answer is kept in the task's record (`reply_to`), so a result
  finds its way back even after a restart.
- Secrets (`${VAR}` in the configuration) are expanded here, from the daemon's
  environment; a missing variable leaves that bridge in state `error` and the
  rest running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from aiwg.core.agents import expand
from aiwg.core.config import Config
from aiwg.core.events import Event, topic_matches
from aiwg.core.messaging import (HELP, REFUSAL, SECRET_KEYS, Inbound, Notice, allowed, at_least, notice_for,
                                 parse_command, result_text, status_text, tasks_text)
from aiwg.core.tasks import STATE_NAMES
from aiwg.core.states import END_TOPICS

#: An isolated task's branch, waiting for review or reviewed.
REVIEW_TOPICS = ("task:awaiting_merge", "task:merged", "task:discarded")
from aiwg.errors import RpcError

PLATFORMS = ("telegram", "slack", "discord")
#: A refused user gets one refusal in this many seconds, however many messages they send.
REFUSAL_INTERVAL = 600.0


def allowed_key(platform: str) -> str:
    return "allowed_chats" if platform == "telegram" else "allowed_channels"


class MessagingService(MultiService):
    name = "messaging"
    log = Logger()

    def __init__(self, *, reactor: Any, bus: Any, config: Config, project: str,
                 environ: Mapping[str, str], daemon_status: Callable[[], dict[str, Any]],
                 supervisor: Callable[[], Any], chat: Callable[[], Any], state_dir: Path,
                 factories: Mapping[str, Callable[..., Any]] | None = None) -> None:
        super().__init__()
        self.reactor = reactor
        self.bus = bus
        self.project = project
        self.environ = environ
        self.daemon_status = daemon_status
        self.supervisor = supervisor
        self.chat = chat
        self.state_dir = state_dir
        self.factories = dict(factories) if factories is not None else default_factories()
        self.section: dict[str, Any] = dict(config.data["messaging"])
        self.adapters: dict[str, Any] = {}
        self.problems: dict[str, str] = {}  # platform → why it could not be built
        self._subscription: Any = None
        self._refused_at: dict[tuple[str, str], float] = {}
        self.notified = 0

    # -- lifecycle --------------------------------------------------------------

    def startService(self) -> None:
        self._build()
        MultiService.startService(self)
        self._subscribe()

    def stopService(self) -> Deferred:
        self.bus.flush()  # the outcomes of tasks the stop just ended reach the outboxes first
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        return MultiService.stopService(self)  # type: ignore[no-any-return]

    def _build(self, only: list[str] | None = None) -> None:
        for platform in PLATFORMS if only is None else only:
            section = self.section.get(platform) or {}
            if not section.get("enabled"):
                continue
            secrets, missing = {}, []
            for key in SECRET_KEYS:
                if section.get(key):
                    secrets[key], unset = expand(str(section[key]), self.environ)
                    missing += unset
            if missing:
                self.problems[platform] = (
                    f"messaging: {platform}: environment variable(s) {', '.join(sorted(set(missing)))} not set "
                    f"in the daemon's environment (messaging.{platform}); export them and restart the daemon")
                self.log.error("{problem}", problem=self.problems[platform])
                continue
            try:
                adapter = self.factories[platform](reactor=self.reactor, section=section, secrets=secrets,
                                                   inbound=self.inbound, state_dir=self.state_dir)
            except Exception as exc:  # a bad bridge never stops the daemon or the others
                self.problems[platform] = f"messaging: {platform}: could not start: {exc}"
                self.log.failure("messaging: {platform} could not start", platform=platform)
                continue
            self.adapters[platform] = adapter
            adapter.setServiceParent(self)
        if self.adapters:
            self.log.info("messaging: {names} enabled", names=", ".join(self.adapters))

    def _subscribe(self) -> None:
        if self._subscription is not None:
            self._subscription.cancel()
            self._subscription = None
        patterns = {p for a in self.adapters.values() for p in a.section["notify"]["topics"]}
        if self.adapters:
            patterns.update(END_TOPICS)
            self._subscription = self.bus.subscribe(sorted(patterns), self._on_event)

    def apply_config(self, config: Config) -> Any:
        """A changed `messaging` section restarts the bridges with it; a reload also
        retries bridges in state `error` (a fixed token, a portal setting changed)."""
        section = dict(config.data["messaging"])
        failed = [p for p, a in self.adapters.items() if a.state == "error"] + list(self.problems)
        changed = section != self.section
        if not changed and not failed:
            return None
        self.section = section
        targets = list(PLATFORMS) if changed else failed  # healthy bridges keep their connections
        old = [self.adapters.pop(p) for p in targets if p in self.adapters]
        for platform in targets:
            self.problems.pop(platform, None)
        stopping = [maybeDeferred(a.disownServiceParent) for a in old]
        if self.running:
            self._build(targets)
            self._subscribe()
        self.log.info("messaging: bridges restarted ({why})",
                      why="configuration changed" if changed else "retrying " + ", ".join(failed))
        return stopping

    # -- status ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        adapters: dict[str, Any] = {}
        for platform in PLATFORMS:
            if platform in self.adapters:
                adapters[platform] = self.adapters[platform].status()
            elif platform in self.problems:
                adapters[platform] = {"state": "error", "detail": self.problems[platform]}
            else:
                adapters[platform] = {"state": "disabled"}
        enabled = bool(self.adapters or self.problems)
        return {"enabled": enabled, "adapters": adapters, "notified": self.notified}

    def health_issues(self) -> list[str]:
        issues = list(self.problems.values())
        for platform, adapter in self.adapters.items():
            if adapter.state == "error":
                issues.append(f"messaging: {platform}: {adapter.detail}")
        return issues

    def send_test(self, platform: str | None) -> Deferred:
        """`aiwg messaging test`: a notification sent now to every target of one
        bridge (or all), reporting for each target whether it arrived."""
        from twisted.internet.defer import gatherResults

        notice = Notice(title="Test notification from aiwg", severity="info",
                        fields=(("project", self.project),),
                        body="If you can read this, notifications from this daemon reach this chat.")
        chosen = {name: a for name, a in self.adapters.items() if platform in (None, name)}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
        pending = []
        for name, adapter in chosen.items():
            for target in adapter.notice_targets():
                entry: dict[str, Any] = {"target": adapter.show_target(target)}
                results[name].append(entry)
                d = maybeDeferred(adapter.send_notice, target, notice)
                d.addCallbacks(lambda _, e=entry, a=adapter: self._tested(a, e, None),
                               lambda f, e=entry, a=adapter: self._tested(a, e, f.getErrorMessage()))
                pending.append(d)
        return gatherResults(pending).addCallback(lambda _: results)

    @staticmethod
    def _tested(adapter: Any, entry: dict[str, Any], error: str | None) -> None:
        adapter.counters["sent" if error is None else "failed"] += 1
        entry.update(ok=True) if error is None else entry.update(ok=False, error=adapter.redact(error))

    # -- notifications -----------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.topic == "task:output":
            return  # output chunks are for followers on the socket, not for chat apps
        task = None
        source = str(event.payload.get("source") or "")
        if event.topic.startswith("task:") and source.startswith("messaging:"):
            task = self._task(event.payload.get("taskId"))
            if task is not None and event.topic in END_TOPICS:
                self._answer(task)
        reply_to = (task.reply_to if task is not None else None) or {}
        if source == "chat" or reply_to.get("kind") == "chat":
            return  # a chat turn's progress and answer go to the asker only
        notice: Notice | None = None
        for platform, adapter in self.adapters.items():
            notify = adapter.section["notify"]
            if not any(topic_matches(p, event.topic) for p in notify["topics"]):
                continue
            if not at_least(event.topic, notify["min_severity"]):
                continue
            if notice is None:
                notice = notice_for(event.topic, event.payload, self.project)
            # The asker gets the task's answer instead of its end notice; a branch
            # that waits for review is news to them as well.
            asker = reply_to.get("platform") == platform and event.topic not in REVIEW_TOPICS
            skip = reply_to.get("chat") if asker else None
            self.notified += adapter.notify(notice, skip=skip)

    def _task(self, task_id: Any) -> Any:
        store = getattr(self.supervisor(), "store", None)
        return store.get(task_id) if store is not None and isinstance(task_id, str) else None

    def _answer(self, task: Any) -> None:
        reply_to = task.reply_to
        if reply_to is None:
            return
        adapter = self.adapters.get(reply_to.get("platform"))
        if adapter is None:
            return
        if reply_to.get("kind") == "chat":
            if task.state.value == "completed":
                text = task.result if task.result else (task.output_tail or "(no answer)")
            else:
                text = f"Sorry, no answer: the agent's task {task.id} {task.state.value}" + (
                    f": {task.error}" if task.error else ".")
        else:
            text = result_text({"id": task.id, "state": task.state.value, "result": task.result,
                                "error": task.error, "output": task.output_tail,
                                "duration": int(task.duration * 1000) if task.duration is not None else None})
        adapter.reply(reply_to.get("where") or {}, text)

    # -- commands and chat ----------------------------------------------------------

    def inbound(self, message: Inbound) -> Deferred:
        """Handle one message from a chat app; never raises (a bad message is answered)."""
        adapter = self.adapters.get(message.platform)
        if adapter is None:
            return succeed(None)
        adapter.counters["received"] += 1
        section = adapter.section
        if not allowed(message.user, message.chat, section["allowed_users"], section[allowed_key(message.platform)]):
            adapter.counters["refused"] += 1
            self.log.warn("messaging: {platform}: refused user {user} ({name}) in chat {chat}: not on the "
                          "allowlist (messaging.{platform}.allowed_users)", platform=message.platform,
                          user=message.user, name=message.user_name or "?", chat=message.chat)
            key = (message.platform, message.user)
            now = self.reactor.seconds()
            if len(self._refused_at) > 1000:  # strangers come and go: keep only the recent ones
                self._refused_at = {k: t for k, t in self._refused_at.items() if now - t < REFUSAL_INTERVAL}
            due = now - self._refused_at.get(key, -REFUSAL_INTERVAL) >= REFUSAL_INTERVAL
            if section["refuse"] == "reply" and (due or message.must_answer):
                self._refused_at[key] = now
                adapter.reply(message.where, REFUSAL.format(user=message.user))
            return succeed(None)
        command = message.command or parse_command(message.text, getattr(adapter, "bot_name", None))
        d = maybeDeferred(self._run, adapter, message, command.name, command.argument)

        def answered(text: str | None) -> None:
            if text:
                adapter.reply(message.where, text)

        def failed(failure: Any) -> None:
            self.log.failure("messaging: {platform}: /{command} failed", failure,
                             platform=message.platform, command=command.name)
            adapter.reply(message.where, f"Sorry, that failed: {failure.getErrorMessage()}")

        return d.addCallbacks(answered, failed)

    def _run(self, adapter: Any, message: Inbound, name: str, argument: str) -> Any:
        if name == "help":
            return HELP
        if name == "unknown":
            return f"Unknown command /{argument}.\n\n{HELP}"
        if name == "status":
            return status_text(self.project, self.daemon_status())
        if name == "tasks":
            return self._tasks(argument)
        if name == "cancel":
            return self._cancel(argument)
        if name in ("approve", "reject"):
            return self._decide(message, name, argument)
        if name in ("diff", "merge", "discard"):
            return self._branch(message, name, argument)
        if name == "task":
            return self._submit(message, argument)
        if name == "reset":
            forgot = self.chat().reset(message.conversation)
            return ("Conversation reset: the next message starts afresh." if forgot
                    else "There was no conversation here to reset.")
        if not (argument or message.text).strip():
            return HELP  # a bare mention: say what the bot can do
        return self._chat(message, argument or message.text)

    def _tasks(self, state: str) -> str:
        state = state.strip().lower()
        if state and state not in STATE_NAMES:
            return f"Unknown state '{state}'; use one of: {', '.join(STATE_NAMES)}."
        found = self.supervisor().store.list(state or None, 10, 0)
        rows = [{"id": t.id, "state": t.state.value, "created": t.created_at, "prompt": t.prompt} for t in found]
        return tasks_text(rows, self.reactor.seconds(), state or None)

    def _cancel(self, task_id: str) -> str:
        task_id = task_id.strip()
        if not task_id:
            return "Usage: /cancel <task id> (see /tasks)."
        change = self.supervisor().cancel(task_id)
        if change.task is None:
            return f"Unknown task {task_id} (see /tasks)."
        return f"Cancelling task {task_id}." if change.done else f"{_sentence(change.refused)}."

    def _decide(self, message: Inbound, name: str, argument: str) -> str:
        task_id, _, reason = argument.strip().partition(" ")
        if not task_id:
            return f"Usage: /{name} <task id>" + (" [reason]" if name == "reject" else "") + " (see /tasks awaiting_approval)."
        by = f"{message.platform}:{message.user}" + (f" ({message.user_name})" if message.user_name else "")
        supervisor = self.supervisor()
        task = supervisor.isolation.awaiting_merge(task_id)
        if task is not None:
            if name == "approve":
                return self._branch(message, "merge", task_id)
            supervisor.isolation.keep(task_id, by)
            return f"Task {task_id}'s branch {task.workspace.branch} is kept, unmerged."
        if name == "approve":
            change = supervisor.approve(task_id, by)
        else:
            change = supervisor.reject(task_id, by, reason.strip() or None)
        if change.task is None:
            return f"Unknown task {task_id} (see /tasks awaiting_approval)."
        if not change.done:
            return f"{_sentence(change.refused)}."
        return f"Approved task {task_id}: it is queued." if name == "approve" else f"Rejected task {task_id}."

    def _branch(self, message: Inbound, name: str, argument: str) -> Any:
        """/diff, /merge, /discard of an isolated task's branch; a refusal is the answer."""
        task_id = argument.strip().split(" ", 1)[0]
        if not task_id:
            return f"Usage: /{name} <task id> (see /tasks completed)."
        by = f"{message.platform}:{message.user}"
        isolation = self.supervisor().isolation
        try:
            if name == "diff":
                done = isolation.diff(task_id, True).addCallback(
                    lambda d: f"Task {task_id}, branch {d['branch']}:\n{d['diff'][:3000].strip() or '(no changes)'}")
            elif name == "merge":
                done = isolation.merge(task_id, None, False, by).addCallback(
                    lambda t: f"Merged task {task_id} into {t.workspace.merged_into} "
                              f"({(t.workspace.merge_commit or '')[:12]}).")
            else:
                done = isolation.discard(task_id, by).addCallback(
                    lambda t: f"Discarded task {task_id}'s branch {t.workspace.branch}.")
        except RpcError as exc:
            return _sentence(exc.message.removeprefix("Invalid params: ").replace("Task not found", "Unknown task"))
        return done.addErrback(lambda f: _sentence(f.getErrorMessage()) if f.check(RpcError) else f)

    def _reply_to(self, message: Inbound, kind: str) -> dict[str, Any]:
        where = {k: v for k, v in message.where.items() if not k.startswith("_")}  # one-shot handles
        return {"platform": message.platform, "chat": message.chat, "where": where, "kind": kind}

    def _submit(self, message: Inbound, prompt: str) -> Any:
        if not prompt.strip():
            return "Usage: /task <prompt>, e.g. /task fix the failing tests"
        submitted = self.supervisor().submit(
            prompt.strip(), source=f"messaging:{message.platform}",
            metadata={"requestedBy": {"user": message.user, "name": message.user_name}},
            reply_to=self._reply_to(message, "task"),
        )
        return submitted.addCallback(_queued_text)

    def _chat(self, message: Inbound, text: str) -> Any:
        task = self.chat().send(
            text, message.conversation, None, source=f"messaging:{message.platform}",
            metadata={"source": "messaging", "requestedBy": {"user": message.user, "name": message.user_name}},
            reply_to=self._reply_to(message, "chat"),
        )
        self.log.info("messaging: {platform}: chat turn {task} in conversation {conversation}",
                      platform=message.platform, task=task.id, conversation=message.conversation)
        if message.must_answer:  # e.g. a Discord interaction, which expires unanswered
            return f"Asking the agent (task {task.id}); the answer will follow here."
        return None  # the answer is posted when the turn's task ends


def default_factories() -> dict[str, Callable[..., Any]]:
    def telegram(**kwargs: Any) -> Any:
        from aiwg.daemon.messaging.telegram import TelegramAdapter
        return TelegramAdapter(**kwargs)

    def slack(**kwargs: Any) -> Any:
        from aiwg.daemon.messaging.slack import SlackAdapter
        return SlackAdapter(**kwargs)

    def discord(**kwargs: Any) -> Any:
        from aiwg.daemon.messaging.discord import DiscordAdapter
        return DiscordAdapter(**kwargs)

    return {"telegram": telegram, "slack": slack, "discord": discord}


def _sentence(text: str | None) -> str:
    return (text or "")[:1].upper() + (text or "")[1:]


def _queued_text(task: Any) -> str:
    if task.state.value == "awaiting_approval":
        return (f"Task {task.id} awaits approval before it runs: /approve {task.id} or /reject {task.id} "
                f"[reason]. I will post the result here.")
    return f"Queued task {task.id}. I will post the result here (or /cancel {task.id})."
