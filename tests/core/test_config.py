"""Configuration: defaults from the schema, messages that name the key, warnings for unknown keys."""

from __future__ import annotations

import json
import re
from typing import Any, Iterator
from pathlib import Path

import pytest

from aiwg.configfile import load_config
from aiwg.core import config
from aiwg.errors import ConfigError
from aiwg.paths import ProjectPaths

ROOT = Path(__file__).resolve().parents[2]


def problems(document: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.validate(document, "daemon.json")
    return caught.value.problems


def test_defaults_match_the_guide() -> None:
    cfg = config.validate({}, "(defaults)")
    d = cfg.daemon
    assert d.heartbeat_interval_seconds == 30
    assert d.max_parallel_actions == 3
    assert d.action_timeout_minutes == 120
    assert d.log.max_size_mb == 50 and d.log.max_files == 5
    assert d.log.level == "info" and d.log.format == "text"
    assert d.ipc.max_line_bytes == 1024 * 1024
    assert d.shutdown_grace_seconds == 15
    assert cfg.data["watch"] == {
        "enabled": False, "paths": [], "ignore": [], "debounce_ms": 1000, "use_polling": False,
    }
    assert cfg.data["schedule"] == {"enabled": False, "jobs": [], "misfire_grace_seconds": 60}
    assert cfg.data["rules"] == []
    assert cfg.data["actions"] == {}
    assert cfg.data["automation"] == {"max_fires_per_minute": 10, "max_chain_depth": 3}


def test_the_guides_example_config_is_valid() -> None:
    guide = {
        "daemon": {"heartbeat_interval_seconds": 30, "max_parallel_actions": 3,
                   "action_timeout_minutes": 120, "log": {"max_size_mb": 50, "max_files": 5}},
        "watch": {"enabled": True, "paths": ["src/", "test/", ".aiwg/"],
                  "ignore": ["node_modules/", ".git/", "*.log"], "debounce_ms": 1000},
        "schedule": {"enabled": True, "jobs": [
            {"name": "health-check", "cron": "*/30 * * * *", "action": "health-check"},
            {"name": "daily-audit", "cron": "0 9 * * *", "action": "security-audit"}]},
        "rules": [{"id": "auto-test-on-change",
                   "trigger": {"type": "file_change", "pattern": "src/**/*.ts"},
                   "condition": {"type": "debounce", "interval_ms": 5000},
                   "action": {"type": "submit_task", "prompt": "Run tests for the changed files"}}],
    }
    # The guide's job names an action it never defines; we say so, naming the job …
    assert problems(guide) == [
        "schedule.jobs[1] (daily-audit).action: 'security-audit' is neither a built-in action "
        "(health-check) nor a name in `actions` (none defined); define it as "
        '"actions": {"security-audit": {"prompt": "…"}}'
    ]
    # … and with the action defined, the guide's example is valid as written.
    guide["actions"] = {"security-audit": {"prompt": "Audit dependencies for known vulnerabilities", "priority": 5}}
    cfg = config.validate(guide, "daemon.json")
    assert cfg.warnings == ()
    assert cfg.data["watch"]["use_polling"] is False  # default filled inside a given section


def test_error_names_key_path_constraint_and_value() -> None:
    assert problems({"daemon": {"max_parallel_actions": "three"}}) == [
        "daemon.max_parallel_actions: must be an integer ≥ 1 and ≤ 256, got 'three'"
    ]


@pytest.mark.parametrize(
    "document, expected",
    [
        ({"daemon": {"max_parallel_actions": 0}}, "daemon.max_parallel_actions: must be an integer ≥ 1 and ≤ 256, got 0"),
        ({"daemon": {"max_parallel_actions": 2.5}}, "daemon.max_parallel_actions: must be an integer ≥ 1 and ≤ 256, got 2.5"),
        ({"daemon": {"max_parallel_actions": True}}, "daemon.max_parallel_actions: must be an integer ≥ 1 and ≤ 256, got true"),
        ({"daemon": {"heartbeat_interval_seconds": 0}}, "daemon.heartbeat_interval_seconds: must be a number ≥ 1 and ≤ 86400, got 0"),
        ({"daemon": {"log": {"level": "loud"}}}, 'daemon.log.level: must be one of "debug", "info", "warn", "error", got \'loud\''),
        ({"daemon": {"log": {"max_files": 0}}}, "daemon.log.max_files: must be an integer ≥ 1 and ≤ 1000, got 0"),
        ({"watch": {"enabled": "yes"}}, "watch.enabled: must be true or false, got 'yes'"),
        ({"watch": {"ignore": "*.log"}}, "watch.ignore: must be a list of non-empty strings, got '*.log'"),
        ({"daemon": []}, "daemon: must be an object, got []"),
        ({"rules": [{"id": "r", "trigger": {"type": "file_change"}, "action": {"type": "submit_task", "prompt": "p"}}]},
         "rules[0] (r).trigger.pattern: required"),
        ({"rules": [{"id": "r", "trigger": {"type": "nope"}, "action": {"type": "submit_task", "prompt": "p"}}]},
         'rules[0] (r).trigger.type: must be one of "file_change", "schedule", "event", got \'nope\''),
        ({"schedule": {"jobs": [{"cron": "* * * * *", "action": "x"}]}}, "schedule.jobs[0].name: required"),
        ({"schedule": {"jobs": [{"name": "never", "cron": "0 0 31 2 *", "action": "health-check"}]}},
         "schedule.jobs[0] (never).cron: '0 0 31 2 *' never fires: no date matches it (such as 31 February)"),
        ({"rules": [{"id": "r", "trigger": {"type": "schedule", "cron": "0 0 31 4 *"},
                     "action": {"type": "submit_task", "prompt": "p"}}]},
         "rules[0] (r).trigger.cron: '0 0 31 4 *' never fires: no date matches it (such as 31 February)"),
    ],
)
def test_errors(document: dict, expected: str) -> None:
    assert expected in problems(document)


def test_all_problems_are_reported_at_once() -> None:
    found = problems({"daemon": {"max_parallel_actions": -1, "log": {"max_size_mb": "big"}}, "watch": {"debounce_ms": -5}})
    assert len(found) == 3


def test_duplicate_ids_and_names() -> None:
    rule = {"id": "same", "trigger": {"type": "event", "topic": "x"}, "action": {"type": "submit_task", "prompt": "p"}}
    job = {"name": "j", "cron": "* * * * *", "action": "health-check"}
    found = problems({"rules": [rule, rule], "schedule": {"jobs": [job, job]}})
    assert "rules[1] (same).id: 'same' is already used by rules[0]" in found
    assert "schedule.jobs[1] (j).name: 'j' is already used by schedule.jobs[0]" in found


def test_unknown_keys_are_warnings_with_suggestions_and_are_dropped() -> None:
    cfg = config.validate({"daemon": {"max_paralel_actions": 5}, "webhook": {}}, "daemon.json")
    assert "daemon.max_paralel_actions: unknown key, ignored (did you mean 'max_parallel_actions'?)" in cfg.warnings
    assert "webhook: unknown key, ignored" in cfg.warnings
    assert "webhook" not in cfg.data
    assert cfg.daemon.max_parallel_actions == 3


def test_invalid_json_names_line_and_column() -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse_config_text('{\n  "daemon": {,}\n}', "x.json")
    assert caught.value.problems[0].startswith("not valid JSON:")
    assert "line 2" in caught.value.problems[0]


def test_top_level_must_be_an_object() -> None:
    assert problems([1]) == ["(top level): must be an object, got [1]"]


def test_digest_and_changed_sections() -> None:
    a = config.validate({}, "a")
    b = config.validate({"daemon": {"log": {"level": "debug"}}}, "b")
    assert a.digest == config.validate({}, "c").digest
    assert a.digest != b.digest
    assert b.changed_sections(a) == ["daemon.log"]


def test_missing_default_file_means_defaults_but_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    paths = ProjectPaths(tmp_path)
    assert load_config(paths).daemon.max_parallel_actions == 3
    with pytest.raises(ConfigError, match="file not found"):
        load_config(paths, "missing.json")


def test_explicit_config_is_relative_to_the_project(tmp_path: Path) -> None:
    (tmp_path / "prod.json").write_text('{"daemon": {"max_parallel_actions": 1}}')
    assert load_config(ProjectPaths(tmp_path), "prod.json").daemon.max_parallel_actions == 1


def test_published_schema_is_the_shipped_schema() -> None:
    published = ROOT / "docs" / "daemon.schema.json"
    assert json.loads(published.read_text()) == config.schema()


def test_configuration_reference_documents_every_key() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()

    def keys(node: dict, prefix: str = "") -> list[str]:
        out = []
        for name, sub in node.get("properties", {}).items():
            if name == "$schema":
                continue
            path = f"{prefix}{name}"
            out.append(path)
            if sub.get("type") == "object":
                out.extend(keys(sub, path + "."))
        return out

    missing = [k for k in keys(config.schema()) if f"`{k}`" not in reference]
    assert missing == []


def test_example_configs_in_etc_are_valid() -> None:
    for name in ("daemon.json", "daemon.dev.json", "daemon.prod.json"):
        cfg = config.parse_config_text((ROOT / "etc" / name).read_text(), name)
        assert cfg.warnings == (), (name, cfg.warnings)


# -- messaging ------------------------------------------------------------------------------


def messaging(**bridges: dict) -> dict:
    return {"messaging": bridges}


def test_messaging_defaults_are_all_bridges_off() -> None:
    """No daemon.json: no bridge runs, nobody is allowed, the usual topics are forwarded."""
    section = config.validate({}, "(defaults)").data["messaging"]
    assert set(section) == {"telegram", "slack", "discord"}
    topics = ["task:completed", "task:failed", "task:timeout", "task:awaiting_approval", "health:degraded"]
    for bridge in section.values():
        assert bridge["enabled"] is False and bridge["bot_token"] == ""
        assert bridge["allowed_users"] == [] and bridge["refuse"] == "reply"
        assert bridge["notify"] == {"topics": topics, "min_severity": "info"}
    assert section["telegram"]["api_base_url"] == "https://api.telegram.org"
    assert section["telegram"]["poll_timeout_seconds"] == 30
    assert section["slack"]["api_base_url"] == "https://slack.com/api"
    assert section["discord"]["api_base_url"] == "https://discord.com/api/v10"
    assert section["discord"]["gateway_url"] == ""


def test_disabled_bridges_need_no_token() -> None:
    """A bridge switched off, or left at its defaults, is no problem and no warning."""
    cfg = config.validate(messaging(telegram={"enabled": False}, slack={"enabled": False, "bot_token": ""},
                                    discord={}), "daemon.json")
    assert cfg.warnings == ()


@pytest.mark.parametrize(
    "bridges, expected",
    [
        ({"telegram": {"enabled": True}},
         'messaging.telegram.bot_token: required when the bridge is enabled, e.g. "${TELEGRAM_BOT_TOKEN}"'),
        ({"slack": {"enabled": True}},
         "messaging.slack.bot_token: required when the bridge is enabled (or webhook_url for notifications "
         'only), e.g. "${SLACK_BOT_TOKEN}"'),
        ({"discord": {"enabled": True, "bot_token": "   "}},
         "messaging.discord.bot_token: required when the bridge is enabled (or webhook_url for notifications "
         'only), e.g. "${DISCORD_BOT_TOKEN}"'),
        ({"slack": {"enabled": True, "app_token": "${SLACK_APP_TOKEN}", "webhook_url": "${SLACK_WEBHOOK_URL}"}},
         "messaging.slack.bot_token: required with app_token: answers are posted with the bot token"),
    ],
)
def test_an_enabled_bridge_without_credentials_is_an_error(bridges: dict, expected: str) -> None:
    """The error names the key to set and how (a blank token counts as none)."""
    assert problems(messaging(**bridges)) == [expected]


@pytest.mark.parametrize("bridge", ["slack", "discord"])
def test_a_webhook_alone_is_enough_for_notifications(bridge: str) -> None:
    """Slack and Discord can notify through a webhook with no bot; nothing listens, so no allowlist warning."""
    cfg = config.validate(messaging(**{bridge: {"enabled": True, "webhook_url": "${HOOK}"}}), "daemon.json")
    assert cfg.warnings == ()
    assert cfg.data["messaging"][bridge]["enabled"] is True


@pytest.mark.parametrize(
    "bridge, key, value",
    [
        ("telegram", "bot_token", "123456:AAE-literal-telegram-token"),
        ("slack", "bot_token", "xoxb-literal-slack-token"),
        ("slack", "app_token", "xapp-literal-app-token"),
        ("discord", "webhook_url", "https://discord.com/api/webhooks/1/literal-hook-secret"),
    ],
)
def test_a_literal_secret_is_a_warning_that_never_repeats_it(bridge: str, key: str, value: str) -> None:
    """Warnings are logged and shown; the secret itself must not be in them."""
    cfg = config.validate(messaging(**{bridge: {key: value}}), "daemon.json")
    found = [w for w in cfg.warnings if w.startswith(f"messaging.{bridge}.{key}: a literal secret")]
    assert len(found) == 1
    assert "export " in found[0]
    assert all(value not in w for w in cfg.warnings)
    assert cfg.data["messaging"][bridge][key] == value  # still accepted as written


def test_an_environment_reference_is_no_literal_secret() -> None:
    """`${VAR}` is the recommended form: no warning for it."""
    cfg = config.validate(messaging(telegram={"enabled": True, "bot_token": "${TELEGRAM_BOT_TOKEN}",
                                              "allowed_users": [42]}), "daemon.json")
    assert cfg.warnings == ()


@pytest.mark.parametrize(
    "bridge, section, expected",
    [
        ("telegram", {"bot_token": "${T}"},
         "messaging.telegram.allowed_users: empty (and no allowed_chats): nobody may send commands or chat; "
         "notifications still go out"),
        ("slack", {"bot_token": "${B}", "app_token": "${A}"},
         "messaging.slack.allowed_users: empty (and no allowed_channels): nobody may send commands or chat; "
         "notifications still go out"),
        ("discord", {"bot_token": "${D}"},
         "messaging.discord.allowed_users: empty (and no allowed_channels): nobody may send commands or chat; "
         "notifications still go out"),
    ],
)
def test_an_empty_allowlist_on_a_listening_bridge_is_a_warning(bridge: str, section: dict, expected: str) -> None:
    """Legal (an empty list admits nobody), but likely a mistake worth a word."""
    cfg = config.validate(messaging(**{bridge: {"enabled": True, **section}}), "daemon.json")
    assert cfg.warnings == (expected,)


def test_no_allowlist_warning_when_someone_is_allowed_or_nothing_listens() -> None:
    """Allowed chats count as an allowlist; Slack without an app token cannot listen."""
    quiet = [
        messaging(telegram={"enabled": True, "bot_token": "${T}", "allowed_chats": [-100123]}),
        messaging(slack={"enabled": True, "bot_token": "${B}", "app_token": "${A}", "allowed_channels": ["C1"]}),
        messaging(slack={"enabled": True, "bot_token": "${B}"}),
        messaging(discord={"enabled": True, "bot_token": "${D}", "allowed_users": ["900"]}),
    ]
    for document in quiet:
        assert config.validate(document, "daemon.json").warnings == (), document


def test_notify_topics_are_validated_with_their_index() -> None:
    """A bad pattern names the bridge and the list position, even on a disabled bridge."""
    found = problems(messaging(discord={"enabled": True, "bot_token": "${D}", "allowed_users": [1],
                                        "notify": {"topics": ["task:*", "bad topic!", "*"]}},
                               slack={"notify": {"topics": ["no spaces allowed"]}}))
    assert sorted(found) == [
        "messaging.discord.notify.topics[1]: must be a topic or a pattern with * wildcards, got 'bad topic!'",
        "messaging.slack.notify.topics[0]: must be a topic or a pattern with * wildcards, got 'no spaces allowed'",
    ]


def test_messaging_schema_errors_name_the_key() -> None:
    """Type errors in the section read like every other config error."""
    assert "messaging.telegram.enabled: must be true or false, got 'yes'" in problems(
        messaging(telegram={"enabled": "yes"}))
    assert any(p.startswith("messaging.telegram.poll_timeout_seconds: must be an integer ≥ 1 and ≤ 50")
               for p in problems(messaging(telegram={"poll_timeout_seconds": 0})))


def test_a_mistyped_secret_is_named_but_never_shown() -> None:
    """A token written as a number is still a secret: the error names the key, not the value."""
    with pytest.raises(ConfigError) as caught:
        config.validate({"messaging": {"telegram": {"bot_token": 123456789}}}, "daemon.json")
    [problem] = caught.value.problems
    assert problem.startswith("messaging.telegram.bot_token: must be a string") and "123456789" not in problem


# -- every number is bounded, and the docs say the same bounds -----------------------

def _numbers(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        kind = node.get("type")
        if kind in ("number", "integer"):
            yield path, node
        for key, value in node.items():
            yield from _numbers(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _numbers(value, f"{path}/{index}")


def test_every_number_in_the_schema_has_a_minimum_and_a_maximum() -> None:
    from aiwg.core.config import schema

    unbounded = [path for path, node in _numbers(schema())
                 if "maximum" not in node or not ({"minimum", "exclusiveMinimum"} & node.keys())]
    assert unbounded == []


@pytest.mark.parametrize("document, key", [
    ({"daemon": {"heartbeat_interval_seconds": 1e-300}}, "daemon.heartbeat_interval_seconds"),
    ({"daemon": {"task_output_max_mb": 1e308}}, "daemon.task_output_max_mb"),
    ({"daemon": {"ipc": {"max_line_bytes": 1e20}}}, "daemon.ipc.max_line_bytes"),
    ({"daemon": {"max_parallel_actions": 10**9}}, "daemon.max_parallel_actions"),
    ({"watch": {"debounce_ms": 10**12}}, "watch.debounce_ms"),
    ({"chat": {"max_turns": 10**12}}, "chat.max_turns"),
])
def test_absurd_numbers_are_refused_naming_the_key(document: dict, key: str) -> None:
    found = problems(document)
    assert len(found) == 1 and found[0].startswith(f"{key}: must be a")


def test_the_configuration_reference_states_the_schemas_bounds() -> None:
    from aiwg.core.config import schema

    def node_for(key: str) -> dict:
        node: Any = schema()
        for part in key.replace("[]", ".[]").split("."):
            node = node["items"] if part == "[]" else (
                node["additionalProperties"] if part == "<name>" else node["properties"][part])
        return node

    def number(value: Any) -> str:
        value = int(value) if isinstance(value, float) and value.is_integer() else value
        return f"{value:,}" if isinstance(value, int) and abs(value) >= 10000 else str(value)

    checked = 0
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        match = re.match(r"^\| `([a-z_.\[\]<>]+)` \| (number|integer) \| [^|]* \| ([^|]*) \|", line)
        if not match:
            continue
        node, constraint = node_for(match.group(1)), match.group(3)
        low = (f"≥ {number(node['minimum'])}" if "minimum" in node else f"> {number(node['exclusiveMinimum'])}")
        assert f"{low}, ≤ {number(node['maximum'])}" in constraint, match.group(1)
        checked += 1
    assert checked >= 35


# -- secrets written literally in a file others can read -----------------------------

def test_literal_secrets_are_named_and_variables_are_not() -> None:
    from aiwg.core.config import literal_secrets

    data = {
        "messaging": {"telegram": {"bot_token": "123:abc"}, "slack": {"bot_token": "${SLACK_TOKEN}",
                                                                        "webhook_url": "https://hooks/x"}},
        "agent": {"env": {"ANTHROPIC_API_KEY": "sk-1", "NODE_ENV": "production", "GH_TOKEN": "${GH}"}},
        "actions": {"deploy": {"env": {"DEPLOY_PASSWORD": "hunter2"}}},
        "rules": [{"action": {"env": {"Secret_Thing": "x"}}}],
    }
    assert literal_secrets(data) == ["messaging.telegram.bot_token", "messaging.slack.webhook_url",
                                     "agent.env.ANTHROPIC_API_KEY", "actions.deploy.env.DEPLOY_PASSWORD",
                                     "rules[0].action.env.Secret_Thing"]


def test_a_readable_file_with_a_literal_token_warns_with_the_chmod(tmp_path: Path) -> None:
    import os

    paths = ProjectPaths(tmp_path)
    paths.aiwg_dir.mkdir()
    paths.config_file.write_text(json.dumps({"messaging": {"telegram": {"bot_token": "123:abc"}}}))
    os.chmod(paths.config_file, 0o644)
    [warning] = [w for w in load_config(paths).warnings if "chmod" in w]
    assert "messaging.telegram.bot_token" in warning and "readable by group and others (mode 0644)" in warning
    assert f"chmod 600 {paths.config_file}" in warning
    os.chmod(paths.config_file, 0o600)
    assert not [w for w in load_config(paths).warnings if "chmod" in w]
    paths.config_file.write_text(json.dumps({"messaging": {"telegram": {"bot_token": "${TG}"}}}))
    os.chmod(paths.config_file, 0o644)
    assert not [w for w in load_config(paths).warnings if "chmod" in w]
