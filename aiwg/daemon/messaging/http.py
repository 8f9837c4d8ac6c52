# tests: tests/daemon/test_messaging_http.py
"""JSON over HTTP for the Slack and Discord bridges, on treq, with rate limits obeyed.

`JsonHttp.request` makes one call and turns every outcome into an answer or an
ApiError (status, text, `retry_after`, whether retrying can help), with every
secret scrubbed from the text: tokens ride in URLs (webhooks) and headers.
`JsonHttp.retrying` repeats a call the server answered 429, after the delay the
server gave (its own timer: the reactor or a test's Clock), a few times at most.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Iterable, Mapping, TypeVar

from twisted.internet import task
from twisted.internet.defer import succeed

from aiwg.core.agents import redact

T = TypeVar("T")
#: How often one call is retried after 429s before its caller is told.
MAX_RATE_LIMIT_RETRIES = 5


def quiet_client(reactor: Any, per_host: int = 2) -> tuple[Any, Any]:
    """A treq client with its own keep-alive pool. (The "Starting factory" line its
    connection factories log at every connection is dropped by logs.is_noise.)"""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = per_host
    return pool, HTTPClient(Agent(reactor, pool=pool))


class ApiError(Exception):
    def __init__(self, message: str, *, status: int = 0, retry_after: float | None = None,
                 permanent: bool = False, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.permanent = permanent
        self.code = code


class Answer:
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def header_float(self, name: str) -> float | None:
        try:
            return float(self.headers[name.lower()])
        except (KeyError, ValueError):
            return None


class JsonHttp:
    def __init__(self, *, reactor: Any, secrets: Iterable[str], http: Any = None, clock: Any = None) -> None:
        self._pool: Any = None
        if http is None:
            self._pool, http = quiet_client(reactor)
        self._http = http
        self.clock = clock or reactor
        self._secrets = [s for s in secrets if s and len(s) >= 4]
        self.rate_limited = 0

    def redact(self, text: str) -> str:
        return redact(text, self._secrets, "[secret]")

    def close(self) -> Any:
        return self._pool.closeCachedConnections() if self._pool is not None else succeed(None)

    async def request(self, method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None,
                      timeout: float = 15.0) -> Answer:
        raw_headers = {k.encode(): [v.encode()] for k, v in (headers or {}).items()}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            raw_headers[b"Content-Type"] = [b"application/json; charset=utf-8"]
        try:
            response = await self._http.request(method, url, data=data, headers=raw_headers, timeout=timeout)
            content = await response.content()
        except Exception as exc:  # refused, reset, timed out: never with the URL
            raise ApiError(self.redact(f"{type(exc).__name__}: {exc}")) from None
        found = {k.decode().lower(): v[-1].decode("latin-1") for k, v in response.headers.getAllRawHeaders()}
        return Answer(response.code, found, content)

    async def retrying(self, attempt: Callable[[], Awaitable[T]], on_wait: Callable[[float], Any] | None = None) -> T:
        for tries in range(MAX_RATE_LIMIT_RETRIES + 1):
            try:
                return await attempt()
            except ApiError as exc:
                if exc.status != 429 or tries == MAX_RATE_LIMIT_RETRIES:
                    raise
                self.rate_limited += 1
                delay = exc.retry_after if exc.retry_after is not None else 1.0
                if on_wait is not None:
                    on_wait(delay)
                await task.deferLater(self.clock, delay, lambda: None)
        raise AssertionError("unreachable")
