# tests: tests/daemon/test_messaging_http.py, tests/e2e/test_messaging.py
"""The Slack Web API calls the bridge makes, plus incoming webhooks and response URLs.

Web API answers are HTTP 200 with `ok`; the `error` code decides whether
retrying can help (`ratelimited` and 5xx can, `channel_not_found` or
`invalid_auth` cannot). Rate limits come as HTTP 429 with `Retry-After` in
seconds, for the Web API and webhooks alike; they are waited out. Webhooks and
response URLs answer plain text (`ok`), not JSON.
"""

from __future__ import annotations

from typing import Any

from aiwg.daemon.messaging.http import Answer, ApiError, JsonHttp

#: Error codes a retry cannot fix (the message is dropped, the cause logged).
PERMANENT = {"channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text",
             "invalid_blocks", "invalid_auth", "not_authed", "account_inactive", "token_revoked",
             "missing_scope", "invalid_payload", "no_service", "action_prohibited", "posting_to_general_channel_denied"}
AUTH = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "missing_scope"}


class SlackApi:
    def __init__(self, *, base_url: str, bot_token: str, app_token: str, reactor: Any,
                 webhook_url: str = "", http: Any = None, clock: Any = None) -> None:
        self.base = base_url.rstrip("/") + "/"
        self.bot_token = bot_token
        self.app_token = app_token
        self.http = JsonHttp(reactor=reactor, secrets=[bot_token, app_token, webhook_url], http=http, clock=clock)

    def close(self) -> Any:
        return self.http.close()

    @staticmethod
    def _rate_limited(answer: Answer, what: str) -> ApiError:
        return ApiError(f"Slack {what}: rate limited (HTTP 429)", status=429,
                        retry_after=answer.header_float("retry-after") or 1.0, code="ratelimited")

    async def call(self, method: str, params: dict[str, Any], token: str) -> dict[str, Any]:
        answer = await self.http.request("POST", self.base + method, params,
                                         {"Authorization": f"Bearer {token}"})
        if answer.status == 429:
            raise self._rate_limited(answer, method)
        body = answer.json()
        if not isinstance(body, dict):
            raise ApiError(f"Slack {method}: HTTP {answer.status}, not JSON", status=answer.status,
                           permanent=400 <= answer.status < 500)
        if not body.get("ok"):
            code = str(body.get("error") or f"HTTP {answer.status}")
            raise ApiError(f"Slack {method}: {code}", status=answer.status, code=code,
                           permanent=code in PERMANENT)
        return body

    def retrying_call(self, method: str, params: dict[str, Any], token: str) -> Any:
        return self.http.retrying(lambda: self.call(method, params, token))

    async def auth_test(self) -> dict[str, Any]:
        return await self.call("auth.test", {}, self.bot_token)

    async def connections_open(self) -> str:
        """A fresh Socket Mode URL (it is single-use and short-lived)."""
        body = await self.call("apps.connections.open", {}, self.app_token)
        return str(body["url"])

    async def post_message(self, channel: str, text: str, blocks: list[Any] | None = None,
                           thread_ts: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False}
        if blocks:
            params["blocks"] = blocks
        if thread_ts:
            params["thread_ts"] = thread_ts
        return await self.retrying_call("chat.postMessage", params, self.bot_token)

    async def post_plain(self, url: str, body: dict[str, Any], what: str) -> None:
        """An incoming webhook or a slash command's response URL: plain `ok` back."""
        async def attempt() -> None:
            answer = await self.http.request("POST", url, body)
            if answer.status == 429:
                raise self._rate_limited(answer, what)
            if answer.status >= 300:
                text = answer.body.decode("utf-8", "replace").strip()[:200]
                raise ApiError(f"Slack {what}: HTTP {answer.status} {self.http.redact(text)}",
                               status=answer.status, permanent=400 <= answer.status < 500)
        await self.http.retrying(attempt)
