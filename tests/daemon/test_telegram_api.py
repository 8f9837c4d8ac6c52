"""The Telegram API client against the loopback fake: long polling with offsets,
splitting long answers, 429 waited out, errors without the token."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, succeed
from twisted.web.http_headers import Headers

from aiwg.daemon.messaging.telegram_api import TelegramApi, TelegramError
from tests.fakes.telegram import FakeTelegram

TOKEN = "123456:AAE-secret-token-value"


@pytest.fixture
def fake() -> FakeTelegram:
    server = FakeTelegram(TOKEN)
    server.base_url = server.listen()
    yield server
    server.stop()


CLIENTS: list[TelegramApi] = []


def api(fake: FakeTelegram, token: str = TOKEN) -> TelegramApi:
    client = TelegramApi(base_url=fake.base_url, token=token, reactor=reactor)
    CLIENTS.append(client)
    return client


@pytest_twisted.async_yield_fixture(autouse=True)
async def close_clients() -> None:
    yield
    while CLIENTS:
        await CLIENTS.pop().close()


@pytest_twisted.ensureDeferred
async def test_long_poll_returns_early_and_offsets_confirm(fake: FakeTelegram) -> None:
    client = api(fake)
    reactor.callLater(0.2, fake.message, "/status")
    started = reactor.seconds()
    updates = await client.get_updates(None, timeout=5)
    assert reactor.seconds() - started < 3  # answered when the message came, not at the timeout
    assert [u["message"]["text"] for u in updates] == ["/status"]
    again = await client.get_updates(None, timeout=0)
    assert len(again) == 1  # not confirmed yet: still there
    confirmed = await client.get_updates(updates[-1]["update_id"] + 1, timeout=0)
    assert confirmed == [] and fake.updates == []


@pytest_twisted.ensureDeferred
async def test_a_second_poller_gets_409(fake: FakeTelegram) -> None:
    first = api(fake).get_updates(None, timeout=5)
    await task.deferLater(reactor, 0.1, lambda: None)
    second = api(fake).get_updates(None, timeout=0.5)
    with pytest.raises(TelegramError) as caught:
        await first
    assert caught.value.status == 409 and "only one bot instance" in caught.value.description
    assert await second == []


@pytest_twisted.ensureDeferred
async def test_long_answers_are_split_and_escaped(fake: FakeTelegram) -> None:
    text = "\n".join(f"line {i} <b>&" + "x" * 50 for i in range(200))  # ~11,600 characters
    sent = await api(fake).send_message(77, text, reply_to=5)
    assert len(sent) == len(fake.sent) >= 3
    assert all(s["parse_mode"] == "HTML" and s["reply_to_message_id"] == 5 for s in fake.sent)
    assert "&lt;b&gt;&amp;" in fake.sent[0]["text"]
    import html

    assert "\n".join(html.unescape(s["text"]) for s in fake.sent) == text


@pytest_twisted.ensureDeferred
async def test_429_is_waited_out_for_retry_after(fake: FakeTelegram) -> None:
    fake.fail_next("sendMessage", 429, retry_after=1)
    started = reactor.seconds()
    await api(fake).send_message(1, "hello")
    assert reactor.seconds() - started >= 1
    assert [m for m, _ in fake.calls] == ["sendmessage", "sendmessage"]
    assert fake.sent[0]["text"] == "hello"


@pytest_twisted.ensureDeferred
async def test_errors_never_contain_the_token(fake: FakeTelegram) -> None:
    fake.fail_next("sendMessage", 403)
    with pytest.raises(TelegramError) as caught:
        await api(fake).send_message(1, "hi")
    assert caught.value.status == 403 and TOKEN not in str(caught.value)
    port = fake.port.getHost().port
    await fake.stop()
    refused = TelegramApi(base_url=f"http://127.0.0.1:{port}", token=TOKEN, reactor=reactor)
    CLIENTS.append(refused)
    with pytest.raises(TelegramError) as down:
        await refused.call("getMe", {}, timeout=2)
    assert down.value.status == 0 and TOKEN not in str(down.value)
    fake.port = None



class StubResponse:
    def __init__(self, answer: dict) -> None:
        self.code = 200 if answer["ok"] else answer["error_code"]
        self.headers = Headers()
        self._body = json.dumps(answer).encode()

    def content(self) -> Deferred:
        return succeed(self._body)


class StubHttp:
    """Stands in for treq's client: scripted answers, each post recorded with its time."""

    def __init__(self, clock: task.Clock, *answers: dict) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.posts: list[tuple[float, str, dict]] = []

    def post(self, url: str, data: bytes = b"", headers: dict | None = None, timeout: float = 0) -> Deferred:
        self.posts.append((self.clock.seconds(), url, json.loads(data)))
        return succeed(StubResponse(self.answers.pop(0)))


def test_429_waits_exactly_retry_after_on_the_injected_clock() -> None:
    """The wait runs on the injected reactor (a Clock) and lasts Telegram's retry_after, not less."""
    clock = task.Clock()
    http = StubHttp(clock,
                    {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 3",
                     "parameters": {"retry_after": 3}},
                    {"ok": True, "result": {"message_id": 9}})
    client = TelegramApi(base_url="https://tg.test", token=TOKEN, reactor=clock, http=http)
    d = client.send_message(7, "a < b")
    assert len(http.posts) == 1 and not d.called
    clock.advance(2.9)
    assert len(http.posts) == 1 and not d.called
    clock.advance(0.1)
    assert [at for at, _, _ in http.posts] == [0, 3]
    assert http.posts[1][1] == f"https://tg.test/bot{TOKEN}/sendMessage"
    assert http.posts[1][2]["text"] == "a &lt; b" and http.posts[1][2]["chat_id"] == 7
    assert d.result == [{"message_id": 9}]
    assert clock.getDelayedCalls() == []
