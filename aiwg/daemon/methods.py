# tests: tests/e2e/test_jsonrpc_socket.py, tests/daemon/test_methods.py
"""The RPC method table: each name, its declared params, and the service call behind it.

Names and parameter names are AIWG's (`ping`, `daemon.status`, `task.submit
{prompt, priority}` …) so AIWG's own client works against this daemon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiwg.core.events import Event, pattern_problem, topic_problem
from aiwg.daemon.logs import iso_utc
from aiwg.daemon.rpc import CallContext, MethodTable, Namespace, Param, method
from aiwg.errors import InvalidParams

if TYPE_CHECKING:
    from aiwg.daemon.root import DaemonService


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

    def __init__(self, daemon: "DaemonService") -> None:
        super().__init__()
        self._daemon = daemon

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
        subscription = self._daemon.bus.subscribe(
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

        events = [e for e in self._daemon.bus.history if topic is None or topic_matches(topic, e.topic)]
        return [event_json(e) for e in events[-limit:]]


class EventMethods(Namespace):
    def __init__(self, daemon: "DaemonService") -> None:
        super().__init__()
        self._daemon = daemon

    @method(
        Param("topic", "string", description="Custom topic, e.g. deployment:complete."),
        Param("payload", "object", default=None, nullable=True),
        Param("source", "string", default="client"),
        Param("type", "string", description="Alias of topic (AIWG's event shape)."),
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
    ) -> dict[str, Any]:
        name = topic if topic is not None else type
        if name is None:
            raise InvalidParams("Missing required parameter: topic")
        problem = topic_problem(name, external=True)
        if problem:
            raise InvalidParams(f"Invalid parameter 'topic': {problem}")
        event = self._daemon.bus.publish(name, payload or {}, source=source[:64] or "client")
        return {"published": True, "topic": event.topic, "seq": event.seq}


def build_method_table(daemon: "DaemonService") -> Root:
    """The whole RPC surface, in one place."""
    table = Root(daemon)
    table.add("daemon", DaemonMethods(daemon))
    table.add("rpc", RpcMethods(table))
    table.add("events", EventsMethods(daemon))
    table.add("event", EventMethods(daemon))
    return table
