"""The JSON-RPC protocol over an in-memory transport: framing, dispatch, async replies."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from aiwg.daemon.ipc.server import IpcFactory, JsonRpcProtocol
from aiwg.daemon.ipc.rpc import CallContext, MethodTable, Namespace, Param, method
from aiwg.errors import RpcError


class Demo(Namespace):
    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred] = []

    @method(Param("a", "integer", required=True), Param("b", "integer", default=0), description="Add.")
    def jsonrpc_add(self, ctx: CallContext, a: int, b: int) -> int:
        return a + b

    @method(Param("text", "string"), Param("data", "object"), Param("tags", "string[]"),
            description="Take text and nested data.")
    def jsonrpc_keep(self, ctx: CallContext, text: str | None, data: dict | None, tags: list | None) -> bool:
        return True

    @method(description="Reply later.")
    def jsonrpc_later(self, ctx: CallContext) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append(d)
        return d

    @method(description="Fail like a bug.")
    def jsonrpc_crash(self, ctx: CallContext) -> None:
        raise KeyError("secret internals")

    @method(description="Fail on purpose.")
    def jsonrpc_refuse(self, ctx: CallContext) -> None:
        raise RpcError(-32001, "not cancellable", {"taskId": "t1"})

    @method(description="Unserialisable result.")
    def jsonrpc_odd(self, ctx: CallContext) -> object:
        return object()

    @method(description="A coroutine handler.")
    async def jsonrpc_coro(self, ctx: CallContext) -> str:
        return "done"

    def jsonrpc_undeclared(self, ctx: CallContext) -> str:
        return "must not be callable"


def connect(max_line: int = 1024 * 1024) -> tuple[JsonRpcProtocol, StringTransport, Demo]:
    table = MethodTable()
    demo = Demo()
    table.add("demo", demo)
    factory = IpcFactory(table, max_line)
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, demo


def replies(transport: StringTransport) -> list[Any]:
    data = transport.value()
    transport.clear()
    return [json.loads(line) for line in data.splitlines()]


def test_named_and_positional_params() -> None:
    protocol, transport, _ = connect()
    protocol.dataReceived(b'{"jsonrpc":"2.0","method":"demo.add","params":{"a":2,"b":3},"id":1}\n')
    protocol.dataReceived(b'{"jsonrpc":"2.0","method":"demo.add","params":[4],"id":"x"}\n')
    assert replies(transport) == [
        {"jsonrpc": "2.0", "result": 5, "id": 1},
        {"jsonrpc": "2.0", "result": 4, "id": "x"},
    ]


def test_invalid_params_name_the_parameter() -> None:
    protocol, transport, _ = connect()
    for params in ('{"b":1}', '{"a":"1"}', '{"a":1,"c":2}', "[1,2,3]", '{"a":true}'):
        protocol.dataReceived(
            b'{"jsonrpc":"2.0","method":"demo.add","params":' + params.encode() + b',"id":1}\n'
        )
    messages = [r["error"]["message"] for r in replies(transport)]
    assert messages == [
        "Missing required parameter: a",
        "Invalid parameter 'a': must be an integer, got \"1\"",
        "Unknown parameter 'c' (accepted: a, b)",
        "Invalid params: expected at most 2 positional parameter(s), got 3",
        "Invalid parameter 'a': must be an integer, got true",
    ]


def test_lone_surrogates_and_deep_nesting_are_invalid_params() -> None:
    """JSON lets a string hold an escaped lone surrogate, which no UTF-8 file or
    database can take; and nesting deep enough to overflow a later encode must be
    refused up front, naming the parameter, with the request's id."""
    protocol, transport, _ = connect()
    deep, allowed = ('{"a":' * n + "1" + "}" * n for n in (65, 64))
    for params in ('{"text":"x\\ud800y"}', '{"data":{"k\\udc80":1}}', '{"data":{"k":["\\udfff"]}}',
                   '{"tags":["ok","\\ud83d"]}', '{"data":' + deep + '}',
                   '{"text":"pair \\ud83d\\ude00 ok","data":' + allowed + '}'):
        protocol.dataReceived(b'{"jsonrpc":"2.0","method":"demo.keep","params":' + params.encode() + b',"id":7}\n')
    answers = replies(transport)
    assert [a["id"] for a in answers] == [7] * 6
    assert [a.get("error", {}).get("message") for a in answers] == [
        "Invalid parameter 'text': contains a lone UTF-16 surrogate (\\ud800), which is not valid Unicode text",
        "Invalid parameter 'data': contains a lone UTF-16 surrogate (\\udc80), which is not valid Unicode text",
        "Invalid parameter 'data': contains a lone UTF-16 surrogate (\\udfff), which is not valid Unicode text",
        "Invalid parameter 'tags': contains a lone UTF-16 surrogate (\\ud83d), which is not valid Unicode text",
        "Invalid parameter 'data': nested deeper than 64 levels",
        None,  # a surrogate pair is one character; 64 levels are allowed
    ]
    assert answers[-1]["result"] is True


def test_async_replies_may_come_out_of_order() -> None:
    protocol, transport, demo = connect()
    protocol.dataReceived(
        b'{"jsonrpc":"2.0","method":"demo.later","id":1}\n'
        b'{"jsonrpc":"2.0","method":"demo.add","params":{"a":1},"id":2}\n'
    )
    assert replies(transport) == [{"jsonrpc": "2.0", "result": 1, "id": 2}]
    demo.pending[0].callback({"ok": True})
    assert replies(transport) == [{"jsonrpc": "2.0", "result": {"ok": True}, "id": 1}]


def test_async_batch_waits_for_every_member() -> None:
    protocol, transport, demo = connect()
    protocol.dataReceived(
        b'[{"jsonrpc":"2.0","method":"demo.later","id":1},'
        b'{"jsonrpc":"2.0","method":"demo.add","params":{"a":1},"id":2},'
        b'{"jsonrpc":"2.0","method":"demo.later"}]\n'
    )
    assert transport.value() == b""
    demo.pending[0].callback("a")
    demo.pending[1].callback("ignored: notification")
    assert replies(transport) == [[
        {"jsonrpc": "2.0", "result": "a", "id": 1},
        {"jsonrpc": "2.0", "result": 1, "id": 2},
    ]]


def test_internal_errors_do_not_leak_and_are_logged(caplog: Any) -> None:
    protocol, transport, _ = connect()
    from twisted.logger import globalLogPublisher

    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        protocol.dataReceived(b'{"jsonrpc":"2.0","method":"demo.crash","id":7}\n')
    finally:
        globalLogPublisher.removeObserver(seen.append)
    [reply] = replies(transport)
    assert reply["id"] == 7 and reply["error"]["code"] == -32603
    assert "secret" not in json.dumps(reply) and "Traceback" not in json.dumps(reply)
    assert "incident" in reply["error"]["message"]
    assert any(e.get("log_failure") is not None and "demo.crash" == e.get("method") for e in seen)
    # Kept in memory as well, for when the log cannot be written (a full disk).
    [kept] = list(protocol.factory.incidents)
    assert f"incident {kept['incident']};" in reply["error"]["message"]
    assert kept["method"] == "demo.crash" and kept["error"] == "KeyError" and kept["at"]
    assert "secret" not in json.dumps(list(protocol.factory.incidents))


def test_application_errors_carry_code_and_data() -> None:
    protocol, transport, _ = connect()
    protocol.dataReceived(b'{"jsonrpc":"2.0","method":"demo.refuse","id":1}\n')
    assert replies(transport) == [{
        "jsonrpc": "2.0", "id": 1,
        "error": {"code": -32001, "message": "not cancellable", "data": {"taskId": "t1"}},
    }]


def test_unserialisable_result_is_an_internal_error() -> None:
    protocol, transport, _ = connect()
    protocol.dataReceived(b'{"jsonrpc":"2.0","method":"demo.odd","id":1}\n')
    [reply] = replies(transport)
    assert reply["error"]["code"] == -32603 and reply["id"] == 1


def test_coroutine_handlers() -> None:
    protocol, transport, _ = connect()
    protocol.dataReceived(b'{"jsonrpc":"2.0","method":"demo.coro","id":1}\n')
    assert replies(transport) == [{"jsonrpc": "2.0", "result": "done", "id": 1}]


def test_only_declared_methods_are_published() -> None:
    protocol, transport, _ = connect()
    protocol.dataReceived(b'{"jsonrpc":"2.0","method":"demo.undeclared","id":1}\n')
    protocol.dataReceived(b'{"jsonrpc":"2.0","method":"demo.__dir__","id":2}\n')
    assert [r["error"]["code"] for r in replies(transport)] == [-32601, -32601]


def test_line_too_long_gets_an_error_then_the_connection_closes() -> None:
    protocol, transport, _ = connect(max_line=1024)
    protocol.dataReceived(b'{"jsonrpc":"2.0","method":"demo.add","params":{"a":1},"id":1}\n')
    protocol.dataReceived(b"x" * 2000)
    [ok, error] = replies(transport)
    assert ok["result"] == 1
    assert error["error"]["code"] == -32600 and error["id"] is None
    assert "1024 bytes" in error["error"]["message"]
    assert transport.disconnecting


def test_the_limit_counts_the_message_not_its_line_ending() -> None:
    """`\r\n` is accepted as a line end: its \r is no more part of the message than
    the \n, so a message of exactly the limit fits with either, and one byte more
    does not."""
    request = b'{"jsonrpc":"2.0","method":"demo.add","params":{"a":1},"id":1}'
    exact = request + b" " * (100 - len(request))
    for ending in (b"\n", b"\r\n"):
        protocol, transport, _ = connect(max_line=100)
        protocol.dataReceived(exact + ending)
        assert replies(transport) == [{"jsonrpc": "2.0", "result": 1, "id": 1}]
        protocol.dataReceived(exact + b" " + ending)
        [error] = replies(transport)
        assert "exceeds 100 bytes" in error["error"]["message"] and transport.disconnecting


def test_a_new_limit_applies_to_open_connections() -> None:
    protocol, transport, _ = connect(max_line=100)
    protocol.factory.set_max_line_bytes(200)  # what a reload does
    request = b'{"jsonrpc":"2.0","method":"demo.add","params":{"a":1},"id":1}'
    protocol.dataReceived(request + b" " * (150 - len(request)) + b"\n")
    assert replies(transport) == [{"jsonrpc": "2.0", "result": 1, "id": 1}]
    protocol.dataReceived(b"x" * 201)
    [error] = replies(transport)
    assert "exceeds 200 bytes" in error["error"]["message"] and transport.disconnecting


def test_split_and_pipelined_input() -> None:
    protocol, transport, _ = connect()
    message = b'{"jsonrpc":"2.0","method":"demo.add","params":{"a":1,"b":1},"id":1}\n'
    for byte in message:
        protocol.dataReceived(bytes([byte]))
    protocol.dataReceived(message * 3)
    assert [r["result"] for r in replies(transport)] == [2, 2, 2, 2]


def test_discover_lists_declared_methods_with_params() -> None:
    table = MethodTable()
    table.add("demo", Demo())
    names = {m["name"]: m for m in table.discover()}
    assert "demo.undeclared" not in names
    assert names["demo.add"]["params"] == [
        {"name": "a", "type": "integer", "required": True},
        {"name": "b", "type": "integer", "required": False, "default": 0},
    ]
