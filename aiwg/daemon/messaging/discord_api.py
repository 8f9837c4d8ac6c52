# tests: tests/daemon/test_messaging_http.py, tests/e2e/test_messaging.py
"""The Discord REST calls the bridge makes, with Discord's rate limits read, not guessed.

Every answer carries its bucket's state (`X-RateLimit-Remaining`,
`-Reset-After`); when a route's bucket is empty the next request on it waits
for the reset instead of earning a 429. A 429 is waited out for its
`retry_after` (body, or `Retry-After`); a global one holds every route. Bot
calls authenticate with `Authorization: Bot <token>`; webhooks carry their
secret in the URL, which never reaches an error text.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task

from aiwg.daemon.messaging.http import Answer, ApiError, JsonHttp

USER_AGENT = "DiscordBot (https://github.com/aiwg, 1) aiwg-daemon"


class DiscordApi:
    def __init__(self, *, base_url: str, bot_token: str, reactor: Any, webhook_url: str = "",
                 http: Any = None, clock: Any = None) -> None:
        self.base = base_url.rstrip("/")
        self.token = bot_token
        self.http = JsonHttp(reactor=reactor, secrets=[bot_token, webhook_url], http=http, clock=clock)
        self.clock = self.http.clock
        self._blocked_until: dict[str, float] = {}  # route → when its bucket refills
        self._global_until = 0.0

    def close(self) -> Any:
        return self.http.close()

    async def _wait_for_bucket(self, route: str) -> None:
        until = max(self._blocked_until.get(route, 0.0), self._global_until)
        delay = until - self.clock.seconds()
        if delay > 0:
            await task.deferLater(self.clock, delay, lambda: None)

    def _note_bucket(self, route: str, answer: Answer) -> None:
        remaining = answer.headers.get("x-ratelimit-remaining")
        reset_after = answer.header_float("x-ratelimit-reset-after")
        if remaining is not None and remaining.strip() == "0" and reset_after is not None:
            self._blocked_until[route] = self.clock.seconds() + reset_after
        else:
            self._blocked_until.pop(route, None)

    async def request(self, method: str, url: str, route: str, body: Any = None, auth: bool = True) -> Any:
        async def attempt() -> Any:
            await self._wait_for_bucket(route)
            headers = {"User-Agent": USER_AGENT}
            if auth:
                headers["Authorization"] = f"Bot {self.token}"
            answer = await self.http.request(method, url, body, headers)
            self._note_bucket(route, answer)
            payload = answer.json()
            if answer.status == 429:
                info = payload if isinstance(payload, dict) else {}
                retry_after = info.get("retry_after")
                if retry_after is None:
                    retry_after = answer.header_float("retry-after") or 1.0
                if info.get("global") or answer.headers.get("x-ratelimit-global", "").lower() == "true":
                    self._global_until = self.clock.seconds() + float(retry_after)
                raise ApiError(f"Discord {route}: rate limited", status=429, retry_after=float(retry_after))
            if answer.status >= 300:
                info = payload if isinstance(payload, dict) else {}
                message = self.http.redact(str(info.get("message") or f"HTTP {answer.status}"))
                raise ApiError(f"Discord {route}: {message} (HTTP {answer.status}, code {info.get('code', '-')})",
                               status=answer.status, permanent=400 <= answer.status < 500,
                               code=str(info.get("code", "")))
            return payload

        return await self.http.retrying(attempt)

    async def me(self) -> dict[str, Any]:
        return await self.request("GET", f"{self.base}/users/@me", "users_me")  # type: ignore[no-any-return]

    async def gateway_url(self) -> str:
        found = await self.request("GET", f"{self.base}/gateway/bot", "gateway_bot")
        return str(found["url"])

    async def create_message(self, channel_id: str, body: dict[str, Any]) -> Any:
        return await self.request("POST", f"{self.base}/channels/{channel_id}/messages",
                                  f"channel_messages:{channel_id}", body)

    async def execute_webhook(self, url: str, body: dict[str, Any]) -> Any:
        return await self.request("POST", url + ("&" if "?" in url else "?") + "wait=true", "webhook", body,
                                  auth=False)

    async def interaction_callback(self, interaction_id: str, token: str, body: dict[str, Any]) -> Any:
        """Answer an interaction; its token (in the URL) is kept out of any error."""
        try:
            return await self.request("POST", f"{self.base}/interactions/{interaction_id}/{token}/callback",
                                      f"interaction_callback:{interaction_id}", body, auth=False)
        except ApiError as exc:
            raise ApiError(str(exc).replace(token, "[interaction token]"), status=exc.status,
                           retry_after=exc.retry_after, permanent=exc.permanent, code=exc.code) from None
