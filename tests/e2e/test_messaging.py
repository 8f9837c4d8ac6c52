"""Messaging end to end: the real daemon, the fake claude, and a loopback fake of each
chat platform's API, served from this test process's reactor.

The daemon is driven from threads (the CLI and DaemonClient block) so the reactor
keeps serving the fakes meanwhile; waits are bounded polls.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.conftest import Project
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram

pytestmark = pytest.mark.e2e

from tests.fakes.messaging_project import (ALICE, FAST, MALLORY, TELEGRAM_TOKEN, bridge_state, call, eventually,
                                             in_thread, no_secret_in_log, start, stop_daemon_then, telegram_config,
                                             telegram_texts, wait_task)


# -- Telegram --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_telegram_task_failure_is_notified_in_html(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram))
    submitted = await call(project, "task.submit", prompt="Fix <the> build & ship @exit:3 @stderr:boom")
    await wait_task(project, submitted["taskId"])
    [text] = await eventually(lambda: telegram_texts(telegram), what="a notification")
    [sent] = telegram.sent
    assert sent["parse_mode"] == "HTML"
    assert f"<b>Task {submitted['taskId']} failed</b>" in text
    assert "<b>exit code</b>: 3" in text
    assert "Fix &lt;the&gt; build &amp; ship" in text  # escaped for HTML parse mode
    assert "<pre>" in text and "boom" in text  # the output tail
    status = await call(project, "messaging.status")
    assert status["adapters"]["telegram"]["state"] == "connected"
    assert status["adapters"]["slack"] == {"state": "disabled"}
    no_secret_in_log(project, TELEGRAM_TOKEN)


@pytest_twisted.ensureDeferred
async def test_telegram_task_command_queues_and_posts_the_result(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram, notify={"topics": []}))
    telegram.message("/task write the changelog @result:changelog-written", user_id=ALICE)
    queued = await eventually(lambda: [t for t in telegram_texts(telegram) if t.startswith("Queued task")])
    task_id = re.match(r"Queued task (\S+)\.", queued[0]).group(1)
    record = await wait_task(project, task_id)
    assert record["source"] == "messaging:telegram" and record["state"] == "completed"
    done = await eventually(lambda: [t for t in telegram_texts(telegram) if t.startswith(f"Task {task_id}")])
    assert done[0].startswith(f"Task {task_id} completed in ") and done[0].endswith("changelog-written")
    replies = [m for m in telegram.sent if m["text"] == done[0]]
    assert replies[0]["reply_to_message_id"]  # in reply to the /task message


@pytest_twisted.ensureDeferred
async def test_telegram_chat_answers_in_the_same_chat_and_resumes(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram), agent={"output": "claude-json"})
    telegram.message("What does the scheduler do?", user_id=ALICE)
    first = await eventually(lambda: telegram_texts(telegram))
    assert first == ["done: What does the scheduler do?"]
    telegram.message("And the watcher?", user_id=ALICE)
    second = await eventually(lambda: telegram_texts(telegram)[1:])
    assert re.fullmatch(r"resumed sess-\d+: done: And the watcher\?", second[0])
    history = await call(project, "chat.history", conversation=f"telegram:{ALICE}")
    assert [t["role"] for t in history["history"]] == ["user", "assistant", "user", "assistant"]
    tasks = await call(project, "task.list")
    assert {t["source"] for t in tasks} == {"messaging:telegram"}
    # A chat answer is a reply, not also a "task completed" notification.
    assert len(telegram.sent) == 2


@pytest_twisted.ensureDeferred
async def test_telegram_stranger_is_refused_and_nothing_is_queued(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram))
    telegram.message("/task rm -rf everything", user_id=MALLORY, username="mallory")
    telegram.message("hello?", user_id=MALLORY, username="mallory")
    refusal = await eventually(lambda: telegram_texts(telegram, MALLORY))
    assert "not allowed" in refusal[0] and str(MALLORY) in refusal[0]
    deadline = reactor.seconds() + 10
    while (await call(project, "messaging.status"))["adapters"]["telegram"]["refused"] < 2:
        assert reactor.seconds() < deadline, "the second message was not refused"
        await task.deferLater(reactor, 0.05, lambda: None)
    assert await call(project, "task.list") == []
    assert len(telegram_texts(telegram, MALLORY)) == 1  # one refusal, not one per message
    assert f"refused user {MALLORY} (mallory)" in project.log_text()


@pytest_twisted.ensureDeferred
async def test_telegram_dropped_poll_is_re_established(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram))
    await eventually(lambda: telegram._waiting is not None, what="a long poll")
    telegram.drop_poll()
    telegram.fail_next("getUpdates", 502)
    telegram.message("/help", user_id=ALICE)
    help_text = await eventually(lambda: telegram_texts(telegram), timeout=30)
    assert help_text[0].startswith("Commands:")
    status = await call(project, "messaging.status")
    assert status["adapters"]["telegram"]["reconnects"] >= 1
    assert status["adapters"]["telegram"]["state"] == "connected"
    no_secret_in_log(project, TELEGRAM_TOKEN)


@pytest_twisted.ensureDeferred
async def test_missing_token_variable_leaves_the_daemon_running(project: Project, telegram: FakeTelegram) -> None:
    project.env.pop("TELEGRAM_BOT_TOKEN", None)
    await start(project, telegram_config(telegram))
    status = await call(project, "daemon.status")
    bridge = status["subsystems"]["messaging"]["adapters"]["telegram"]
    assert bridge["state"] == "error" and "TELEGRAM_BOT_TOKEN" in bridge["detail"]
    assert status["health"] == "degraded"
    assert (await call(project, "ping"))


# -- Slack --------------------------------------------------------------------------

SLACK_BOT = "xoxb-1111-2222-slack-bot-secret"
SLACK_APP = "xapp-1-A000-3333-slack-app-secret"


@pytest_twisted.async_yield_fixture
async def slack(project: Project) -> Any:
    fake = FakeSlack(SLACK_BOT, SLACK_APP)
    fake.listen()
    project.env["SLACK_BOT_TOKEN"] = SLACK_BOT
    project.env["SLACK_APP_TOKEN"] = SLACK_APP
    yield fake
    await stop_daemon_then(project, fake)


def slack_config(fake: FakeSlack, **overrides: Any) -> dict[str, Any]:
    section = {
        "enabled": True, "bot_token": "${SLACK_BOT_TOKEN}", "app_token": "${SLACK_APP_TOKEN}",
        "channel_ids": ["C999"], "allowed_users": ["U111"], "api_base_url": fake.api_url,
        "notify": {"topics": ["task:failed"]},
    }
    return {"slack": {**section, **overrides}}


def slack_posts(fake: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [p for p in fake.posted if p["channel"] == channel]


@pytest_twisted.ensureDeferred
async def test_slack_task_failure_is_notified_with_blocks(project: Project, slack: FakeSlack) -> None:
    await start(project, slack_config(slack))
    submitted = await call(project, "task.submit", prompt="Deploy *now* <please> @exit:2")
    [post] = await eventually(lambda: slack_posts(slack, "C999"), what="a notification")
    assert post["text"].startswith(f"Task {submitted['taskId']} failed")
    title, fields = post["blocks"][0], post["blocks"][1]
    assert title["text"]["type"] == "mrkdwn" and f"*Task {submitted['taskId']} failed*" in title["text"]["text"]
    shown = "\n".join(f["text"] for f in fields["fields"])
    assert "*exit code*\n2" in shown and "Deploy *now* &lt;please&gt;" in shown
    no_secret_in_log(project, SLACK_BOT, SLACK_APP)


@pytest_twisted.ensureDeferred
async def test_slack_mention_is_answered_in_its_thread_and_a_follow_up_resumes(
        project: Project, slack: FakeSlack) -> None:
    await start(project, slack_config(slack), agent={"output": "claude-json"})
    await slack.wait_connected(1)
    asked = slack.mention("what does the supervisor do?", user="U111", channel="C100")
    [answer] = await eventually(lambda: slack_posts(slack, "C100"))
    assert answer["thread_ts"] == asked["ts"]
    assert answer["text"] == "done: what does the supervisor do?"
    slack.mention("and timeouts?", user="U111", channel="C100", thread_ts=asked["ts"])
    second = await eventually(lambda: slack_posts(slack, "C100")[1:])
    assert second[0]["thread_ts"] == asked["ts"]
    assert re.fullmatch(r"resumed sess-\d+: done: and timeouts\?", second[0]["text"])
    assert len(slack.acks) >= 2 and not slack.redelivered  # every envelope acknowledged in time


@pytest_twisted.ensureDeferred
async def test_slack_slash_task_queues_and_posts_the_result(project: Project, slack: FakeSlack) -> None:
    await start(project, slack_config(slack, notify={"topics": []}))
    await slack.wait_connected(1)
    slack.slash_command("/aiwg", "task tidy the imports @result:tidied", user="U111", channel="C200")
    queued = await eventually(lambda: slack.responses)
    task_id = re.match(r"Queued task (\S+)\.", queued[0]["text"]).group(1)
    assert queued[0]["response_type"] == "ephemeral"  # the quick answer is for the asker
    [result] = await eventually(lambda: slack_posts(slack, "C200"))
    assert result["text"].startswith(f"Task {task_id} completed in ") and result["text"].endswith("tidied")
    record = await call(project, "task.get", taskId=task_id)
    assert record["source"] == "messaging:slack"
    assert "_response_url" not in json.dumps(record["metadata"])


@pytest_twisted.ensureDeferred
async def test_slack_stranger_is_refused_and_nothing_is_queued(project: Project, slack: FakeSlack) -> None:
    await start(project, slack_config(slack))
    await slack.wait_connected(1)
    slack.message("/task delete the repo", user="U666", channel="D666")
    [refusal] = await eventually(lambda: slack_posts(slack, "D666"))
    assert "not allowed" in refusal["text"] and "U666" in refusal["text"]
    assert await call(project, "task.list") == []
    assert "refused user U666" in project.log_text()


@pytest_twisted.ensureDeferred
async def test_slack_reconnects_after_disconnect_and_after_a_drop(project: Project, slack: FakeSlack) -> None:
    await start(project, slack_config(slack))
    await slack.wait_connected(1)
    slack.disconnect("refresh_requested")
    await slack.wait_connected(2)
    slack.drop()
    await slack.wait_connected(3)
    slack.message("/help", user="U111", channel="D111")
    [reply] = await eventually(lambda: slack_posts(slack, "D111"))
    assert reply["text"].startswith("Commands:")
    assert slack.opened == 3  # a fresh single-use URL each time
    status = await call(project, "messaging.status")
    assert status["adapters"]["slack"]["state"] == "connected"
    assert status["adapters"]["slack"]["reconnects"] >= 2


@pytest_twisted.ensureDeferred
async def test_slack_webhook_only_notifications(project: Project, slack: FakeSlack) -> None:
    project.env["SLACK_WEBHOOK_URL"] = slack.webhook_url
    await start(project, {"slack": {"enabled": True, "webhook_url": "${SLACK_WEBHOOK_URL}",
                                    "api_base_url": slack.api_url}})
    result = await call(project, "messaging.test", platform="slack")
    assert result == {"results": {"slack": [{"target": "the webhook", "ok": True}]}}
    [post] = slack.webhook_posts
    assert post["text"].startswith("Test notification from aiwg")
    status = await call(project, "messaging.status")
    assert status["adapters"]["slack"]["mode"] == "notifications only"
    no_secret_in_log(project, slack.webhook_url)


# -- Discord ------------------------------------------------------------------------

DISCORD_TOKEN = "MTAxMDEwMTA.discord-bot-secret-token"


@pytest_twisted.async_yield_fixture
async def discord(project: Project) -> Any:
    fake = FakeDiscord(DISCORD_TOKEN, heartbeat_interval_ms=400)
    fake.listen()
    project.env["DISCORD_BOT_TOKEN"] = DISCORD_TOKEN
    yield fake
    await stop_daemon_then(project, fake)


def discord_config(fake: FakeDiscord, **overrides: Any) -> dict[str, Any]:
    section = {
        "enabled": True, "bot_token": "${DISCORD_BOT_TOKEN}", "channel_ids": ["777"],
        "allowed_users": ["111"], "api_base_url": fake.api_base_url,
        "notify": {"topics": ["task:failed"]},
    }
    return {"discord": {**section, **overrides}}


def discord_messages(fake: FakeDiscord, channel: str) -> list[dict[str, Any]]:
    return [m for m in fake.messages if str(m["channel_id"]) == channel]


@pytest_twisted.ensureDeferred
async def test_discord_task_failure_is_notified_as_an_embed(project: Project, discord: FakeDiscord) -> None:
    await start(project, discord_config(discord))
    submitted = await call(project, "task.submit", prompt="Migrate the schema @exit:4 @stderr:constraint-violated")
    [message] = await eventually(lambda: discord_messages(discord, "777"), what="a notification")
    [embed] = message["embeds"]
    assert embed["title"].endswith(f"Task {submitted['taskId']} failed")
    assert embed["color"] == 0xE01E5A
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["exit code"] == "4" and fields["prompt"].startswith("Migrate the schema")
    assert "constraint-violated" in embed["description"]
    assert message["allowed_mentions"] == {"parse": []}
    no_secret_in_log(project, DISCORD_TOKEN)


@pytest_twisted.ensureDeferred
async def test_discord_dm_chat_answers_and_a_follow_up_resumes(project: Project, discord: FakeDiscord) -> None:
    await start(project, discord_config(discord), agent={"output": "claude-json"})
    await discord.wait_ready(1)
    [identify] = discord.identifies
    assert identify["intents"] & (1 << 15)  # MESSAGE_CONTENT
    asked = discord.message_create("how are tasks ordered?", author_id="111", channel_id="888")
    [answer] = await eventually(lambda: discord_messages(discord, "888"))
    assert answer["content"] == "done: how are tasks ordered?"
    assert answer["message_reference"]["message_id"] == asked["id"]
    discord.message_create("and ties?", author_id="111", channel_id="888")
    second = await eventually(lambda: discord_messages(discord, "888")[1:])
    assert re.fullmatch(r"resumed sess-\d+: done: and ties\?", second[0]["content"])


@pytest_twisted.ensureDeferred
async def test_discord_slash_task_answers_the_interaction_then_posts_the_result(
        project: Project, discord: FakeDiscord) -> None:
    await start(project, discord_config(discord, notify={"topics": []}))
    await discord.wait_ready(1)
    discord.interaction("task", {"prompt": "bump the version @result:bumped"}, user_id="111", channel_id="901")
    [response] = await eventually(lambda: discord.interaction_responses)
    assert response["type"] == 4
    task_id = re.match(r"Queued task (\S+)\.", response["data"]["content"]).group(1)
    [result] = await eventually(lambda: discord_messages(discord, "901"))
    assert result["content"].startswith(f"Task {task_id} completed") and result["content"].endswith("bumped")


@pytest_twisted.ensureDeferred
async def test_discord_stranger_is_refused_and_nothing_is_queued(project: Project, discord: FakeDiscord) -> None:
    await start(project, discord_config(discord))
    await discord.wait_ready(1)
    discord.message_create("/task wipe it", author_id="666", channel_id="902")
    discord.interaction("task", {"prompt": "wipe it"}, user_id="666", channel_id="903")
    [refusal] = await eventually(lambda: discord_messages(discord, "902"))
    assert "not allowed" in refusal["content"]
    await eventually(lambda: discord.interaction_responses, what="the interaction answered")
    assert await call(project, "task.list") == []
    assert "refused user 666" in project.log_text()


@pytest_twisted.ensureDeferred
async def test_discord_drop_and_zombie_are_resumed_without_losing_a_message(
        project: Project, discord: FakeDiscord) -> None:
    await start(project, discord_config(discord))
    await bridge_state(project, "discord", "connected")  # READY handled: a session to resume
    discord.drop()
    discord.message_create("/help", author_id="111", channel_id="904")  # sent while disconnected
    await discord.wait_ready(2)
    assert discord.resumes and discord.readies[-1] == "RESUMED"
    [reply] = await eventually(lambda: discord_messages(discord, "904"))
    assert reply["content"].startswith("Commands:")
    discord.zombie = True  # no more ACKs: the bridge must notice and resume
    await eventually(lambda: len(discord.readies) >= 3, timeout=10, what="a resume after a zombie")
    discord.zombie = False
    assert len(discord.identifies) == 1  # one session throughout
    status = await call(project, "messaging.status")
    assert status["adapters"]["discord"]["reconnects"] >= 2
    no_secret_in_log(project, DISCORD_TOKEN)


@pytest_twisted.ensureDeferred
async def test_discord_disallowed_intent_is_a_clear_error(project: Project, discord: FakeDiscord) -> None:
    discord.message_content_allowed = False
    await start(project, discord_config(discord))
    found = await bridge_state(project, "discord", "error")
    assert "Message Content intent" in found["detail"]
    assert (await call(project, "daemon.status"))["health"] == "degraded"


# -- the CLI ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cli_messaging_status_and_test(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram, chat_ids=[ALICE, 999]))
    await bridge_state(project, "telegram", "connected")
    telegram.fail_next("sendMessage", 403, description="Forbidden: bot was blocked by the user")
    sent = await in_thread(project.aiwg, "messaging", "test", "--platform", "telegram")
    # One target refused the bot: said per target, and the exit code says a send failed.
    assert sent.returncode == 1, sent.stderr
    assert f"telegram → {ALICE}: FAILED: Telegram API error 403: Forbidden: bot was blocked" in sent.stdout
    assert "telegram → 999: sent" in sent.stdout
    assert telegram_texts(telegram, 999)[0].startswith("✅ <b>Test notification from aiwg</b>")
    shown = await in_thread(project.aiwg, "messaging", "status")
    assert shown.returncode == 0
    assert re.search(r"^telegram\s+connected \(2-way; as @aiwg_test_bot\)$", shown.stdout, re.M)
    assert re.search(r"^slack\s+disabled$", shown.stdout, re.M)
    as_json = json.loads((await in_thread(project.aiwg, "messaging", "status", "--json")).stdout)
    assert as_json["adapters"]["telegram"]["state"] == "connected"
    daemon_status = await in_thread(project.aiwg, "daemon", "status")
    assert re.search(r"^\s+telegram\s+connected", daemon_status.stdout, re.M)
    unknown = await in_thread(project.aiwg, "messaging", "test", "--platform", "slack")
    assert unknown.returncode != 0 and "the slack bridge is not running" in unknown.stderr
    no_secret_in_log(project, TELEGRAM_TOKEN)


@pytest_twisted.ensureDeferred
async def test_a_bridge_that_cannot_start_fails_status_and_test_names_it(project: Project,
                                                                           telegram: FakeTelegram) -> None:
    """Telegram enabled, its token's variable unset: the daemon runs on, `messaging
    status` fails like `systemctl is-failed` (in either format), and `messaging
    test` names the bridge and why, as a state error (exit 6, -32003)."""
    project.env.pop("TELEGRAM_BOT_TOKEN", None)
    await start(project, telegram_config(telegram))
    shown = await in_thread(project.aiwg, "messaging", "status")
    assert shown.returncode == 1, shown.stdout
    assert re.search(r"^telegram\s+error", shown.stdout, re.M)
    as_json = await in_thread(project.aiwg, "messaging", "status", "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["adapters"]["telegram"]["state"] == "error"
    tried = await in_thread(project.aiwg, "messaging", "test")
    assert tried.returncode == 6, tried.stderr
    assert "error -32003: no messaging bridge is running: telegram:" in tried.stderr
    assert "TELEGRAM_BOT_TOKEN" in tried.stderr
    assert (await call(project, "ping"))["pong"] is True


@pytest_twisted.ensureDeferred
async def test_tasks_ended_by_a_stop_are_still_notified(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram, notify={"topics": ["task:*", "daemon:stopping"]}))
    await bridge_state(project, "telegram", "connected")
    submitted = await call(project, "task.submit", prompt="a long job @sleep:30")
    await eventually(lambda: any("started" in t for t in telegram_texts(telegram)), what="task:started")
    stopped = await in_thread(project.aiwg, "daemon", "stop", "--timeout", "30")
    assert stopped.returncode == 0, stopped.stderr
    texts = telegram_texts(telegram)
    assert any("daemon:stopping" in t for t in texts)
    assert any(f"Task {submitted['taskId']} failed" in t or f"Task {submitted['taskId']} cancelled" in t
               for t in texts), texts


@pytest_twisted.ensureDeferred
async def test_reload_restarts_the_bridges_with_the_new_allowlist(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram))
    await bridge_state(project, "telegram", "connected")
    project.write_config(json.dumps({"daemon": FAST, "messaging": telegram_config(telegram, allowed_users=[MALLORY])}))
    reloaded = await call(project, "daemon.reload")
    assert "messaging.telegram" in reloaded["changed"]
    await bridge_state(project, "telegram", "connected")
    telegram.message("/help", user_id=MALLORY, username="mallory")
    [reply] = await eventually(lambda: telegram_texts(telegram, MALLORY))
    assert reply.startswith("Commands:")
    telegram.message("/help", user_id=ALICE)
    [refusal] = await eventually(lambda: telegram_texts(telegram, ALICE))
    assert "not allowed" in refusal


@pytest_twisted.ensureDeferred
async def test_telegram_409_another_poller_is_reported_then_recovered(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram))
    await bridge_state(project, "telegram", "connected")
    for _ in range(2):
        telegram.fail_next("getUpdates", 409, description="Conflict: terminated by other getUpdates request; "
                           "make sure that only one bot instance is running")
    telegram.drop_poll()  # the next poll meets the conflict
    found = await bridge_state(project, "telegram", "error")
    assert "another process is polling this bot token" in found["detail"]
    assert "nextAttemptIn" in found
    health = await call(project, "daemon.status")
    assert any("another process is polling" in issue for issue in health["health_issues"])
    await bridge_state(project, "telegram", "connected")  # the other poller went away
    no_secret_in_log(project, TELEGRAM_TOKEN)


@pytest_twisted.ensureDeferred
async def test_discord_webhook_only_notifications(project: Project, discord: FakeDiscord) -> None:
    project.env["DISCORD_WEBHOOK_URL"] = discord.webhook_url
    await start(project, {"discord": {"enabled": True, "webhook_url": "${DISCORD_WEBHOOK_URL}",
                                      "api_base_url": discord.api_base_url, "notify": {"topics": ["task:failed"]}}})
    submitted = await call(project, "task.submit", prompt="nightly build @exit:1")
    [posted] = await eventually(lambda: discord.webhook_messages)
    assert posted["embeds"][0]["title"].endswith(f"Task {submitted['taskId']} failed")
    status = await call(project, "messaging.status")
    assert status["adapters"]["discord"]["mode"] == "notifications only"
    assert not discord.connects  # no gateway without a bot token
    no_secret_in_log(project, discord.webhook_url)


@pytest_twisted.ensureDeferred
async def test_a_literal_token_works_with_a_warning_and_stays_secret(project: Project, telegram: FakeTelegram) -> None:
    await start(project, telegram_config(telegram, bot_token=TELEGRAM_TOKEN))
    await bridge_state(project, "telegram", "connected")
    # Written with the usual umask, the file is readable by others: said, as ssh does for keys.
    status = await call(project, "daemon.status")
    exposed = [i for i in status["health_issues"] if f"chmod 600 {project.paths.config_file}" in i]
    assert len(exposed) == 1 and "messaging.telegram.bot_token written literally" in exposed[0]
    assert any(f"chmod 600 {project.paths.config_file}" in w for w in status["config"]["warnings"])
    os.chmod(project.paths.config_file, 0o600)
    telegram.message("/status", user_id=ALICE)
    [answer] = await eventually(lambda: telegram_texts(telegram))
    assert answer.startswith("aiwg daemon for proj: healthy")
    status = await call(project, "daemon.status")
    assert any("messaging.telegram.bot_token: a literal secret" in w for w in status["config"]["warnings"])
    await eventually(lambda: project.paths.state_file.exists() and "messaging" in project.paths.state_file.read_text())
    for text in (json.dumps(status), project.paths.state_file.read_text(), project.log_text()):
        assert TELEGRAM_TOKEN not in text


@pytest_twisted.ensureDeferred
async def test_task_star_topics_skip_output_chunks_and_chat_turns(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram, notify={"topics": ["task:*"]}))
    await bridge_state(project, "telegram", "connected")
    telegram.message("/start", user_id=ALICE)  # what Telegram sends for the Start button
    telegram.message("/status@some_other_bot", user_id=ALICE)  # not for us: left alone
    telegram.message("a question @print:50", user_id=ALICE)  # a chat turn with output chunks
    answers = await eventually(lambda: [t for t in telegram_texts(telegram) if t.startswith("done:")])
    assert telegram_texts(telegram)[0].startswith("Commands:")
    telegram.message("/reset", user_id=ALICE)
    await eventually(lambda: any(t.startswith("Conversation reset") for t in telegram_texts(telegram)))
    submitted = await call(project, "task.submit", prompt="cli work @print:50")
    await wait_task(project, submitted["taskId"])
    await eventually(lambda: any(f"Task {submitted['taskId']} completed" in t for t in telegram_texts(telegram)))
    texts = telegram_texts(telegram)
    assert not any(" output</b>" in t for t in texts)  # no message per output chunk
    assert any(f"Task {submitted['taskId']} started" in t for t in texts)  # a CLI task's progress is notified
    assert len(answers) == 1 and not any("Task" in t and "a question" in t for t in texts)  # the chat turn's is not
    assert len([t for t in texts if t.startswith("Commands:")]) == 1  # /status@some_other_bot got nothing


@pytest_twisted.ensureDeferred
async def test_tasks_and_cancel_commands(project: Project, telegram: FakeTelegram) -> None:
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram, notify={"topics": []}))
    telegram.message("/task a slow job @sleep:30", user_id=ALICE)
    queued = await eventually(lambda: [t for t in telegram_texts(telegram) if t.startswith("Queued task")])
    task_id = re.match(r"Queued task (\S+)\.", queued[0]).group(1)
    telegram.message("/tasks running", user_id=ALICE)
    telegram.message("/tasks bogus", user_id=ALICE)
    listing = await eventually(lambda: [t for t in telegram_texts(telegram) if t.startswith("Recent tasks (running)")],
                               what="the running task listed")
    assert task_id in listing[0] and "a slow job" in listing[0]
    assert any(t.startswith("Unknown state 'bogus'") for t in telegram_texts(telegram))
    telegram.message(f"/cancel {task_id}", user_id=ALICE)
    telegram.message("/cancel t-nosuchtask", user_id=ALICE)
    await eventually(lambda: f"Cancelling task {task_id}." in telegram_texts(telegram))
    await eventually(lambda: "Unknown task t-nosuchtask (see /tasks)." in telegram_texts(telegram))
    ended = await eventually(lambda: [t for t in telegram_texts(telegram) if t.startswith(f"Task {task_id} cancelled")])
    assert ended
    assert (await call(project, "task.get", taskId=task_id))["state"] == "cancelled"


@pytest_twisted.ensureDeferred
async def test_the_bot_token_never_reaches_the_agent(project: Project, telegram: FakeTelegram) -> None:
    """A prompt (or an injection in the repository) asking the agent for the token gets nothing."""
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    project.env["OTHER_SETTING"] = "kept"
    await start(project, telegram_config(telegram, notify={"topics": []}))
    telegram.message("/task show me @env:TELEGRAM_BOT_TOKEN @env:OTHER_SETTING", user_id=ALICE)
    queued = await eventually(lambda: [t for t in telegram_texts(telegram) if t.startswith("Queued task")])
    task_id = re.match(r"Queued task (\S+)\.", queued[0]).group(1)
    record = await wait_task(project, task_id)
    [run] = await in_thread(project.fake.runs)
    assert "TELEGRAM_BOT_TOKEN" not in run["env"] and run["env"]["OTHER_SETTING"] == "kept"
    await eventually(lambda: any(t.startswith(f"Task {task_id}") for t in telegram_texts(telegram)))
    for text in (json.dumps(record), *telegram_texts(telegram), project.log_text()):
        assert TELEGRAM_TOKEN not in text


@pytest_twisted.ensureDeferred
async def test_isolated_tasks_are_reviewed_merged_and_discarded_from_a_chat(project: Project,
                                                                            telegram: FakeTelegram) -> None:
    """tasks.merge "approval": a completed isolated task's branch is announced with the
    commands; /diff shows it, /approve merges it; /discard drops another one."""
    import subprocess

    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    (project.root / "a.txt").write_text("zero\n")
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "start"]):
        subprocess.run(argv, cwd=project.root, env={**project.env, **identity}, check=True, capture_output=True)
    project.env["TELEGRAM_BOT_TOKEN"] = TELEGRAM_TOKEN
    await start(project, telegram_config(telegram, notify={"topics": ["task:awaiting_merge", "task:merged"]}),
                tasks={"isolation": "worktree", "merge": "approval"})
    telegram.message("/task @write:a.txt=one", user_id=ALICE)
    telegram.message("/task @write:a.txt=two @sleep:0.3", user_id=ALICE)
    queued = await eventually(lambda: [re.match(r"Queued task (\S+)\.", t).group(1) for t in telegram_texts(telegram)
                                       if t.startswith("Queued task")][:2] or None, what="two tasks queued")
    await eventually(lambda: len([t for t in telegram_texts(telegram) if "awaits approval to merge" in t]) == 2,
                     what="both branches announced")
    first, second = queued if len(queued) == 2 else (queued[0], None)
    waiting = [t for t in telegram_texts(telegram) if "awaits approval to merge" in t and first in t]
    assert f"/approve {first}" in waiting[0] and f"/diff {first}" in waiting[0]
    assert (await call(project, "task.get", taskId=first))["workspace"]["state"] == "awaiting_merge"
    telegram.message(f"/diff {first}", user_id=ALICE)
    diff = await eventually(lambda: [t for t in telegram_texts(telegram) if t.startswith(f"Task {first}, branch")])
    assert "a.txt | 2 +-\n" in diff[0]
    telegram.message(f"/approve {first}", user_id=ALICE)
    await eventually(lambda: [t for t in telegram_texts(telegram) if t.startswith(f"Merged task {first} into main")],
                     what="the merge answered")
    assert (project.root / "a.txt").read_text() == "one\n"
    record = await call(project, "task.get", taskId=first)
    assert record["workspace"]["state"] == "merged" and record["state"] == "completed"

    assert second is not None
    telegram.message(f"/merge {second}", user_id=ALICE)  # both rewrote a.txt: it conflicts now
    refused = await eventually(lambda: [t for t in telegram_texts(telegram) if "nothing was merged" in t],
                               what="the conflict refused")
    assert "a.txt" in refused[0] and second in refused[0]
    telegram.message(f"/discard {second}", user_id=ALICE)
    await eventually(lambda: f"Discarded task {second}'s branch aiwg/{second}." in telegram_texts(telegram))
    telegram.message("/merge t-nosuchtask", user_id=ALICE)
    await eventually(lambda: any(t.startswith("Unknown task: t-nosuchtask") for t in telegram_texts(telegram)),
                     what="an unknown task named")
    await eventually(lambda: any(t.startswith("Unknown task: t-nosuchtask") for t in telegram_texts(telegram)),
                     what="an unknown task named")
    assert (project.root / "a.txt").read_text() == "one\n"
