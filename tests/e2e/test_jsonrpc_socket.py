"""JSON-RPC 2.0 conformance of the real daemon, over its real Unix socket, in raw bytes.

One daemon serves the whole module (started and stopped through the real CLI).
Every request is written with the stdlib `socket` module so that framing is
tested byte for byte; every read is bounded, so a server bug fails a test
instead of hanging it. Every reply line must be strict RFC 8259 JSON in UTF-8.

Sources of the expectations: the JSON-RPC 2.0 specification (§4-§7, the §7
examples verbatim where they apply), docs/shared reference "outside-world" §4,
and the AIWG Node daemon's wire protocol (newline-delimited JSON,
`Method not found: <name>`).

After each test the daemon must still answer a `ping` on a new connection,
with the same pid as at the start of the test.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import Project, wait_for

pytestmark = pytest.mark.e2e

#: Upper bound on any single wait for a reply line.
READ_TIMEOUT = 5.0
#: `daemon.ipc.max_line_bytes` default (aiwg/core/daemon.schema.json); the module's
#: daemon runs without a config file, so this is its limit.
MAX_LINE = 1024 * 1024

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

_ABSENT = object()


# -- wire helpers -------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_loads(raw: bytes) -> Any:
    """Parse one reply line as RFC 8259 JSON in strict UTF-8 (no NaN/Infinity)."""
    return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)


def encode(message: Any) -> bytes:
    try:
        return json.dumps(message, ensure_ascii=False).encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate: only its escape can be sent
        return json.dumps(message).encode("ascii") + b"\n"


def request(method: Any, params: Any = _ABSENT, id: Any = _ABSENT) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not _ABSENT:
        message["params"] = params
    if id is not _ABSENT:
        message["id"] = id
    return message


class Conn:
    """A raw client connection: bytes out, newline-delimited JSON in, bounded reads."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(READ_TIMEOUT)
        self.sock.connect(str(path))
        self.buffer = b""
        self._ids = itertools.count(1)

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # -- output

    def send(self, data: bytes) -> None:
        self.sock.settimeout(READ_TIMEOUT)
        self.sock.sendall(data)

    def send_json(self, message: Any) -> None:
        self.send(encode(message))

    # -- input

    def read_line(self, timeout: float = READ_TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no complete reply line within {timeout}s; partial: {self.buffer[:300]!r}"
                )
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise AssertionError(
                    "the server closed the connection instead of replying; "
                    f"partial: {self.buffer[:300]!r}"
                )
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def read(self, timeout: float = READ_TIMEOUT) -> Any:
        line = self.read_line(timeout)
        assert not line.endswith(b"\r"), f"reply line ends with CR: {line[:200]!r}"
        try:
            return strict_loads(line)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            raise AssertionError(f"reply is not strict JSON ({exc}): {line[:300]!r}") from None

    def request(self, method: Any, params: Any = _ABSENT, id: Any = _ABSENT) -> Any:
        """Send one request (a fresh int id unless given) and return the next line."""
        if id is _ABSENT:
            id = next(self._ids)
        self.send_json(request(method, params, id))
        return self.read()

    def call(self, method: str, params: Any = _ABSENT) -> Any:
        """A request that must succeed: its result."""
        req_id = f"call-{next(self._ids)}"
        return assert_result(self.request(method, params, id=req_id), req_id)

    def assert_next_is_ping(self, marker: str) -> None:
        """Send a ping; the very next line must be its reply (so nothing was sent before)."""
        self.send_json(request("ping", id=marker))
        reply = self.read()
        assert isinstance(reply, dict) and reply.get("id") == marker, (
            f"expected the reply to ping {marker!r} as the next line, got {reply!r}"
        )
        assert reply["result"]["pong"] is True

    def assert_closed_by_server(self, timeout: float = READ_TIMEOUT) -> None:
        """The server closes the connection, sending no further complete line."""
        deadline = time.monotonic() + timeout
        while True:
            assert b"\n" not in self.buffer, f"unexpected extra reply: {self.buffer[:300]!r}"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the server did not close the connection within {timeout}s")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return
            if not chunk:
                return
            self.buffer += chunk


def same_id(actual: Any, expected: Any) -> bool:
    """Equal value AND equal JSON type (`"1"` is not `1`, `1.0` is not `1`)."""
    if expected is None:
        return actual is None
    return type(actual) is type(expected) and actual == expected


def assert_result(reply: Any, req_id: Any) -> Any:
    assert isinstance(reply, dict), f"expected a response object, got {reply!r}"
    assert set(reply) == {"jsonrpc", "result", "id"}, f"bad success response: {reply!r}"
    assert reply["jsonrpc"] == "2.0", reply
    assert same_id(reply["id"], req_id), f"id {reply['id']!r} is not {req_id!r}"
    return reply["result"]


def assert_error(reply: Any, code: int, req_id: Any) -> str:
    """Check an error response's exact shape, code and id; return its message."""
    assert isinstance(reply, dict), f"expected a single response object, got {reply!r}"
    assert set(reply) == {"jsonrpc", "error", "id"}, f"bad error response: {reply!r}"
    assert reply["jsonrpc"] == "2.0", reply
    error = reply["error"]
    assert isinstance(error, dict), reply
    assert {"code", "message"} <= set(error) <= {"code", "message", "data"}, reply
    assert type(error["code"]) is int and error["code"] == code, (
        f"expected code {code}, got {reply!r}"
    )
    assert isinstance(error["message"], str) and error["message"], reply
    assert same_id(reply["id"], req_id), f"id {reply['id']!r} is not {req_id!r}: {reply!r}"
    return error["message"]


PARSE_ERROR_REPLY = {
    "jsonrpc": "2.0",
    "error": {"code": PARSE_ERROR, "message": "Parse error"},
    "id": None,
}


# -- fixtures -----------------------------------------------------------------


def _socket_of(project: Project) -> Path:
    """Where the daemon listens: the pointer file names it when it had to move."""
    try:
        pointed = project.paths.socket_pointer.read_text().strip()
    except OSError:
        pointed = ""
    return Path(pointed) if pointed else project.paths.bind_socket()


@pytest.fixture(scope="module")
def rpc_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """One daemon, started through the real CLI, shared by the whole module."""
    base = tmp_path_factory.mktemp("jsonrpc")
    root = base / "proj"
    root.mkdir()
    runtime = base / "run"
    runtime.mkdir(mode=0o700)
    project = Project(root, runtime)
    project.start()
    try:
        yield project
    finally:
        if project.running():
            stopped = project.aiwg("daemon", "stop", "--timeout", "30")
            if project.running():
                project.kill_everything()
                pytest.fail(
                    "the module's daemon did not stop and had to be killed\n"
                    f"stdout: {stopped.stdout}\nstderr: {stopped.stderr}"
                )


@pytest.fixture(scope="module")
def sock_path(rpc_daemon: Project) -> Path:
    path = _socket_of(rpc_daemon)
    assert path.exists(), f"no socket at {path}"
    return path


@pytest.fixture(autouse=True)
def daemon_survives(rpc_daemon: Project, sock_path: Path) -> Iterator[None]:
    """Whatever a test sent, the same daemon still answers on a new connection."""
    pid = rpc_daemon.pid()
    yield
    assert rpc_daemon.running(), "the daemon died during the test"
    with Conn(sock_path) as conn:
        result = assert_result(conn.request("ping", id="still-alive"), "still-alive")
    assert result["pong"] is True
    assert result["pid"] == pid, "the daemon was replaced during the test"


# -- parse errors -------------------------------------------------------------

PARSE_ERROR_CASES = [
    pytest.param(
        b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]', id="spec-invalid-json"
    ),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":1', id="truncated-object"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":1,}', id="trailing-comma"),
    pytest.param(b"{'jsonrpc':'2.0','method':'ping','id':1}", id="single-quotes"),
    pytest.param(b"ping", id="bare-word"),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"ping","id":1} {"jsonrpc":"2.0","method":"ping","id":2}',
        id="two-values-on-one-line",
    ),
    pytest.param(b"[" * 100_000, id="unterminated-deeply-nested-array"),
    # Not JSON (RFC 8259 has no NaN/Infinity), though Python's json module accepts them.
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":NaN}', id="NaN-id"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":Infinity}', id="Infinity-id"),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"events.recent","params":{"limit":-Infinity},"id":1}',
        id="minus-Infinity-param",
    ),
]

INVALID_UTF8_CASES = [
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":"\x80"}', id="lone-continuation-byte"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":"\xff"}', id="byte-ff"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":"\xe2\x9c"}', id="truncated-sequence"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":"\xc0\xaf"}', id="overlong-encoding"),
    pytest.param(b'{"jsonrpc":"2.0","method":"h\xe9llo","id":1}', id="latin1-in-method"),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"ping","id":"\xed\xa0\x80"}', id="utf8-encoded-surrogate-in-id"
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"\xed\xa0\x80","id":1}', id="utf8-encoded-surrogate-in-method"
    ),
]


@pytest.mark.parametrize("line", PARSE_ERROR_CASES + INVALID_UTF8_CASES)
def test_parse_error_is_one_reply_with_null_id(sock_path: Path, line: bytes) -> None:
    with Conn(sock_path) as conn:
        conn.send(line + b"\n")
        reply = conn.read()
        assert reply == PARSE_ERROR_REPLY, f"expected a parse error, got {reply!r}"
        conn.assert_next_is_ping("after-parse-error")


def test_blank_lines_are_ignored(sock_path: Path) -> None:
    with Conn(sock_path) as conn:
        conn.send(b"\n\n   \n\t\n\r\n" + encode(request("ping", id=1)) + b"\n \n")
        assert_result(conn.read(), 1)
        conn.send(b"\n")
        conn.assert_next_is_ping("after-blank-lines")


@pytest.mark.parametrize(
    "data, ids",
    [
        pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":1}\r\n', [1], id="one-request"),
        pytest.param(
            b'{"jsonrpc":"2.0","method":"ping","id":1}\r\n'
            b'{"jsonrpc":"2.0","method":"ping","id":2}\r\n',
            [1, 2],
            id="two-requests-one-write",
        ),
        pytest.param(
            b'\r\n\r\n{"jsonrpc":"2.0","method":"ping","id":3}\r\n', [3], id="crlf-blank-lines"
        ),
        pytest.param(b'[{"jsonrpc":"2.0","method":"ping","id":4}]\r\n', [[4]], id="batch"),
    ],
)
def test_crlf_line_endings_are_accepted(sock_path: Path, data: bytes, ids: list[Any]) -> None:
    with Conn(sock_path) as conn:
        conn.send(data)
        for expected in ids:
            reply = conn.read()
            if isinstance(expected, list):
                assert isinstance(reply, list) and len(reply) == len(expected), reply
                for item, req_id in zip(reply, expected):
                    assert_result(item, req_id)
            else:
                assert_result(reply, expected)
        conn.assert_next_is_ping("after-crlf")


# -- invalid requests ---------------------------------------------------------

INVALID_REQUEST_CASES = [
    pytest.param(b'{"method":"ping","id":1}', 1, id="jsonrpc-missing"),
    pytest.param(b'{"method":"ping"}', None, id="jsonrpc-missing-no-id"),
    pytest.param(b'{"jsonrpc":"1.0","method":"ping","id":1}', 1, id="jsonrpc-1.0"),
    pytest.param(b'{"jsonrpc":2.0,"method":"ping","id":1}', 1, id="jsonrpc-number-2.0"),
    pytest.param(b'{"jsonrpc":"2","method":"ping","id":1}', 1, id="jsonrpc-string-2"),
    pytest.param(b'{"jsonrpc":null,"method":"ping","id":1}', 1, id="jsonrpc-null"),
    pytest.param(b'{"jsonrpc":"2.0","id":1}', 1, id="method-missing"),
    pytest.param(
        b'{"jsonrpc": "2.0", "method": 1, "params": "bar"}', None, id="spec-method-number"
    ),
    pytest.param(b'{"jsonrpc":"2.0","method":null,"id":1}', 1, id="method-null"),
    pytest.param(b'{"jsonrpc":"2.0","method":["ping"],"id":1}', 1, id="method-array"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","params":"bar","id":1}', 1, id="params-string"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","params":5,"id":1}', 1, id="params-number"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","params":true,"id":1}', 1, id="params-true"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","params":null,"id":1}', 1, id="params-null"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":{"bad":"type"}}', None, id="id-object"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":[1]}', None, id="id-array"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":true}', None, id="id-true"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":false}', None, id="id-false"),
    pytest.param(b"null", None, id="request-null"),
    pytest.param(b"1", None, id="request-number"),
    pytest.param(b'"ping"', None, id="request-string"),
    pytest.param(b"true", None, id="request-true"),
    pytest.param(b"{}", None, id="request-empty-object"),
]


@pytest.mark.parametrize("line, req_id", INVALID_REQUEST_CASES)
def test_invalid_request(sock_path: Path, line: bytes, req_id: Any) -> None:
    with Conn(sock_path) as conn:
        conn.send(line + b"\n")
        message = assert_error(conn.read(), INVALID_REQUEST, req_id)
        assert message.startswith("Invalid Request"), message
        conn.assert_next_is_ping("after-invalid-request")


# -- methods ------------------------------------------------------------------

UNKNOWN_METHODS = [
    "foobar",
    "rpc.foo",
    "rpc.",
    "__dir__",
    "__class__",
    "daemon.",
    "daemon.status.x",
    "daemon",
    "events",
    "daemon._daemon",
    "daemon.__init__",
    "jsonrpc_ping",
    ".ping",
    "ping.",
    "PING",
    "ping ",
    " ping",
    "ping\u0000",
    "",
]


@pytest.mark.parametrize("name", UNKNOWN_METHODS, ids=[repr(n) for n in UNKNOWN_METHODS])
def test_method_not_found(sock_path: Path, name: str) -> None:
    with Conn(sock_path) as conn:
        message = assert_error(conn.request(name, id=42), METHOD_NOT_FOUND, 42)
        assert message == f"Method not found: {name}"


@pytest.mark.parametrize(
    "params", [_ABSENT, {}, []], ids=["no-params", "empty-object", "empty-array"]
)
def test_rpc_discover_lists_methods_with_params(sock_path: Path, params: Any) -> None:
    with Conn(sock_path) as conn:
        result = assert_result(conn.request("rpc.discover", params, id="d"), "d")
    assert set(result) == {"methods"}
    methods = result["methods"]
    names = [m["name"] for m in methods]
    assert names == sorted(set(names)), "names must be unique and sorted"
    assert {
        "ping",
        "daemon.status",
        "daemon.reload",
        "daemon.stop",
        "events.subscribe",
        "events.recent",
        "event.emit",
    } <= set(names)
    for entry in methods:
        assert {"name", "description", "params"} <= set(entry), entry
        assert "__" not in entry["name"] and not entry["name"].startswith("jsonrpc_")
        for param in entry["params"]:
            assert {"name", "type", "required"} <= set(param), entry
    by_name = {m["name"]: m for m in methods}
    for bare in ("ping", "daemon.status", "daemon.reload", "daemon.stop"):
        assert by_name[bare]["params"] == []
    emit = [(p["name"], p["type"]) for p in by_name["event.emit"]["params"]]
    assert emit == [
        ("topic", "string"),
        ("payload", "object"),
        ("source", "string"),
        ("type", "string"),
        ("taskId", "string"),
    ]
    for name in ("automation.status", "automation.enable", "automation.disable", "schedule.list",
                 "schedule.run", "chat.send", "chat.reset", "chat.history"):
        assert name in by_name, name
    subscribe = by_name["events.subscribe"]["params"]
    assert [(p["name"], p["type"], p["required"]) for p in subscribe] == [
        ("topics", "string[]", False)
    ]
    recent = [(p["name"], p["type"]) for p in by_name["events.recent"]["params"]]
    assert recent == [("limit", "integer"), ("topic", "string")]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


INVALID_PARAMS_CASES = [
    pytest.param("ping", {"x": 1}, "'x'", id="unknown-name"),
    pytest.param("event.emit", {"Topic": "a:b"}, "'Topic'", id="names-are-case-sensitive"),
    pytest.param("event.emit", {"topic": 5}, "'topic'", id="emit-topic-number"),
    pytest.param("event.emit", {"topic": ""}, "topic", id="emit-topic-empty"),
    pytest.param("event.emit", {}, "topic", id="emit-topic-missing"),
    pytest.param("event.emit", {"payload": {"a": 1}}, "topic", id="emit-only-payload"),
    pytest.param(
        "event.emit", {"topic": "a:b", "payload": [1]}, "'payload'", id="emit-payload-array"
    ),
    pytest.param("event.emit", {"topic": "a:b", "source": 7}, "'source'", id="emit-source-number"),
    pytest.param("event.emit", {"topic": "bad topic"}, "'topic'", id="emit-topic-with-space"),
    pytest.param("events.recent", {"limit": "5"}, "'limit'", id="recent-limit-string"),
    pytest.param("events.recent", {"limit": True}, "'limit'", id="recent-limit-boolean"),
    pytest.param("events.recent", {"limit": 1.5}, "'limit'", id="recent-limit-float"),
    pytest.param("events.recent", {"limit": 0}, "'limit'", id="recent-limit-below-minimum"),
    pytest.param("events.recent", {"limit": 1001}, "'limit'", id="recent-limit-above-maximum"),
    pytest.param(
        "events.subscribe", {"topics": "deployment:*"}, "'topics'", id="subscribe-topics-string"
    ),
    pytest.param("events.subscribe", {"topics": []}, "'topics'", id="subscribe-topics-empty"),
    pytest.param("events.subscribe", {"topics": [5]}, "'topics'", id="subscribe-topics-number"),
    pytest.param("events.subscribe", {"topics": ["a b"]}, "'topics'", id="subscribe-bad-pattern"),
    pytest.param("task.submit", {"prompt": "fix \ud800 it"}, "'prompt': contains a lone UTF-16 surrogate",
                 id="submit-prompt-lone-surrogate"),
    pytest.param("event.emit", {"topic": "a:b", "payload": {"k\udc80": 1}}, "'payload': contains a lone",
                 id="emit-payload-lone-surrogate"),
    pytest.param("task.submit", {"prompt": "x", "metadata": _nested(70)}, "'metadata': nested deeper than 64",
                 id="submit-metadata-too-deep"),
    pytest.param("ping", [1], "positional", id="ping-too-many-positional"),
    pytest.param("events.recent", [1, "a:*", 3], "positional", id="recent-too-many-positional"),
    pytest.param("events.recent", ["5"], "'limit'", id="recent-positional-wrong-type"),
]


@pytest.mark.parametrize("method, params, mentions", INVALID_PARAMS_CASES)
def test_invalid_params_names_the_parameter(
    sock_path: Path, method: str, params: Any, mentions: str
) -> None:
    with Conn(sock_path) as conn:
        message = assert_error(conn.request(method, params, id=9), INVALID_PARAMS, 9)
    assert mentions in message, message


def test_positional_params(sock_path: Path) -> None:
    with Conn(sock_path) as conn:
        assert conn.call("ping", [])["pong"] is True
        assert conn.call("events.subscribe", [["positional:*"]]) == {"subscribed": ["positional:*"]}
        for topic in ("positional:one", "positional:two", "positional:three"):
            published = conn.call("event.emit", [topic])
            assert published["published"] is True and published["topic"] == topic
            note = conn.read()  # the subscription's event notification
            assert note["method"] == "event" and note["params"]["topic"] == topic
        recent = conn.call("events.recent", [2, "positional:*"])
        assert [e["topic"] for e in recent] == ["positional:two", "positional:three"]
        assert all(e["payload"] == {} for e in recent)
        assert conn.call("events.recent", [5, "positional:none"]) == []


# -- notifications and ids ----------------------------------------------------

NOTIFICATION_CASES = [
    pytest.param(request("ping"), id="ping"),
    pytest.param(request("ping", []), id="ping-empty-params"),
    pytest.param(request("no.such.method"), id="unknown-method"),
    pytest.param(request("rpc.foo"), id="rpc-reserved"),
    pytest.param(request("ping", {"x": 1}), id="unknown-param"),
    pytest.param(request("ping", [1, 2]), id="too-many-positional"),
    pytest.param(request("event.emit", {"topic": 5}), id="wrong-type"),
    pytest.param(request("event.emit", {}), id="missing-required"),
    pytest.param(request("event.emit", {"topic": "task:completed"}), id="reserved-topic"),
    pytest.param(request("rpc.discover"), id="rpc-discover"),
]


@pytest.mark.parametrize("notification", NOTIFICATION_CASES)
def test_notifications_get_no_reply(sock_path: Path, notification: dict[str, Any]) -> None:
    assert "id" not in notification
    with Conn(sock_path) as conn:
        conn.send_json(notification)
        conn.assert_next_is_ping("after-notification")
        # and again with both in a single write
        conn.send(encode(notification) + encode(request("ping", id="same-write")))
        assert_result(conn.read(), "same-write")


def test_notification_is_executed(sock_path: Path) -> None:
    with Conn(sock_path) as conn:
        conn.send_json(request("event.emit", {"topic": "notified:yes", "payload": {"k": 1}}))
        recent = conn.call("events.recent", {"topic": "notified:yes"})
    assert [(e["topic"], e["payload"]) for e in recent] == [("notified:yes", {"k": 1})]


def test_null_id_is_a_request_not_a_notification(sock_path: Path) -> None:
    with Conn(sock_path) as conn:
        assert assert_result(conn.request("ping", id=None), None)["pong"] is True
        assert_error(conn.request("no.such.method", id=None), METHOD_NOT_FOUND, None)
        assert_error(conn.request("ping", {"x": 1}, id=None), INVALID_PARAMS, None)


ID_VALUES = [
    pytest.param(0, id="int-zero"),
    pytest.param(1, id="int-1"),
    pytest.param("1", id="string-1"),
    pytest.param(-7, id="negative"),
    pytest.param(1.5, id="float-1.5"),
    pytest.param(-2.25, id="negative-float"),
    pytest.param(2**70, id="int-beyond-64-bit"),
    pytest.param(9007199254740993, id="int-beyond-double-precision"),
    pytest.param("", id="empty-string"),
    pytest.param("héllo ✓ 日本 🚀", id="unicode-string"),
    pytest.param('quote" backslash\\ newline\n tab\t', id="string-with-escapes"),
]


@pytest.mark.parametrize("req_id", ID_VALUES)
def test_id_is_echoed_with_its_type(sock_path: Path, req_id: Any) -> None:
    with Conn(sock_path) as conn:
        assert_result(conn.request("ping", id=req_id), req_id)
        assert_error(conn.request("no.such.method", id=req_id), METHOD_NOT_FOUND, req_id)
        assert_error(conn.request("ping", {"x": 1}, id=req_id), INVALID_PARAMS, req_id)


def test_string_and_int_ids_stay_distinct(sock_path: Path) -> None:
    with Conn(sock_path) as conn:
        conn.send(encode(request("ping", id=1)) + encode(request("ping", id="1")))
        first, second = conn.read(), conn.read()
    assert {(type(r["id"]), r["id"]) for r in (first, second)} == {(int, 1), (str, "1")}


# -- batches ------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"[]", b"[ ]", b" [\t] "], ids=["[]", "[ ]", "spaced"])
def test_empty_batch_is_one_error_object(sock_path: Path, data: bytes) -> None:
    with Conn(sock_path) as conn:
        conn.send(data + b"\n")
        reply = conn.read()
        assert not isinstance(reply, list), f"an empty batch must not get an array: {reply!r}"
        assert assert_error(reply, INVALID_REQUEST, None).startswith("Invalid Request")
        conn.assert_next_is_ping("after-empty-batch")


@pytest.mark.parametrize(
    "data, count",
    [
        pytest.param(b"[1]", 1, id="[1]"),
        pytest.param(b"[1,2,3]", 3, id="[1,2,3]"),
        pytest.param(b"[null]", 1, id="[null]"),
        pytest.param(b'["ping", true, {}]', 3, id="string-bool-empty-object"),
        pytest.param(b'[[{"jsonrpc":"2.0","method":"ping","id":1}]]', 1, id="nested-batch"),
        pytest.param(b"[[]]", 1, id="[[]]"),
    ],
)
def test_batch_of_invalid_members(sock_path: Path, data: bytes, count: int) -> None:
    with Conn(sock_path) as conn:
        conn.send(data + b"\n")
        reply = conn.read()
        assert isinstance(reply, list) and len(reply) == count, reply
        for item in reply:
            assert_error(item, INVALID_REQUEST, None)
        conn.assert_next_is_ping("after-invalid-batch")


def test_mixed_batch(sock_path: Path) -> None:
    """Spec §7 "rpc call Batch", with this daemon's methods."""
    batch = [
        request("ping", id="1"),
        request("ping", [7]),  # a notification (even an invalid one): no reply
        request("events.recent", {"limit": 1, "topic": "nothing:here"}, id="2"),
        {"foo": "boo"},
        request("foo.get", {"name": "myself"}, id="5"),
        request("get_data", id="9"),
        request("no.such.method"),  # notification: no reply
        request("ping", id=1),
        request("ping", {"x": 1}, id=7),
        {"jsonrpc": "2.0", "method": 1, "params": "bar"},
    ]
    with Conn(sock_path) as conn:
        conn.send_json(batch)
        reply = conn.read()
        conn.assert_next_is_ping("after-mixed-batch")
    assert isinstance(reply, list) and len(reply) == 8, reply
    by_id: dict[Any, list[Any]] = {}
    for item in reply:
        by_id.setdefault((type(item["id"]).__name__, item["id"]), []).append(item)
    assert set(by_id) == {
        ("str", "1"),
        ("str", "2"),
        ("NoneType", None),
        ("str", "5"),
        ("str", "9"),
        ("int", 1),
        ("int", 7),
    }
    assert assert_result(by_id[("str", "1")][0], "1")["pong"] is True
    assert assert_result(by_id[("str", "2")][0], "2") == []
    assert len(by_id[("NoneType", None)]) == 2  # {"foo":"boo"} and the method:1 request
    for item in by_id[("NoneType", None)]:
        assert_error(item, INVALID_REQUEST, None)
    message_5 = assert_error(by_id[("str", "5")][0], METHOD_NOT_FOUND, "5")
    assert message_5 == "Method not found: foo.get"
    message_9 = assert_error(by_id[("str", "9")][0], METHOD_NOT_FOUND, "9")
    assert message_9 == "Method not found: get_data"
    assert assert_result(by_id[("int", 1)][0], 1)["pong"] is True
    assert "'x'" in assert_error(by_id[("int", 7)][0], INVALID_PARAMS, 7)


def test_batch_of_only_notifications_gets_nothing(sock_path: Path) -> None:
    batch = [
        request("ping"),
        request("no.such.method", [1, 2, 4]),
        request("ping", {"x": 1}),
        request("event.emit", {"topic": "batch-notified:x"}),
    ]
    with Conn(sock_path) as conn:
        conn.send_json(batch)
        conn.assert_next_is_ping("after-notification-batch")
        recent = conn.call("events.recent", {"topic": "batch-notified:x"})
    assert [e["topic"] for e in recent] == ["batch-notified:x"]


def test_invalid_json_batch_is_one_parse_error(sock_path: Path) -> None:
    data = (
        b"["
        + b'{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},'
        + b'{"jsonrpc": "2.0", "method"'
        + b"]\n"
    )
    with Conn(sock_path) as conn:
        conn.send(data)
        assert conn.read() == PARSE_ERROR_REPLY
        conn.assert_next_is_ping("after-bad-batch")


def test_large_batch(sock_path: Path) -> None:
    batch = [request("ping", id=i) for i in range(500)]
    with Conn(sock_path) as conn:
        conn.send_json(batch)
        reply = conn.read()
    assert isinstance(reply, list) and sorted(r["id"] for r in reply) == list(range(500))
    for item in reply:
        assert_result(item, item["id"])


# -- framing ------------------------------------------------------------------


def test_pipelined_requests_in_one_write(sock_path: Path) -> None:
    with Conn(sock_path) as conn:
        conn.send(
            encode(request("ping", id="a"))
            + encode(request("no.such.method", id="b"))
            + encode([request("ping", id="c")])
        )
        replies = [conn.read() for _ in range(3)]
        conn.assert_next_is_ping("after-pipeline")
    assert_result(replies[0], "a")
    assert_error(replies[1], METHOD_NOT_FOUND, "b")
    assert isinstance(replies[2], list) and len(replies[2]) == 1
    assert_result(replies[2][0], "c")


def test_request_written_byte_by_byte(sock_path: Path) -> None:
    data = encode(request("ping", id="slow"))
    with Conn(sock_path) as conn:
        for i in range(len(data)):
            conn.send(data[i : i + 1])
            time.sleep(0.001)  # let the server see each byte as a separate read
        assert_result(conn.read(), "slow")
        conn.assert_next_is_ping("after-byte-by-byte")


def test_multibyte_utf8_split_across_writes(sock_path: Path) -> None:
    text = "héllo ✓ 日本 🚀"
    data = encode(request("event.emit", {"topic": "utf8:split", "payload": {"msg": text}}, id="u"))
    start = data.index("h".encode() + "é".encode())
    end = data.index("🚀".encode()) + len("🚀".encode())
    with Conn(sock_path) as conn:
        conn.send(data[:start])
        time.sleep(0.002)
        for i in range(start, end):  # every multi-byte character is split
            conn.send(data[i : i + 1])
            time.sleep(0.002)
        conn.send(data[end:])
        assert assert_result(conn.read(), "u")["topic"] == "utf8:split"
        recent = conn.call("events.recent", {"topic": "utf8:split"})
    assert [e["payload"] for e in recent] == [{"msg": text}]


def _oversized(total: int, terminated: bool) -> bytes:
    head = b'{"jsonrpc":"2.0","method":"ping","id":1,"params":{"pad":"'
    tail = b'"}}'
    line = head + b"x" * (total - len(head) - len(tail)) + tail
    assert len(line) == total
    return line + (b"\n" if terminated else b"")


@pytest.mark.parametrize(
    "total, terminated",
    [
        pytest.param(int(1.2 * MAX_LINE), False, id="1.2MiB-no-newline"),
        pytest.param(int(1.2 * MAX_LINE), True, id="1.2MiB-with-newline"),
        pytest.param(MAX_LINE + 1, True, id="max-plus-one-with-newline"),
        pytest.param(MAX_LINE + 1, False, id="max-plus-one-no-newline"),
    ],
)
def test_line_longer_than_max_is_refused_and_closed(
    sock_path: Path, total: int, terminated: bool
) -> None:
    with Conn(sock_path) as conn:
        try:
            conn.send(_oversized(total, terminated))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close while we are still writing
        message = assert_error(conn.read(), INVALID_REQUEST, None)
        assert message.startswith("Invalid Request") and str(MAX_LINE) in message, message
        conn.assert_closed_by_server()
    with Conn(sock_path) as fresh:
        fresh.assert_next_is_ping("after-oversize")


def test_line_of_exactly_max_length_is_accepted(sock_path: Path) -> None:
    with Conn(sock_path) as conn:
        conn.send(_oversized(MAX_LINE, True))
        message = assert_error(conn.read(), INVALID_PARAMS, 1)
        assert "'pad'" in message
        conn.assert_next_is_ping("after-max-line")


# -- events -------------------------------------------------------------------


def test_subscriber_receives_matching_events_only(sock_path: Path) -> None:
    with Conn(sock_path) as sub, Conn(sock_path) as pub:
        subscribed = sub.request("events.subscribe", {"topics": ["deployment:*"]}, id="sub")
        assert assert_result(subscribed, "sub") == {"subscribed": ["deployment:*"]}
        other = pub.call("event.emit", {"topic": "build:done", "payload": {"n": 1}})
        assert other["published"] is True
        payload = {"env": "prod", "version": "1.2.3", "note": "✓"}
        done = pub.call(
            "event.emit", {"topic": "deployment:complete", "payload": payload, "source": "ci"}
        )
        assert set(done) == {"published", "topic", "seq"}
        assert done["published"] is True and done["topic"] == "deployment:complete"
        assert type(done["seq"]) is int and done["seq"] > other["seq"]

        # build:done was published first: had it leaked, it would be the first line.
        note = sub.read()
        assert set(note) == {"jsonrpc", "method", "params"}, note
        assert note["jsonrpc"] == "2.0" and note["method"] == "event"
        params = note["params"]
        assert set(params) == {"topic", "payload", "source", "timestamp", "seq"}, params
        assert params["topic"] == "deployment:complete"
        assert params["payload"] == payload
        assert params["source"] == "ci"
        assert params["seq"] == done["seq"]
        assert ISO_UTC.match(params["timestamp"]), params["timestamp"]
        sub.assert_next_is_ping("after-event")

        # after unsubscribing, nothing more arrives
        assert sub.call("events.unsubscribe") == {"unsubscribed": 1}
        pub.call("event.emit", {"topic": "deployment:again"})
        sub.assert_next_is_ping("after-unsubscribe")


def test_subscribe_sent_as_notification_still_subscribes(sock_path: Path) -> None:
    with Conn(sock_path) as sub, Conn(sock_path) as pub:
        sub.send_json(request("events.subscribe", {"topics": ["quiet:*"]}))
        sub.assert_next_is_ping("subscribed-quietly")
        pub.call("event.emit", {"topic": "quiet:one"})
        note = sub.read()
        assert note["method"] == "event" and note["params"]["topic"] == "quiet:one"


def test_subscriber_that_disconnected_does_not_hurt(sock_path: Path) -> None:
    with Conn(sock_path) as pub:
        with Conn(sock_path) as sub:
            sub.call("events.subscribe", {"topics": ["gone:*"]})
        for i in range(20):
            pub.call("event.emit", {"topic": f"gone:{i}"})
        pub.assert_next_is_ping("after-gone-subscriber")


RESERVED_TOPICS = [
    "task:completed",
    "daemon:started",
    "file:changed",
    "schedule:tick",
    "health:degraded",
    "automation:fired",
    "chat:message",
    "messaging:sent",
]


@pytest.mark.parametrize("key", ["topic", "type"])
@pytest.mark.parametrize("topic", RESERVED_TOPICS)
def test_emit_into_reserved_namespace_is_refused(sock_path: Path, topic: str, key: str) -> None:
    with Conn(sock_path) as conn:
        before = conn.call("events.recent", {"limit": 1000, "topic": topic})
        reply = conn.request("event.emit", {key: topic, "payload": {"forged": True}}, id="r")
        message = assert_error(reply, INVALID_PARAMS, "r")
        assert "'topic'" in message and "reserved" in message, message
        after = conn.call("events.recent", {"limit": 1000, "topic": topic})
    assert after == before


# -- load and abrupt clients --------------------------------------------------


def test_many_concurrent_connections(sock_path: Path) -> None:
    clients, rounds = 50, 20
    barrier = threading.Barrier(clients, timeout=READ_TIMEOUT)
    failures: list[str] = []
    pids: set[int] = set()

    def client(n: int) -> None:
        try:
            with Conn(sock_path) as conn:
                barrier.wait()  # all 50 connections are open at once
                for i in range(rounds):
                    req_id = f"{n}:{i}"
                    result = assert_result(conn.request("ping", id=req_id), req_id)
                    pids.add(result["pid"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(f"client {n}: {exc!r}")

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=3 * READ_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "some clients never finished"
    assert failures == []
    assert len(pids) == 1


def _client_count(conn: Conn) -> int:
    return conn.call("daemon.status")["subsystems"]["ipc"]["clients"]


@pytest.mark.parametrize(
    "partial",
    [
        pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":1', id="mid-request"),
        pytest.param(
            b'{"jsonrpc":"2.0","method":"event.emit","params":{"topic":"x', id="mid-params"
        ),
        pytest.param(b'[{"jsonrpc":"2.0","method":"ping","id":1},{"jsonrpc"', id="mid-batch"),
        pytest.param(
            encode([request("rpc.discover", id=i) for i in range(500)]),
            id="before-reading-batch-reply",
        ),
        pytest.param(
            b"".join(encode(request("rpc.discover", id=i)) for i in range(500)),
            id="before-reading-pipelined-replies",
        ),
    ],
)
def test_client_disconnecting_abruptly(sock_path: Path, partial: bytes) -> None:
    with Conn(sock_path) as abrupt:
        abrupt.send(partial)
    with Conn(sock_path) as conn:
        conn.assert_next_is_ping("after-abrupt-client")
        # the daemon notices the departed client; only this connection is left
        wait_for(lambda: _client_count(conn) == 1, timeout=READ_TIMEOUT)


# -- values that cannot be sent back as JSON ----------------------------------


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b'{"jsonrpc":"2.0","method":"ping","id":1e400}', id="id-overflowing-double"),
        pytest.param(
            b'{"jsonrpc":"2.0","method":"ping","id":"\\ud800"}', id="id-lone-surrogate-escape"
        ),
        pytest.param(
            b'{"jsonrpc":"2.0","method":"\\udfff","id":1}', id="method-lone-surrogate-escape"
        ),
    ],
)
def test_unrepresentable_request_values_still_get_a_json_reply(
    sock_path: Path, line: bytes
) -> None:
    """Legal JSON text whose value cannot be echoed as-is: any strict-JSON reply, not silence."""
    with Conn(sock_path) as conn:
        conn.send(line + b"\n")
        reply = conn.read()
        assert isinstance(reply, dict) and reply.get("jsonrpc") == "2.0", reply
        conn.assert_next_is_ping("after-unrepresentable")


@pytest.mark.parametrize(
    "topic, payload",
    [
        pytest.param("poison:surrogate", b'{"v":"\\ud800"}', id="lone-surrogate-escape"),
        pytest.param("poison:overflow", b'{"v":1e400}', id="number-overflowing-double"),
    ],
)
def test_event_payload_is_refused_or_served_back_as_json(
    sock_path: Path, topic: str, payload: bytes
) -> None:
    """An accepted event must stay readable: by events.recent and by subscribers."""
    with Conn(sock_path) as sub, Conn(sock_path) as conn:
        sub.call("events.subscribe", {"topics": [topic]})
        conn.send(
            b'{"jsonrpc":"2.0","method":"event.emit","id":"p","params":{"topic":"'
            + topic.encode()
            + b'","payload":'
            + payload
            + b"}}\n"
        )
        reply = conn.read()
        if "error" in reply:
            assert reply["error"]["code"] in (PARSE_ERROR, INVALID_PARAMS), reply
            sub.assert_next_is_ping("refused-nothing-delivered")
            return
        assert_result(reply, "p")
        recent = conn.request("events.recent", {"topic": topic}, id="read-back")
        assert "result" in recent, f"the accepted event cannot be read back: {recent!r}"
        assert [e["topic"] for e in recent["result"]] == [topic]
        note = sub.read()
        assert note["method"] == "event" and note["params"]["topic"] == topic, note
