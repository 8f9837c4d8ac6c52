"""JSON over HTTP for Slack and Discord, driven by a scripted stub and a Clock: 429s
waited out for exactly the time the server asked, Discord's per-route buckets and
global limit, Slack's error codes, webhooks, and errors that never carry a secret."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from aiwg.daemon.messaging.discord_api import DiscordApi
from aiwg.daemon.messaging.http import MAX_RATE_LIMIT_RETRIES, ApiError, JsonHttp
from aiwg.daemon.messaging.slack_api import SlackApi

SLACK_BOT = "xoxb-1111-secret-bot-token"
SLACK_APP = "xapp-2222-secret-app-token"
SLACK_HOOK = "https://hooks.slack.test/services/T1/B2/hook-secret-value"
DISCORD_TOKEN = "MTIz.discord-secret-token"
DISCORD_HOOK = "https://discord.test/api/webhooks/42/webhook-secret-value"


class Response:
    def __init__(self, code: int, body: Any = b"", headers: dict[str, str] | None = None) -> None:
        self.code = code
        self.headers = Headers({k: [v] for k, v in (headers or {}).items()})
        self._body = body if isinstance(body, bytes) else json.dumps(body).encode()

    def content(self) -> Deferred:
        return succeed(self._body)


class StubHttp:
    """Stands in for treq: answers from a script, records each request and when it came."""

    def __init__(self, clock: Clock, *script: Any) -> None:
        self.clock = clock
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, url: str, data: bytes | None = None, headers: Any = None,
                timeout: float | None = None) -> Deferred:
        self.calls.append({"method": method, "url": url, "at": self.clock.seconds(), "headers": headers,
                           "body": json.loads(data) if data else None, "timeout": timeout})
        answer = self.script.pop(0)
        if callable(answer):
            answer = answer(url)
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)

    def urls(self) -> list[str]:
        return [c["url"] for c in self.calls]


def slack(clock: Clock, *script: Any) -> tuple[SlackApi, StubHttp]:
    stub = StubHttp(clock, *script)
    return SlackApi(base_url="https://slack.test/api/", bot_token=SLACK_BOT, app_token=SLACK_APP,
                    webhook_url=SLACK_HOOK, reactor=clock, http=stub), stub


def discord(clock: Clock, *script: Any) -> tuple[DiscordApi, StubHttp]:
    stub = StubHttp(clock, *script)
    return DiscordApi(base_url="https://discord.test/api/v10", bot_token=DISCORD_TOKEN, webhook_url=DISCORD_HOOK,
                      reactor=clock, http=stub), stub


def result(d: Deferred) -> Any:
    """The value of a Deferred that has fired (the stub answers synchronously)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the call has not finished"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def error(d: Deferred) -> ApiError:
    with pytest.raises(ApiError) as caught:
        result(d)
    return caught.value


OK = {"ok": True, "ts": "1.0", "channel": "C1"}


# -- Slack ------------------------------------------------------------------------------------


def test_slack_429_waits_exactly_retry_after_then_succeeds() -> None:
    """Retry-After: 15 means 15 s: not a moment earlier (that would earn another 429)."""
    clock = Clock()
    api, stub = slack(clock, Response(429, b"", {"Retry-After": "15"}), Response(200, OK))
    d = ensureDeferred(api.post_message("C1", "hello"))
    assert len(stub.calls) == 1 and not d.called
    clock.advance(14.9)
    assert len(stub.calls) == 1 and not d.called
    clock.advance(0.1)
    assert len(stub.calls) == 2
    assert result(d) == OK
    assert stub.calls[1]["at"] == 15
    assert api.http.rate_limited == 1
    assert stub.calls[1]["body"] == {"channel": "C1", "text": "hello", "unfurl_links": False}
    assert stub.calls[1]["headers"][b"Authorization"] == [f"Bearer {SLACK_BOT}".encode()]
    assert stub.urls() == ["https://slack.test/api/chat.postMessage"] * 2


def test_rate_limits_give_up_after_max_retries() -> None:
    """A server that keeps answering 429: the caller hears of it after a bounded number of tries."""
    clock = Clock()
    api, stub = slack(clock, *[Response(429, b"", {"Retry-After": "2"})] * (MAX_RATE_LIMIT_RETRIES + 1))
    d = ensureDeferred(api.post_message("C1", "hello"))
    for _ in range(MAX_RATE_LIMIT_RETRIES):
        clock.advance(2)
    caught = error(d)
    assert caught.status == 429 and caught.retry_after == 2 and caught.code == "ratelimited"
    assert len(stub.calls) == MAX_RATE_LIMIT_RETRIES + 1
    assert api.http.rate_limited == MAX_RATE_LIMIT_RETRIES
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "answer, code, permanent",
    [
        (Response(200, {"ok": False, "error": "channel_not_found"}), "channel_not_found", True),
        (Response(200, {"ok": False, "error": "invalid_auth"}), "invalid_auth", True),
        (Response(200, {"ok": False, "error": "ratelimited"}), "ratelimited", False),
        (Response(500, {"ok": False, "error": "internal_error"}), "internal_error", False),
        (Response(503, {"ok": False}), "HTTP 503", False),
    ],
)
def test_slack_error_codes_say_whether_a_retry_can_help(answer: Response, code: str, permanent: bool) -> None:
    """A missing channel stays missing; a rate limit or a server error passes."""
    clock = Clock()
    api, stub = slack(clock, answer)
    caught = error(ensureDeferred(api.post_message("C1", "hi")))
    assert caught.code == code and caught.permanent is permanent
    assert code in str(caught) and len(stub.calls) == 1  # no 429: not retried here


def test_slack_answers_that_are_not_json() -> None:
    """An HTML error page: a 5xx is worth retrying, a 4xx is not."""
    clock = Clock()
    api, _ = slack(clock, Response(502, b"<html>Bad Gateway</html>"), Response(400, b"<html>no</html>"))
    first = error(ensureDeferred(api.auth_test()))
    assert first.status == 502 and not first.permanent and "not JSON" in str(first)
    assert error(ensureDeferred(api.auth_test())).permanent


def test_slack_socket_mode_url_uses_the_app_token() -> None:
    """apps.connections.open authenticates with the app-level token, not the bot's."""
    clock = Clock()
    api, stub = slack(clock, Response(200, {"ok": True, "url": "wss://socket.test/link"}))
    assert result(ensureDeferred(api.connections_open())) == "wss://socket.test/link"
    assert stub.calls[0]["headers"][b"Authorization"] == [f"Bearer {SLACK_APP}".encode()]


def test_slack_webhook_plain_ok_is_accepted() -> None:
    """Incoming webhooks answer the two letters `ok`, not JSON."""
    clock = Clock()
    api, stub = slack(clock, Response(200, b"ok"))
    assert result(ensureDeferred(api.post_plain(SLACK_HOOK, {"text": "hi"}, "webhook"))) is None
    assert stub.calls[0]["url"] == SLACK_HOOK and stub.calls[0]["body"] == {"text": "hi"}
    assert b"Authorization" not in stub.calls[0]["headers"]


def test_slack_webhook_errors_and_429() -> None:
    """A 4xx webhook answer is permanent, a 5xx is not, a 429 is waited out."""
    clock = Clock()
    api, stub = slack(clock, Response(404, b"no_service"), Response(500, b"oops"),
                      Response(429, b"", {"Retry-After": "3"}), Response(200, b"ok"))
    gone = error(ensureDeferred(api.post_plain(SLACK_HOOK, {"text": "a"}, "webhook")))
    assert gone.status == 404 and gone.permanent and "no_service" in str(gone)
    down = error(ensureDeferred(api.post_plain(SLACK_HOOK, {"text": "b"}, "webhook")))
    assert down.status == 500 and not down.permanent
    d = ensureDeferred(api.post_plain(SLACK_HOOK, {"text": "c"}, "webhook"))
    clock.advance(2.9)
    assert len(stub.calls) == 3
    clock.advance(0.1)
    assert result(d) is None and len(stub.calls) == 4


def test_a_network_failure_never_carries_the_slack_tokens() -> None:
    """Exceptions can quote headers; the text that is logged and shown must not."""
    clock = Clock()
    api, _ = slack(clock, ConnectionRefusedError(f"refused while sending Bearer {SLACK_BOT} / {SLACK_APP}"))
    caught = error(ensureDeferred(api.auth_test()))
    assert caught.status == 0 and not caught.permanent
    assert "ConnectionRefusedError" in str(caught) and "[secret]" in str(caught)
    assert SLACK_BOT not in str(caught) and SLACK_APP not in str(caught)


def test_a_network_failure_never_carries_the_slack_webhook() -> None:
    """The webhook URL is itself the credential."""
    clock = Clock()
    api, _ = slack(clock, lambda url: ConnectionRefusedError(f"could not connect to {url}"))
    caught = error(ensureDeferred(api.post_plain(SLACK_HOOK, {"text": "hi"}, "webhook")))
    assert "hook-secret-value" not in str(caught)


# -- Discord ----------------------------------------------------------------------------------


def test_discord_429_waits_for_the_bodys_retry_after() -> None:
    """Discord gives a fractional retry_after in the body; it is obeyed to the millisecond."""
    clock = Clock()
    api, stub = discord(clock, Response(429, {"message": "You are being rate limited.", "retry_after": 2.5,
                                              "global": False}),
                        Response(200, {"id": "m1"}))
    d = ensureDeferred(api.create_message("C1", {"content": "hi"}))
    clock.advance(2.4)
    assert len(stub.calls) == 1 and not d.called
    clock.advance(0.1)
    assert result(d) == {"id": "m1"}
    assert [c["at"] for c in stub.calls] == [0, 2.5]
    assert stub.calls[0]["headers"][b"Authorization"] == [f"Bot {DISCORD_TOKEN}".encode()]
    assert stub.urls() == ["https://discord.test/api/v10/channels/C1/messages"] * 2


def test_discord_429_falls_back_to_the_retry_after_header() -> None:
    """A 429 without a JSON body (a proxy's) still says how long in its header."""
    clock = Clock()
    api, stub = discord(clock, Response(429, b"slow down", {"Retry-After": "4"}), Response(200, {"id": "m"}))
    d = ensureDeferred(api.create_message("C1", {"content": "hi"}))
    clock.advance(3.9)
    assert len(stub.calls) == 1
    clock.advance(0.1)
    assert result(d) == {"id": "m"}


def test_an_empty_bucket_delays_the_next_request_on_its_route_only() -> None:
    """Remaining 0 / Reset-After 3: wait instead of earning a 429; other channels are other buckets."""
    clock = Clock()
    empty = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "3"}
    api, stub = discord(clock, Response(200, {"id": "1"}, empty), Response(200, {"id": "2"}),
                        Response(200, {"id": "3"}))
    assert result(ensureDeferred(api.create_message("C1", {"content": "a"}))) == {"id": "1"}
    same = ensureDeferred(api.create_message("C1", {"content": "b"}))
    other = ensureDeferred(api.create_message("C2", {"content": "c"}))
    assert result(other) == {"id": "2"}  # not held by C1's bucket
    assert stub.calls[1]["url"].endswith("/channels/C2/messages") and stub.calls[1]["at"] == 0
    clock.advance(2.9)
    assert not same.called and len(stub.calls) == 2
    clock.advance(0.1)
    assert result(same) == {"id": "3"} and stub.calls[2]["at"] == 3
    assert api.http.rate_limited == 0  # waited, never refused


def test_a_global_429_holds_every_route() -> None:
    """A global limit is for the whole bot: another channel waits too."""
    clock = Clock()
    api, stub = discord(clock, Response(429, {"retry_after": 4, "global": True}),
                        Response(200, {"id": "m"}), Response(200, {"id": "m"}))
    first = ensureDeferred(api.create_message("C1", {"content": "a"}))
    second = ensureDeferred(api.create_message("C2", {"content": "b"}))
    assert len(stub.calls) == 1 and not second.called
    clock.advance(3.9)
    assert len(stub.calls) == 1
    clock.advance(0.1)
    assert result(first) == result(second) == {"id": "m"}
    assert [c["at"] for c in stub.calls] == [0, 4, 4]
    assert sorted(stub.urls()[1:]) == [f"https://discord.test/api/v10/channels/{c}/messages" for c in ("C1", "C2")]


def test_a_global_limit_from_the_header() -> None:
    """X-RateLimit-Global: true marks a global 429 as the body's flag does."""
    clock = Clock()
    api, stub = discord(clock, Response(429, {"retry_after": 1}, {"X-RateLimit-Global": "true"}),
                        Response(200, {}), Response(200, {}))
    ensureDeferred(api.create_message("C1", {"content": "a"}))
    other = ensureDeferred(api.me())
    assert not other.called
    clock.advance(1)
    assert result(other) == {} and len(stub.calls) == 3


def test_discord_gives_up_after_max_retries() -> None:
    """Endless 429s reach the caller as an ApiError with the server's delay."""
    clock = Clock()
    api, stub = discord(clock, *[Response(429, {"retry_after": 0.5})] * (MAX_RATE_LIMIT_RETRIES + 1))
    d = ensureDeferred(api.create_message("C1", {"content": "a"}))
    for _ in range(MAX_RATE_LIMIT_RETRIES):
        clock.advance(0.5)
    caught = error(d)
    assert caught.status == 429 and caught.retry_after == 0.5
    assert len(stub.calls) == MAX_RATE_LIMIT_RETRIES + 1 and clock.getDelayedCalls() == []


def test_discord_errors_say_whether_a_retry_can_help() -> None:
    """Missing access (4xx) is permanent with Discord's code; a 5xx is not."""
    clock = Clock()
    api, _ = discord(clock, Response(403, {"message": "Missing Access", "code": 50001}),
                     Response(502, b"<html>bad gateway</html>"))
    denied = error(ensureDeferred(api.create_message("C1", {"content": "a"})))
    assert denied.permanent and denied.status == 403 and denied.code == "50001"
    assert "Missing Access" in str(denied) and "channel_messages:C1" in str(denied)
    down = error(ensureDeferred(api.create_message("C1", {"content": "a"})))
    assert not down.permanent and down.status == 502


def test_discord_webhook_asks_to_wait_and_sends_no_token() -> None:
    """A webhook carries its secret in the URL; the bot token must not go along."""
    clock = Clock()
    api, stub = discord(clock, Response(200, {"id": "w1"}))
    assert result(ensureDeferred(api.execute_webhook(DISCORD_HOOK, {"content": "x"}))) == {"id": "w1"}
    assert stub.calls[0]["url"] == DISCORD_HOOK + "?wait=true"
    assert b"Authorization" not in stub.calls[0]["headers"]


def test_a_network_failure_never_carries_the_discord_token_or_webhook() -> None:
    """The exception quotes the URL and the header; the ApiError must quote neither secret."""
    clock = Clock()
    api, _ = discord(clock, lambda url: ConnectionRefusedError(f"{url} refused (Authorization: Bot {DISCORD_TOKEN})"),
                     lambda url: TimeoutError(f"timed out posting to {url}"))
    bot = error(ensureDeferred(api.create_message("C1", {"content": "a"})))
    assert DISCORD_TOKEN not in str(bot) and "[secret]" in str(bot) and bot.status == 0
    hook = error(ensureDeferred(api.execute_webhook(DISCORD_HOOK, {"content": "a"})))
    assert "webhook-secret-value" not in str(hook) and "TimeoutError" in str(hook)


def test_discord_error_messages_are_redacted() -> None:
    """Even a server message that echoes the token is scrubbed."""
    clock = Clock()
    api, _ = discord(clock, Response(401, {"message": f"bad token {DISCORD_TOKEN}", "code": 0}))
    caught = error(ensureDeferred(api.me()))
    assert DISCORD_TOKEN not in str(caught) and caught.permanent


# -- JsonHttp ---------------------------------------------------------------------------------


def test_json_http_sends_json_and_reads_headers_case_blind() -> None:
    """Bodies go as JSON with a content type; header names are looked up in any case."""
    clock = Clock()
    stub = StubHttp(clock, Response(200, b'{"a": 1}', {"X-Thing": "2.5"}))
    http = JsonHttp(reactor=clock, secrets=["abc", "", "long-secret"], http=stub)
    answer = result(ensureDeferred(http.request("POST", "https://x.test/", {"q": "é"}, {"X-Mine": "1"}, timeout=3)))
    assert answer.status == 200 and answer.json() == {"a": 1}
    assert answer.header_float("X-THING") == 2.5 and answer.header_float("missing") is None
    assert stub.calls[0]["body"] == {"q": "é"} and stub.calls[0]["timeout"] == 3
    assert stub.calls[0]["headers"][b"Content-Type"] == [b"application/json; charset=utf-8"]
    assert stub.calls[0]["headers"][b"X-Mine"] == [b"1"]
    # Secrets shorter than four characters are not redacted (they would mangle every text).
    assert http.redact("abc long-secret") == "abc [secret]"


def test_retrying_reports_each_wait_and_passes_other_errors_through() -> None:
    """on_wait hears every delay; a non-429 error is not retried."""
    clock = Clock()
    http = JsonHttp(reactor=clock, secrets=[], http=StubHttp(clock))
    outcomes = [ApiError("slow", status=429, retry_after=None), ApiError("broken", status=500)]
    waits: list[float] = []

    async def attempt() -> None:
        raise outcomes.pop(0)

    d = ensureDeferred(http.retrying(attempt, on_wait=waits.append))
    assert waits == [1.0]  # no retry_after given: one second
    clock.advance(1)
    assert error(d).status == 500 and outcomes == []
