# tests: tests/daemon/test_telegram_api.py
"""The few Telegram Bot API calls the bridge needs, over treq.

Every call is a JSON POST to `<api_base_url>/bot<token>/<method>`; the answer's
`ok` decides, and a failure becomes a TelegramError carrying the status, the
description and `retry_after` when Telegram gives one. The token is part of
every URL, so no error text ever contains the URL.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks

from aiwg.core.messaging import LIMITS, split_text, telegram_html

#: How long an HTTP request may take beyond the long-poll timeout it asks for.
HTTP_SLACK_SECONDS = 10.0
#: How many times a 429 is waited out before sendMessage gives up.
MAX_RATE_LIMIT_RETRIES = 5


class TelegramError(Exception):
    def __init__(self, status: int, description: str, retry_after: float | None = None) -> None:
        super().__init__(f"Telegram API error {status}: {description}")
        self.status = status
        self.description = description
        self.retry_after = retry_after


class TelegramApi:
    def __init__(self, *, base_url: str, token: str, reactor: Any, http: Any = None) -> None:
        self._pool: Any = None
        if http is None:
            from aiwg.daemon.messaging.http import quiet_client

            self._pool, http = quiet_client(reactor, per_host=2)  # the long poll and one send
        self._http = http
        self._reactor = reactor
        self._base = f"{base_url.rstrip('/')}/bot{token}/"
        self._token = token
        self.rate_limited = 0  # 429s waited out

    def close(self) -> Deferred:
        """Close kept-alive connections (and their idle timers)."""
        from twisted.internet.defer import succeed

        return self._pool.closeCachedConnections() if self._pool is not None else succeed(None)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "[token]") if self._token else text

    @inlineCallbacks
    def call(self, method: str, params: dict[str, Any], timeout: float = HTTP_SLACK_SECONDS) -> Any:
        try:
            response = yield self._http.post(
                self._base + method,
                data=json.dumps(params).encode(),
                headers={b"Content-Type": [b"application/json"]},
                timeout=timeout,
            )
            body = yield response.content()
        except Exception as exc:  # connection refused, timeout, reset: never with the URL
            raise TelegramError(0, self._redact(f"{type(exc).__name__}: {exc}")) from None
        try:
            answer = json.loads(body)
        except ValueError:
            raise TelegramError(response.code, f"not JSON (HTTP {response.code})") from None
        if not isinstance(answer, dict) or not answer.get("ok"):
            answer = answer if isinstance(answer, dict) else {}
            parameters = answer.get("parameters") or {}
            retry_after = parameters.get("retry_after")
            if retry_after is None:
                header = response.headers.getRawHeaders(b"retry-after")
                retry_after = float(header[0]) if header else None
            raise TelegramError(int(answer.get("error_code") or response.code),
                                self._redact(str(answer.get("description") or "no description")),
                                float(retry_after) if retry_after is not None else None)
        return answer.get("result")

    def get_updates(self, offset: int | None, timeout: int) -> Deferred:
        """Long poll: the request is held up to `timeout` seconds by Telegram."""
        params: dict[str, Any] = {"timeout": timeout, "allowed_updates": ["message"]}
        if offset is not None:
            params["offset"] = offset
        return self.call("getUpdates", params, timeout=timeout + HTTP_SLACK_SECONDS)

    @inlineCallbacks
    def send_message(self, chat_id: int | str, text: str, reply_to: int | None = None,
                     html: bool = False, thread: int | None = None) -> Any:
        """Send plain text (escaped for HTML parse mode here), split into messages within
        Telegram's limit, which counts characters after entity parsing; a 429 is waited
        out for the `retry_after` Telegram gives (a few times at most). `html`: the text
        is HTML already, made to fit one message (a rendered notification)."""
        sent = []
        pieces = [text] if html else [telegram_html(p) for p in split_text(text, LIMITS["telegram"])]
        for piece in pieces:
            params: dict[str, Any] = {"chat_id": chat_id, "text": piece, "parse_mode": "HTML",
                                      "disable_web_page_preview": True}
            if reply_to is not None:
                params["reply_to_message_id"] = reply_to
                params["allow_sending_without_reply"] = True
            if thread is not None:
                params["message_thread_id"] = thread
            for attempt in range(MAX_RATE_LIMIT_RETRIES + 1):
                try:
                    result = yield self.call("sendMessage", params)
                    sent.append(result)
                    break
                except TelegramError as exc:
                    if exc.status != 429 or attempt == MAX_RATE_LIMIT_RETRIES:
                        raise
                    self.rate_limited += 1
                    yield task.deferLater(self._reactor, exc.retry_after or 1.0, lambda: None)
        return sent
