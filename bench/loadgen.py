"""The client side of bench/run.py. The same code drives the daemon and the echo floor.

Every request is the same bytes, REQUEST. The daemon answers it with a
JSON-RPC result line; the echo server sends the line back. Either way the
client waits for one newline-terminated line per request, so the two servers
see exactly the same client behaviour.

Two clients:

* `sequential()`: one blocking Unix socket, one request at a time, timed with
  perf_counter_ns. The least client overhead Python can do; used for the
  single-connection latency test.
* `load_worker()`: run in a child process; an asyncio event loop (plain
  Protocol callbacks, no streams) with N connections, each sending its next
  request as soon as the previous reply arrives (closed loop). Latencies are
  kept only for requests sent after the warm-up and answered before the end
  of the measurement window.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from typing import Any

REQUEST = b'{"jsonrpc":"2.0","method":"ping","id":1}\n'


def check_reply(reply: bytes) -> str | None:
    """None if `reply` is a good answer to REQUEST from either server, else why not."""
    if reply == REQUEST:
        return None  # the echo server
    try:
        message = json.loads(reply)
    except ValueError:
        return f"not JSON: {reply[:80]!r}"
    if message.get("id") != 1 or "error" in message:
        return f"unexpected reply: {reply[:120]!r}"
    if not isinstance(message.get("result"), dict) or message["result"].get("pong") is not True:
        return f"not a pong: {reply[:120]!r}"
    return None


def _cpu_seconds() -> float:
    return time.process_time()


# -- one connection, blocking ------------------------------------------------


def sequential(path: str, count: int, warmup: int) -> dict[str, Any]:
    """`count` sequential round trips (after `warmup` untimed ones) over one connection.

    The socket is blocking without a timeout on purpose: with a timeout CPython
    polls before every recv, which would add a syscall to each sample. A dead
    server still ends the loop (recv returns b"" at EOF).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    send = sock.sendall
    recv = sock.recv
    request = REQUEST

    def once() -> bytes:
        send(request)
        data = recv(65536)
        while not data.endswith(b"\n"):
            more = recv(65536)
            if not more:
                raise ConnectionError("server closed the connection")
            data += more
        return data

    try:
        first = once()
        problem = check_reply(first)
        if problem:
            raise RuntimeError(problem)
        for _ in range(warmup):
            once()
        clock = time.perf_counter_ns
        samples = [0] * count
        bad = 0
        started = clock()
        for i in range(count):
            t0 = clock()
            reply = once()
            samples[i] = clock() - t0
            if b'"error"' in reply:
                bad += 1
        elapsed = clock() - started
        last = reply
    finally:
        sock.close()
    problem = check_reply(last)
    if problem:
        raise RuntimeError(problem)
    return {"samples_ns": samples, "bad": bad, "elapsed_ns": elapsed, "first_reply": first.decode()}


# -- many connections, asyncio, in a child process ------------------------------


class _Run:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.window_start = 0.0
        self.window_end = 0.0
        self.latencies: list[float] = []
        self.bad = 0
        self.lost = 0
        self.busy = 0
        self.idle: asyncio.Future[None] = loop.create_future()
        self.cpu_start = 0.0
        self.cpu_end = 0.0

    def stopped_one(self) -> None:
        self.busy -= 1
        if self.busy == 0 and not self.idle.done():
            self.idle.set_result(None)


class _Connection(asyncio.Protocol):
    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: Any = None
        self.buffer = b""
        self.sent_at = 0.0
        self.busy = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send(self) -> None:
        self.busy = True
        self.sent_at = time.perf_counter()
        self.transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.buffer:
            data = self.buffer + data
        if not data.endswith(b"\n"):
            self.buffer = data  # a partial reply; one request is outstanding at a time
            return
        self.buffer = b""
        run = self.run
        if self.sent_at >= run.window_start and now <= run.window_end:
            run.latencies.append(now - self.sent_at)
            if b'"error"' in data:
                run.bad += 1
        if now < run.window_end:
            self.send()
        else:
            self.busy = False
            run.stopped_one()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:  # the server dropped us mid-run
            self.run.lost += 1
            self.busy = False
            self.run.stopped_one()


async def _load(pipe: Any, path: str, connections: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    run = _Run(loop)
    protocols: list[_Connection] = []
    for _ in range(connections):
        _, protocol = await loop.create_unix_connection(lambda: _Connection(run), path)
        protocols.append(protocol)
    pipe.send("ready")
    start_at, warmup, duration = pipe.recv()  # perf_counter is CLOCK_MONOTONIC: shared
    run.window_start = start_at + warmup
    run.window_end = run.window_start + duration

    def begin() -> None:
        run.busy = len(protocols)
        for protocol in protocols:
            protocol.send()

    def mark_cpu(attr: str) -> None:
        setattr(run, attr, _cpu_seconds())

    now = time.perf_counter()
    loop.call_later(max(0.0, start_at - now), begin)
    loop.call_later(max(0.0, run.window_start - now), mark_cpu, "cpu_start")
    loop.call_later(max(0.0, run.window_end - now), mark_cpu, "cpu_end")
    await asyncio.wait_for(run.idle, timeout=duration + warmup + 30)
    for protocol in protocols:
        protocol.transport.close()
    await asyncio.sleep(0)
    return {
        "latencies": run.latencies,
        "bad": run.bad,
        "lost": run.lost,
        "cpu_seconds": run.cpu_end - run.cpu_start,
    }


def load_worker(pipe: Any, path: str, connections: int) -> None:
    """Child-process entry point: connect, report ready, run one window, send the results."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's clean-up handler
    try:
        result = asyncio.run(_load(pipe, path, connections))
    except BaseException as exc:  # report, don't hang the parent
        pipe.send({"error": f"{type(exc).__name__}: {exc}"})
        return
    pipe.send(result)
