# tests: tests/daemon/test_ipc_protocol.py, tests/e2e/test_jsonrpc_socket.py
"""JSON-RPC 2.0 over newline-delimited JSON on the daemon's Unix socket.

The protocol is spec-exact where txjsonrpc-ng's stock protocol is not:
notifications are never answered (not even with errors), batches follow §6
(an empty batch is one error, a batch of notifications gets nothing), ids are
echoed with their type, invalid ids and params are -32600, internal errors are
logged with an incident id and never leak a traceback, and a line longer than
the configured limit gets an error before the connection is closed.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from collections import deque
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer
from twisted.python.failure import Failure

from aiwg import compat
from aiwg.core import strictjson
from aiwg.core.timefmt import iso_utc
from aiwg.daemon.ipc.rpc import CallContext, MethodTable
from aiwg.daemon.ipc.unixport import OwnedSocketListener, OwnedSocketPort
from aiwg.errors import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, RpcError

#: A client whose unsent replies or notifications exceed this is disconnected,
#: so a stuck client cannot make the daemon buffer without bound.
MAX_PENDING_OUTPUT = 8 * 1024 * 1024
#: How many internal errors `daemon status` keeps (by incident id).
MAX_INCIDENTS_KEPT = 20

# ASCII output: a lone surrogate that arrived as a legal \ud800 escape goes back
# out as an escape, not as bytes that are not UTF-8. No NaN/Infinity: not JSON.
_dumps = compat.compact_dumps()


@implementer(IPushProducer)
class _Backlog:
    """What a transport holds unsent, counted through Twisted's public flow control
    (it pauses a streaming producer once its buffer is full): used only where the
    transport's own queue cannot be read (compat transport-queue)."""

    def __init__(self) -> None:
        self.paused = False
        self.bytes = 0

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused, self.bytes = False, 0

    def stopProducing(self) -> None:
        self.paused = False


_scan = strictjson.decoder.scan_once
_WHITESPACE = " \t\n\r"


def _parse(line: bytes) -> Any:
    """Strict parse: valid UTF-8 (no encoded surrogates), JSON without NaN/Infinity,
    nothing after the value but whitespace."""
    text = line.decode("utf-8").strip(_WHITESPACE)
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError("no JSON value") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return value


def _error(code: int, message: str, req_id: Any, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": req_id}


#: Exact types only: JSON gives no subclasses, and bool (an int subclass) is not an id.
_ID_TYPES = frozenset({str, int, float, type(None)})


class JsonRpcProtocol(Protocol):
    """One client connection. Its own framing (a message a line): the bytes of an
    unfinished message are its own to measure, so one that grows past the limit
    is answered at once, and a read holding many messages costs one split."""

    log = Logger()
    _buffer = b""

    def __init__(self, factory: "IpcFactory") -> None:
        self.factory = factory
        self.context = CallContext(connection=self)
        self.subscriptions: list[Any] = []
        self.backlog: _Backlog | None = None  # only where the transport queue cannot be read
        self.connected_at = 0.0

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        if not compat.TRANSPORT_QUEUE.works():
            self.backlog = _Backlog()
            self.transport.registerProducer(self.backlog, True)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.connections.discard(self)
        for subscription in self.subscriptions:
            subscription.cancel()
        self.subscriptions = []

    # -- framing -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        elif data.find(b"\n") == len(data) - 1:  # one whole message, the usual read: no split
            if not self.transport.disconnecting:
                self.lineReceived(data[:-1])
            return
        if b"\n" in data:
            *lines, rest = data.split(b"\n")
            for line in lines:
                if self.transport.disconnecting:
                    return  # closed by an earlier message (one too long): the rest is not read
                self.lineReceived(line)
        else:
            rest = data
        # Room for a CRLF's \r: an unfinished message past the limit that does not
        # end in one can only be too long, whatever comes next.
        if len(rest) > self.factory.max_line_bytes and not (len(rest) == self.factory.max_line_bytes + 1
                                                            and rest.endswith(b"\r")):
            if not self.transport.disconnecting:
                self.lineLengthExceeded(rest)
            return
        self._buffer = rest

    def lineReceived(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.factory.max_line_bytes:
            self.lineLengthExceeded(line)
            return
        if not line or line.isspace():
            return
        try:
            message = _parse(line)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            self._send(_error(PARSE_ERROR, "Parse error", None))
            return
        if type(message) is list:
            self._handle_batch(message)
            return
        reply = self._handle(message)
        if type(reply) is dict:
            self._send(reply)
        elif reply is not None:
            reply.addCallback(self._send_if_any)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._send(
            _error(
                INVALID_REQUEST,
                f"Invalid Request: message exceeds {self.factory.max_line_bytes} bytes; closing connection",
                None,
            )
        )
        self.transport.loseConnection()

    # -- requests ----------------------------------------------------------

    def _handle_batch(self, batch: list[Any]) -> None:
        if not batch:
            self._send(_error(INVALID_REQUEST, "Invalid Request: empty batch", None))
            return
        replies = [self._handle(item) for item in batch]
        if any(isinstance(r, Deferred) for r in replies):
            waiting = [r if isinstance(r, Deferred) else _fired(r) for r in replies]
            gatherResults(waiting).addCallback(self._send_batch)
        else:
            self._send_batch(replies)

    def _send_batch(self, replies: list[Any]) -> None:
        answered = [r for r in replies if r is not None]
        if answered:
            self._send(answered)

    def _handle(self, message: Any) -> Any:
        """The reply to one request object: a dict, None (notification), or a Deferred."""
        if type(message) is not dict:
            return _error(INVALID_REQUEST, "Invalid Request: expected an object", None)
        is_notification = "id" not in message
        req_id = message.get("id")
        if type(req_id) not in _ID_TYPES:
            return _error(
                INVALID_REQUEST, "Invalid Request: id must be a string, a number or null", None
            )
        if message.get("jsonrpc") != "2.0":
            return _error(INVALID_REQUEST, "Invalid Request: missing jsonrpc 2.0", req_id)
        name = message.get("method")
        if type(name) is not str:
            return _error(INVALID_REQUEST, "Invalid Request: missing method", req_id)
        params = message.get("params")
        if params is None and "params" in message or params is not None and type(params) not in (dict, list):
            return _error(
                INVALID_REQUEST, "Invalid Request: params must be an object or an array", req_id
            )
        try:
            result = self.factory.methods.call(name, params, self.context)
        except Exception as exc:
            return None if is_notification else self._failure_reply(exc, name, req_id)
        if type(result) is not dict and isinstance(result, Deferred):
            if is_notification:
                result.addErrback(self._log_notification_failure, name)
                return result.addCallback(lambda _: None)
            return result.addCallbacks(
                lambda value: {"jsonrpc": "2.0", "result": value, "id": req_id},
                lambda failure: self._failure_reply(failure.value, name, req_id, failure),
            )
        if is_notification:
            return None
        return {"jsonrpc": "2.0", "result": result, "id": req_id}

    def _failure_reply(
        self, exc: BaseException, name: str, req_id: Any, failure: Any = None
    ) -> dict[str, Any]:
        if isinstance(exc, RpcError):
            return _error(exc.code, exc.message, req_id, exc.data)
        incident = secrets.token_hex(4)
        if failure is not None:
            self.log.failure(
                "internal error {incident} in {method}", failure, incident=incident, method=name
            )
        else:
            self.log.failure("internal error {incident} in {method}", incident=incident, method=name)
        # Kept in memory too (daemon status shows them): the log may be what failed.
        self.factory.incidents.append({"incident": incident, "method": name,
                                       "error": type(exc).__name__,  # the details are for the log only
                                       "at": iso_utc(self.factory.clock())})
        return _error(
            INTERNAL_ERROR,
            f"Internal error (incident {incident}; see the daemon log)",
            req_id,
        )

    def _log_notification_failure(self, failure: Any, name: str) -> None:
        if not failure.check(RpcError):
            self.log.failure("notification {method} failed", failure, method=name)

    # -- output ------------------------------------------------------------

    def _send_if_any(self, reply: Any) -> None:
        if reply is not None:
            self._send(reply)

    def _send(self, reply: Any) -> None:
        try:
            data = (_dumps(reply) + "\n").encode("ascii")
        except (TypeError, ValueError, RecursionError):
            req_id = reply.get("id") if isinstance(reply, dict) else None
            self.log.failure("unserialisable reply for id {id!r}", id=req_id)
            data = _dumps(_error(INTERNAL_ERROR, "Internal error: result not serialisable", req_id))
            data = data.encode("ascii") + b"\n"
        self.write_now(data)

    def write_now(self, data: bytes) -> None:
        """Write at once when nothing is queued: Twisted would otherwise wait for
        the next reactor turn to send a reply the client is waiting for. A client
        that sends but never reads is cut off before its replies pile up."""
        transport = self.transport
        if transport is None or getattr(transport, "disconnected", False):
            return
        queued = pending = compat.queued_output(transport)
        if pending is None:
            backlog = self.backlog
            if backlog is not None and backlog.paused:
                backlog.bytes += len(data)
            pending = backlog.bytes if backlog is not None else 0
        if pending > MAX_PENDING_OUTPUT:
            self.log.warn(
                "closing a connection that does not read its replies ({pending} bytes unsent)",
                pending=pending,
            )
            for subscription in self.subscriptions:
                subscription.cancel()
            self.subscriptions = []
            transport.abortConnection()
            return
        sock = getattr(transport, "socket", None)
        if (
            sock is not None
            and queued == 0  # read through the transport-queue hook: nothing would be overtaken
            and not transport.disconnecting
            and transport.producer is None
        ):
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return  # the connection is gone; connectionLost follows
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

    def notify(self, method_name: str, params: Any) -> None:
        """A server-to-client notification (no id), e.g. a subscribed event."""
        transport = self.transport
        if transport is None or transport.disconnecting:
            return
        try:
            data = _dumps({"jsonrpc": "2.0", "method": method_name, "params": params})
        except (TypeError, ValueError, RecursionError):
            self.log.failure("unserialisable {method} notification dropped", method=method_name)
            return
        self.write_now(data.encode("ascii") + b"\n")


def _fired(value: Any) -> Deferred:
    d: Deferred = Deferred()
    d.callback(value)
    return d


class IpcFactory(ServerFactory):
    noisy = False

    def __init__(self, methods: MethodTable, max_line_bytes: int, clock: Any = None) -> None:
        self.methods = methods
        self.clock = clock or time.time  # the reactor's seconds, in the daemon
        self.max_line_bytes = max_line_bytes
        self.connections: set[JsonRpcProtocol] = set()
        #: The latest internal errors (-32603), findable by their incident id.
        self.incidents: deque[dict[str, str]] = deque(maxlen=MAX_INCIDENTS_KEPT)

    def buildProtocol(self, addr: Any) -> JsonRpcProtocol:
        return JsonRpcProtocol(self)

    def set_max_line_bytes(self, value: int) -> None:
        self.max_line_bytes = value  # open connections read it from here


class IpcServer(Service):
    """The listening socket: bound synchronously at start, so that when
    `aiwg daemon start` returns, `ping` already answers. (A plain Service that
    keeps its port: Twisted's StreamServerEndpointService would need its private
    `_waitingForPort` and `_raiseSynchronously` for both.)

    A socket file deleted while the daemon runs (a cleaner of /tmp, an
    `rm -r .aiwg/daemon`) would leave it unreachable until a restart: it is
    bound again within SOCKET_CHECK_SECONDS; open connections carry on."""

    name = "ipc"
    log = Logger()

    def __init__(
        self, *, reactor: Any, socket_path: Path, pointer_file: Path | None, factory: IpcFactory
    ) -> None:
        self.socket_path = socket_path
        self._pointer_file = pointer_file
        self._reactor = reactor
        self.problem: str | None = None
        self.rebinds = 0
        self.endpoint = UNIXServerEndpoint(OwnedSocketListener(reactor), str(socket_path), backlog=128, mode=0o600)
        self.factory = factory
        self.port: Any = None

    @property
    def clients(self) -> int:
        return len(self.factory.connections)

    def privilegedStartService(self) -> None:
        directory = self.socket_path.parent
        _private_dir(directory)
        # We hold the project lock, so any file here is a dead daemon's socket.
        try:
            if stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        Service.privilegedStartService(self)
        self.port = self._reactor_listen()  # raises here, so that start fails with the reason
        if self._pointer_file is not None:
            self._pointer_file.write_text(f"{self.socket_path}\n")
        self.log.info("listening on {path}", path=str(self.socket_path))

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        Service.startService(self)  # a deleted socket is bound again by check_socket (SelfRepair)

    def _port(self) -> OwnedSocketPort | None:
        return self.port if isinstance(self.port, OwnedSocketPort) else None

    def check_socket(self) -> None:
        """Bind again if our socket file is gone; report (and leave alone) a file
        that someone else put in its place."""
        port = self._port()
        if port is None:
            return
        if port.owns_path():
            self._report(self._restore_pointer())
            return
        if os.path.lexists(self.socket_path):
            self._report(f"socket {self.socket_path} was replaced by another file; clients cannot "
                         "reach this daemon: remove that file (it is bound again), or restart the daemon")
            return
        try:
            _private_dir(self.socket_path.parent)
            new = self._reactor_listen()
        except Exception as exc:
            self._report(f"socket {self.socket_path} was deleted and cannot be bound again: {exc}")
            return
        self.port = new
        port.stopListening()  # it no longer owns the path: it leaves the new socket alone
        self.rebinds += 1
        self.log.warn("socket {path} was deleted while the daemon ran; listening on it again",
                      path=str(self.socket_path))
        self._report(self._restore_pointer())

    def _restore_pointer(self) -> str | None:
        """Write the pointer file (long project paths) if it is missing or wrong; a problem, or None."""
        if self._pointer_file is None:
            return None
        wanted = f"{self.socket_path}\n"
        try:
            if not self._pointer_file.exists() or self._pointer_file.read_text() != wanted:
                self._pointer_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._pointer_file.write_text(wanted)
        except OSError as exc:
            return f"cannot write {self._pointer_file}, which tells clients where the socket is: {exc}"
        return None

    def _report(self, problem: str | None) -> None:
        if problem is not None and problem != self.problem:
            self.log.error("{problem}", problem=problem)
        self.problem = problem

    def _reactor_listen(self) -> OwnedSocketPort:
        outcome: list[Any] = []
        self.endpoint.listen(self.factory).addBoth(outcome.append)  # a Unix endpoint listens at once
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]

    def health_issues(self) -> list[str]:
        return [self.problem] if self.problem else []

    def abort_start(self) -> None:
        """A later service failed to start: close the socket now, not on a reactor turn."""
        port = self.port
        if port is not None and getattr(port, "socket", None) is not None:
            port.stopReading()
            port.socket.close()
            port.connected = False
        for path in (self.socket_path, self._pointer_file):
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def apply_config(self, config: Any) -> None:
        self.factory.set_max_line_bytes(config.daemon.ipc.max_line_bytes)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"clients": self.clients, "socket": str(self.socket_path)}
        if self.factory.incidents:
            status["incidents"] = list(self.factory.incidents)
        return status

    def stopService(self) -> Deferred:
        Service.stopService(self)
        port, self.port = self.port, None
        d = maybeDeferred(port.stopListening) if port is not None else succeed(None)

        def close_clients(passthrough: Any) -> Any:
            for connection in list(self.factory.connections):
                connection.transport.loseConnection()
            if self._pointer_file is not None:
                try:
                    self._pointer_file.unlink()
                except FileNotFoundError:
                    pass
            return passthrough

        return d.addBoth(close_clients)


def _private_dir(directory: Path) -> None:
    """Make sure the socket's directory exists, is ours and is 0700."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.stat(directory)
    if info.st_uid != os.getuid():
        raise RuntimeError(
            f"socket directory {directory} belongs to uid {info.st_uid}, not to us; "
            "refusing to listen there"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)
