# tests: tests/e2e/test_jsonrpc_socket.py, tests/daemon/test_methods.py
"""The RPC method table: each name, its declared params, and the service call behind it.

Names and parameter names are AIWG's (`ping`, `daemon.status`, `task.submit
{prompt, priority}` …) so AIWG's own client works against this daemon.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiwg.core.conversations import conversation_id_problem
from aiwg.core.events import Event, pattern_problem, topic_problem
from aiwg.core.loops import LoopSpecError, parse_loop
from aiwg.core.tasks import STATE_NAMES, Change, source_problem
from aiwg.core.timefmt import iso_utc
from aiwg.daemon.ipc.automation_methods import AutomationMethods, ScheduleMethods
from aiwg.daemon.ipc.branch_methods import BranchMethods
from aiwg.daemon.ipc.records import record_json
from aiwg.daemon.ipc.rpc import CallContext, MethodTable, Namespace, Param, method
from aiwg.daemon.messaging.hub import PLATFORMS
from aiwg.errors import SUBSYSTEM_UNAVAILABLE, InvalidParams, RpcError

if TYPE_CHECKING:
    from aiwg.daemon.automation.engine import AutomationEngine
    from aiwg.daemon.automation.scheduler import Scheduler
    from aiwg.daemon.bus import EventBus
    from aiwg.daemon.messaging.chat import ChatService
    from aiwg.daemon.messaging.hub import MessagingService
    from aiwg.daemon.root import DaemonService
    from aiwg.daemon.tasks.actions import TaskActions
    from aiwg.daemon.tasks.supervisor import Supervisor


MAX_SUBSCRIPTIONS = 32
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_EMIT_PAYLOAD_BYTES = 64 * 1024


def event_json(event: Event) -> dict[str, Any]:
    return {
        "topic": event.topic,
        "payload": dict(event.payload),
        "source": event.source,
        "timestamp": iso_utc(event.timestamp),
        "seq": event.seq,
    }


class Root(MethodTable):
    def __init__(self, daemon: "DaemonService") -> None:
        super().__init__()
        self._daemon = daemon

    @method(description="Liveness check; answers as long as the daemon's reactor runs.")
    def jsonrpc_ping(self, ctx: CallContext) -> dict[str, Any]:
        return {"pong": True, "timestamp": iso_utc(self._daemon.now()), "pid": self._daemon.pid}


class DaemonMethods(Namespace):
    def __init__(self, daemon: "DaemonService") -> None:
        super().__init__()
        self._daemon = daemon

    @method(description="Pid, uptime, health, connected clients and each subsystem's status.")
    def jsonrpc_status(self, ctx: CallContext) -> dict[str, Any]:
        return self._daemon.status()

    @method(
        description="Re-read the configuration file; a valid one is applied, an invalid one "
        "is refused (error -32010 naming each problem) and the running one stays."
    )
    def jsonrpc_reload(self, ctx: CallContext) -> dict[str, Any]:
        return self._daemon.reload()

    @method(description="Stop the daemon gracefully, as SIGTERM does; replies before stopping.")
    def jsonrpc_stop(self, ctx: CallContext) -> dict[str, Any]:
        return self._daemon.request_stop(reason="daemon.stop request")


class RpcMethods(Namespace):
    def __init__(self, table: MethodTable) -> None:
        super().__init__()
        self._table = table

    @method(description="Every method with its parameters.")
    def jsonrpc_discover(self, ctx: CallContext) -> dict[str, Any]:
        return {"methods": self._table.discover()}


class EventsMethods(Namespace):
    """Subscriptions: the daemon pushes matching events to this connection as
    `{"jsonrpc":"2.0","method":"event","params":{topic, payload, source, timestamp, seq}}`."""

    def __init__(self, bus: EventBus) -> None:
        super().__init__()
        self._bus = bus

    @method(
        Param(
            "topics",
            "string[]",
            default=["*"],
            description="Topic patterns; * matches anything (task:*, *:failed, *).",
        ),
        description="Receive matching events on this connection as `event` notifications.",
    )
    def jsonrpc_subscribe(self, ctx: CallContext, topics: list[str]) -> dict[str, Any]:
        connection = ctx.connection
        if connection is None:
            raise InvalidParams("events.subscribe needs a connection to deliver to")
        for pattern in topics:
            problem = pattern_problem(pattern)
            if problem:
                raise InvalidParams(f"Invalid parameter 'topics': {problem}")
        if not topics:
            raise InvalidParams("Invalid parameter 'topics': must not be empty")
        if len(connection.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise InvalidParams(
                f"Invalid parameter 'topics': at most {MAX_SUBSCRIPTIONS} subscriptions per connection"
            )
        subscription = self._bus.subscribe(
            topics, lambda event: connection.notify("event", event_json(event))
        )
        connection.subscriptions.append(subscription)
        return {"subscribed": list(topics)}

    @method(description="Stop receiving events on this connection.")
    def jsonrpc_unsubscribe(self, ctx: CallContext) -> dict[str, Any]:
        connection = ctx.connection
        count = 0
        if connection is not None:
            for subscription in connection.subscriptions:
                subscription.cancel()
                count += 1
            connection.subscriptions = []
        return {"unsubscribed": count}

    @method(
        Param("limit", "integer", default=50, minimum=1, maximum=1000),
        Param("topic", "string", nullable=True, description="Only events matching this pattern."),
        description="The most recent events, oldest first.",
    )
    def jsonrpc_recent(self, ctx: CallContext, limit: int, topic: str | None) -> list[Any]:
        from aiwg.core.events import topic_matches

        if topic is not None and pattern_problem(topic):
            raise InvalidParams(f"Invalid parameter 'topic': {pattern_problem(topic)}")
        events = [e for e in self._bus.history if topic is None or topic_matches(topic, e.topic)]
        return [event_json(e) for e in events[-limit:]]


class EventMethods(Namespace):
    def __init__(self, bus: EventBus) -> None:
        super().__init__()
        self._bus = bus

    @method(
        Param("topic", "string", description="Custom topic, e.g. deployment:complete."),
        Param("payload", "object", default=None, nullable=True),
        Param("source", "string", default="client"),
        Param("type", "string", description="Alias of topic (AIWG's event shape)."),
        Param("taskId", "string", nullable=True, description="The task this event comes from "
              "(set from AIWG_TASK_ID by the CLI and DaemonClient); rules it fires count one "
              "level deeper in the automation chain."),
        description="Publish a custom event on the daemon's bus (rules with an event "
        "trigger see it; subscribers receive it).",
    )
    def jsonrpc_emit(
        self,
        ctx: CallContext,
        topic: str | None,
        payload: dict[str, Any] | None,
        source: str,
        type: str | None,
        taskId: str | None,
    ) -> dict[str, Any]:
        name = topic if topic is not None else type
        if name is None:
            raise InvalidParams("Missing required parameter: topic")
        problem = topic_problem(name, external=True)
        if problem:
            raise InvalidParams(f"Invalid parameter 'topic': {problem}")
        import json

        size = len(json.dumps(payload or {}, separators=(",", ":")))
        if size > MAX_EMIT_PAYLOAD_BYTES:
            raise InvalidParams(
                f"Invalid parameter 'payload': {size} bytes as JSON, at most {MAX_EMIT_PAYLOAD_BYTES}"
            )
        if taskId is not None and not _TASK_ID.fullmatch(taskId):
            raise InvalidParams(f"Invalid parameter 'taskId': not a task id, got {taskId[:40]!r}")
        origin = f"task:{taskId}" if taskId else (source[:64] or "client")
        event = self._bus.publish(name, payload or {}, source=origin)
        return {"published": True, "topic": event.topic, "seq": event.seq}


def _whole_utf8(data: bytes) -> bytes:
    """`data` without a trailing, incomplete UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


#: Metadata names of what the daemon records itself (task.get shows them beside the
#: client's keys): a client cannot claim an approval, a loop or a place in a chain.
RESERVED_METADATA = {"approvedBy", "rejectedBy", "approvalExpiresAt", "loop", "replyTo", "chainDepth"}


def loop_from_params(until: str | None, **limits: Any) -> Any:
    """A LoopSpec from task.submit's loop parameters (None without any), with a bad
    one named as the parameter it came from."""
    try:
        return parse_loop({"until": until, **dict(sorted(limits.items()))}, when="given")
    except LoopSpecError as exc:
        name, _, problem = str(exc).partition(": ")
        raise InvalidParams(f"Invalid parameter '{name}': {problem}") from None


def _unknown_task(task_id: str) -> InvalidParams:
    return InvalidParams(f"Task not found: {task_id} (parameter 'taskId')", {"taskId": task_id})


def _check_state(state: str | None) -> None:
    if state is not None and state not in STATE_NAMES:
        raise InvalidParams(f"Invalid parameter 'state': must be one of {', '.join(STATE_NAMES)}, got '{state}'")


def _decided(change: Change) -> Any:
    """An approval or a rejection that was made; the error that says why not."""
    if change.task is None:
        raise _unknown_task(change.task_id)
    if not change.done:
        raise InvalidParams(f"Invalid parameter 'taskId': {change.refused}",
                            {"taskId": change.task_id, "state": change.task.state.value})
    return change


class TaskMethods(BranchMethods):
    """AIWG's task.* methods (same names, params and result fields), plus task.output
    and the review of isolated tasks' branches (BranchMethods)."""

    def __init__(self, supervisor: Supervisor, actions: TaskActions) -> None:
        super().__init__()
        self._supervisor = supervisor
        self._actions = actions

    @method(
        Param("prompt", "string", required=True, non_empty=True, description="What the agent should do."),
        Param("priority", "integer", default=0, minimum=-1_000_000, maximum=1_000_000, description="Higher runs sooner; equal priorities run in submission order."),
        Param("timeout", "number", nullable=True, minimum=0.001, maximum=525600, description="Minutes before the task is stopped (default daemon.action_timeout_minutes)."),
        Param("agent", "string", nullable=True, description="Passed to the agent as --agent NAME."),
        Param("metadata", "object", default=None, nullable=True),
        Param("source", "string", default="ipc", description="cli, chat, rule:<id>, schedule:<job>, messaging:<platform>, client:<name>."),
        Param("retries", "integer", default=0, minimum=0, maximum=100, description="Times to re-queue the task if the daemon stops while it runs."),
        Param("requireApproval", "boolean", nullable=True, description="Wait in state awaiting_approval until "
              "approved (default: as approvals.require_for says for the source)."),
        Param("until", "string", nullable=True, non_empty=True, description="Loop: after each agent run, this "
              "command line runs in the project root through the user's shell; exit 0 completes the task, "
              "anything else starts the next iteration with the check's output in the prompt."),
        Param("maxIterations", "integer", nullable=True, minimum=1, maximum=1000,
              description="Loop: iterations before the task fails (default 5)."),
        Param("budget", "number", nullable=True, minimum=0.0001,
              description="Loop: US dollars the agent may report spending, in total, before the task fails."),
        Param("iterationTimeout", "number", nullable=True, minimum=0.001, maximum=525600,
              description="Loop: minutes one agent run may take (default daemon.action_timeout_minutes)."),
        Param("checkTimeout", "number", nullable=True, minimum=0.001, maximum=525600,
              description="Loop: minutes the check may take (default 10); a check that runs out fails."),
        Param("isolate", "boolean", nullable=True, description="Run in a git worktree and on a branch of its "
              "own (default: as tasks.isolation says)."),
        Param("base", "string", nullable=True, non_empty=True, description="Isolated: the branch, tag or "
              "commit to start from (default: the project's HEAD)."),
        Param("executor", "string", nullable=True, non_empty=True, description="Where it runs: local, or a "
              "remote executor configured under executors (celery); default: executors.default."),
        description="Queue a task for the agent; with `until`, a loop that runs until the check passes.",
    )
    def jsonrpc_submit(
        self, ctx: CallContext, prompt: str, priority: int, timeout: float | None,
        agent: str | None, metadata: dict[str, Any] | None, source: str, retries: int,
        requireApproval: bool | None, until: str | None, maxIterations: int | None,
        budget: float | None, iterationTimeout: float | None, checkTimeout: float | None,
        isolate: bool | None, base: str | None, executor: str | None,
    ) -> dict[str, Any]:
        problem = source_problem(source)
        if problem:
            raise InvalidParams(f"Invalid parameter 'source': {problem}")
        if metadata and "_env" in metadata:
            raise InvalidParams("Invalid parameter 'metadata': the key '_env' is reserved for the "
                                "daemon (a task's environment comes from a rule or an action's env)")
        taken = sorted(set(metadata or {}) & RESERVED_METADATA)
        if taken:
            raise InvalidParams(f"Invalid parameter 'metadata': {', '.join(taken)} are written by the "
                                "daemon (approvals, a loop's settings and progress, where a bridge answers, "
                                "a rule chain's depth)")
        metadata = dict(metadata or {})
        resume = metadata.pop("resumeSession", None)
        if resume is not None and not isinstance(resume, str):
            raise InvalidParams("Invalid parameter 'metadata': resumeSession must be a string (the agent "
                                f"session to continue), got {type(resume).__name__}")
        loop = loop_from_params(until, maxIterations=maxIterations, budget=budget,
                                iterationTimeout=iterationTimeout, checkTimeout=checkTimeout)
        submitted = self._supervisor.submit(
            prompt, priority=priority, timeout_minutes=timeout, agent=agent,
            metadata=metadata, source=source, retries=retries, require_approval=requireApproval,
            loop=loop, resume_session=resume or None, isolate=isolate, base=base, executor=executor,
        )
        # Answered once the task is on disk: a submitted task is never lost.
        return submitted.addCallback(lambda task: {"taskId": task.id, "state": task.state.value,
                                                   "priority": task.priority})

    @method(
        Param("state", "string", nullable=True, description="Only tasks in this state."),
        Param("limit", "integer", default=20, minimum=0, maximum=1000, description="0 means the default, 20 (as AIWG's daemon reads it)."),
        Param("offset", "integer", default=0, minimum=0),
        Param("source", "string", nullable=True, non_empty=True, description="Only tasks from this source; * "
              "and ? match as in a shell (rule:*, schedule:nightly)."),
        description="Tasks, newest first.",
    )
    def jsonrpc_list(self, ctx: CallContext, state: str | None, limit: int, offset: int,
                     source: str | None) -> list[Any]:
        _check_state(state)
        return [record_json(t) for t in self._supervisor.store.list(state, limit or 20, offset, source)]

    @method(
        Param("state", "string", nullable=True, description="Only tasks in this state."),
        Param("source", "string", nullable=True, non_empty=True, description="Only tasks from this source (a glob)."),
        description="How many tasks task.list pages through with the same filters.",
    )
    def jsonrpc_count(self, ctx: CallContext, state: str | None, source: str | None) -> dict[str, int]:
        _check_state(state)
        return {"count": self._supervisor.store.count(state, source)}

    @method(Param("taskId", "string", required=True, non_empty=True),
            description="Run an ended task again: a new task with the same prompt and settings, "
            "`retryOf` in its metadata naming the old one.")
    def jsonrpc_retry(self, ctx: CallContext, taskId: str) -> Any:
        try:
            submitted = self._actions.retry(taskId)
        except ValueError as exc:
            raise InvalidParams(f"Invalid parameter 'taskId': {exc}", {"taskId": taskId}) from None

        def answered(task: Any) -> dict[str, Any]:
            if task is None:
                raise _unknown_task(taskId)
            return {"taskId": task.id, "state": task.state.value, "retryOf": taskId}
        return submitted.addCallback(answered)

    @method(Param("taskIds", "string[]", required=True, description="The ended tasks to delete."),
            description="Delete ended tasks with their output files; one that has not ended, or "
            "does not exist, is named in `kept` with why.")
    def jsonrpc_remove(self, ctx: CallContext, taskIds: list[str]) -> dict[str, Any]:
        store = self._supervisor.store
        kept = {}
        for task_id in taskIds:
            task = store.get(task_id)
            if task is None or not task.terminal:
                kept[task_id] = "no such task" if task is None else f"it has not ended (it is {task.state})"
        removed = self._supervisor.housekeeping.remove_finished(ids=[i for i in taskIds if i not in kept])
        return {"removed": removed, "kept": kept}

    @method(Param("state", "string", nullable=True, description="Only ended tasks in this state."),
            Param("olderThan", "number", nullable=True, minimum=0, description="Only tasks that ended more "
                  "than this many seconds ago."),
            description="Delete ended tasks (all of them, or those in a state, or ended long enough ago) "
            "with their output files.")
    def jsonrpc_prune(self, ctx: CallContext, state: str | None, olderThan: float | None) -> dict[str, Any]:
        _check_state(state)
        before = None if olderThan is None else self._supervisor.reactor.seconds() - olderThan
        return {"removed": self._supervisor.housekeeping.remove_finished(state=state, finished_before=before)}

    @method(Param("taskId", "string", required=True, non_empty=True), description="One task's full record.")
    def jsonrpc_get(self, ctx: CallContext, taskId: str) -> dict[str, Any]:
        task = self._supervisor.store.get(taskId)
        if task is None:
            raise _unknown_task(taskId)
        record = record_json(task)
        if task.loop is not None:
            record["iterations"] = self._supervisor.loops.iterations(task)
        if task.state.value == "queued" and (waiting := self._supervisor.executors.waiting_reason(task)):
            record["waitingFor"] = waiting
        return record

    @method(
        Param("taskId", "string", required=True, non_empty=True),
        description="Cancel a queued task (it never starts) or a running one (its process group is killed).",
    )
    def jsonrpc_cancel(self, ctx: CallContext, taskId: str) -> dict[str, Any]:
        change = self._supervisor.cancel(taskId)
        if change.task is None:
            raise _unknown_task(taskId)
        return {"cancelled": change.done, "state": change.task.state.value}

    @method(
        Param("taskId", "string", required=True, non_empty=True),
        Param("by", "string", default="ipc", non_empty=True, description="Who approved, for the record."),
        description="Approve a task that awaits approval: it is queued (or, awaiting its merge, merged).",
    )
    def jsonrpc_approve(self, ctx: CallContext, taskId: str, by: str) -> dict[str, Any]:
        merging = self.merge_on_approval(taskId, by)
        if merging is not None:
            return merging
        change = _decided(self._supervisor.approve(taskId, by))
        return {"approved": True, "state": change.task.state.value}

    @method(
        Param("taskId", "string", required=True, non_empty=True),
        Param("reason", "string", nullable=True, description="Why, for the record and the notification."),
        Param("by", "string", default="ipc", non_empty=True, description="Who rejected, for the record."),
        description="Reject a task that awaits approval: it ends, unrun, in state rejected.",
    )
    def jsonrpc_reject(self, ctx: CallContext, taskId: str, reason: str | None, by: str) -> dict[str, Any]:
        kept = self.keep_on_rejection(taskId, by)
        if kept is not None:
            return kept
        change = _decided(self._supervisor.reject(taskId, by, reason))
        return {"rejected": True, "state": change.task.state.value}

    @method(description="Counts of tasks by state.")
    def jsonrpc_stats(self, ctx: CallContext) -> dict[str, int]:
        return self._supervisor.stats()

    @method(
        Param("taskId", "string", required=True, non_empty=True),
        Param("offset", "integer", default=0, minimum=0, description="Byte offset in the output file."),
        Param("limit", "integer", default=65536, minimum=1, maximum=1048576),
        description="A slice of a task's output file, for catching up before following task:output events.",
    )
    def jsonrpc_output(self, ctx: CallContext, taskId: str, offset: int, limit: int) -> dict[str, Any]:
        task = self._supervisor.store.get(taskId)
        if task is None:
            raise _unknown_task(taskId)
        data = b""
        size = 0
        if task.output_path:
            try:
                with open(task.output_path, "rb") as handle:
                    handle.seek(0, 2)
                    size = handle.tell()
                    handle.seek(min(offset, size))
                    data = handle.read(limit)
            except FileNotFoundError:
                pass
            if offset + len(data) < size:
                data = _whole_utf8(data)  # stop before a character cut in two
        return {
            "taskId": task.id,
            "state": task.state.value,
            "offset": offset,
            "nextOffset": offset + len(data),
            "size": size,
            "data": data.decode("utf-8", "replace"),
            "eof": offset + len(data) >= size,
        }


class ChatMethods(Namespace):
    """AIWG's chat.send (a turn is a task, source chat), plus conversations."""

    def __init__(self, chat: ChatService, supervisor: Supervisor) -> None:
        super().__init__()
        self._chat = chat
        self._supervisor = supervisor

    @method(
        Param("message", "string", required=True, non_empty=True),
        Param("conversation", "string", nullable=True, description="Continue this conversation; "
              "without it a new one is started (its id is in the reply)."),
        Param("priority", "integer", nullable=True, minimum=-1_000_000, maximum=1_000_000,
              description="Task priority (default chat.priority, 5)."),
        description="Send a chat message to the agent (queued as a task, source chat). The "
        "answer is the task's result; subscribe to task:output and task:* to follow it.",
    )
    def jsonrpc_send(self, ctx: CallContext, message: str, conversation: str | None,
                     priority: int | None) -> Any:
        if conversation is not None and conversation_id_problem(conversation):
            raise InvalidParams(f"Invalid parameter 'conversation': {conversation_id_problem(conversation)}")
        task = self._chat.send(message, conversation, priority)
        reply = {"taskId": task.id, "state": task.state.value,
                 "conversation": task.metadata["conversation"], "output": self._chat.output}
        return self._supervisor.store.when_durable().addCallback(lambda _: reply)

    @method(Param("conversation", "string", required=True, non_empty=True),
            description="Forget a conversation: its next message starts a new agent session.")
    def jsonrpc_reset(self, ctx: CallContext, conversation: str) -> dict[str, Any]:
        return {"reset": self._chat.reset(conversation), "conversation": conversation}

    @method(Param("conversation", "string", required=True, non_empty=True),
            description="A conversation's turns (oldest first) and the agent session it resumes.")
    def jsonrpc_history(self, ctx: CallContext, conversation: str) -> dict[str, Any]:
        return self._chat.history(conversation)


class MessagingMethods(Namespace):
    def __init__(self, hub: MessagingService) -> None:
        super().__init__()
        self._hub = hub

    @method(description="Each messaging bridge's state (connected, reconnecting with the next "
            "attempt, disabled, error) and counters.")
    def jsonrpc_status(self, ctx: CallContext) -> dict[str, Any]:
        return self._hub.status()

    @method(Param("platform", "string", nullable=True, non_empty=True,
                  description="telegram, slack or discord; without it, every enabled bridge."),
            description="Send a test notification now to every notification target; reports, "
            "per target, whether it arrived.")
    def jsonrpc_test(self, ctx: CallContext, platform: str | None) -> Any:
        hub = self._hub
        if platform is not None and platform not in PLATFORMS:
            raise InvalidParams(f"Invalid parameter 'platform': must be one of {', '.join(PLATFORMS)}, "
                                f"got '{platform}'", {"platform": platform})
        if platform is not None and platform not in hub.adapters:
            why = hub.problems.get(platform) or f"set messaging.{platform}.enabled to true in .aiwg/daemon.json"
            raise RpcError(SUBSYSTEM_UNAVAILABLE, f"the {platform} bridge is not running: {why}",
                           {"platform": platform})
        if not hub.adapters:
            if hub.problems:  # enabled, and could not start
                raise RpcError(SUBSYSTEM_UNAVAILABLE, "no messaging bridge is running: " + "; ".join(
                    f"{name}: {why}" for name, why in sorted(hub.problems.items())), {"problems": hub.problems})
            raise RpcError(SUBSYSTEM_UNAVAILABLE, "no messaging bridge is enabled; enable one under `messaging` "
                           "in .aiwg/daemon.json (see docs/messaging.md)")
        return hub.send_test(platform).addCallback(lambda results: {"results": results})


def build_method_table(daemon: DaemonService, *, bus: EventBus, supervisor: Supervisor | None = None,
                       actions: TaskActions | None = None,
                       chat: ChatService | None = None, automation: AutomationEngine | None = None,
                       scheduler: Scheduler | None = None, messaging: MessagingService | None = None) -> Root:
    """The whole RPC surface, in one place: each namespace given what it serves."""
    table = Root(daemon)
    table.add("daemon", DaemonMethods(daemon))
    table.add("rpc", RpcMethods(table))
    table.add("events", EventsMethods(bus))
    table.add("event", EventMethods(bus))
    if supervisor is not None and actions is not None:
        table.add("task", TaskMethods(supervisor, actions))
        if chat is not None:
            table.add("chat", ChatMethods(chat, supervisor))
    if automation is not None:
        table.add("automation", AutomationMethods(automation))
    if scheduler is not None or automation is not None:
        table.add("schedule", ScheduleMethods(scheduler, automation))
    if messaging is not None:
        table.add("messaging", MessagingMethods(messaging))
    return table
