"""`aiwg config check` and `aiwg config show`, through the real CLI, with no daemon."""

from __future__ import annotations

import json

from tests.conftest import Project


def test_check_names_every_bad_key_and_exits_6_without_starting_anything(project: Project) -> None:
    project.write_config(json.dumps({"daemon": {"max_parallel_actions": 0, "heartbeat_interval_seconds": -1}}))
    text = project.aiwg("config", "check")
    assert text.returncode == 6
    assert "daemon.max_parallel_actions" in text.stderr and "daemon.heartbeat_interval_seconds" in text.stderr
    as_json = project.aiwg("config", "check", "--json")
    assert as_json.returncode == 6
    report = json.loads(as_json.stdout)
    assert report["valid"] is False and len(report["problems"]) == 2
    assert not project.paths.daemon_dir.exists() and not project.running()


def test_check_passes_a_good_file_a_missing_one_and_one_named_with_config(project: Project) -> None:
    missing = project.aiwg("config", "check")
    assert missing.returncode == 0 and "not there: the defaults apply" in missing.stdout
    project.write_config(json.dumps({"daemon": {"max_parallel_actions": 2}, "bogus": True}))
    good = project.aiwg("config", "check", "--json")
    assert good.returncode == 0
    report = json.loads(good.stdout)
    assert report["valid"] is True and report["exists"] is True and len(report["hash"]) == 16
    assert any("bogus" in w for w in report["warnings"])
    (project.root / "other.json").write_text("{not json")
    other = project.aiwg("config", "check", "--config", "other.json")
    assert other.returncode == 6 and "other.json" in other.stderr
    absent = project.aiwg("config", "check", "--config", "nowhere.json")
    assert absent.returncode == 6 and "file not found" in absent.stderr


def test_show_fills_in_the_defaults_and_redacts_literal_secrets(project: Project) -> None:
    project.write_config(json.dumps({
        "daemon": {"max_parallel_actions": 2},
        "agent": {"env": {"API_KEY": "sk-live-123", "GH_TOKEN": "${GH_TOKEN}", "LANG": "C"}},
        "messaging": {"slack": {"enabled": False, "bot_token": "xoxb-literal"}},
    }))
    shown = project.aiwg("config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["daemon"]["max_parallel_actions"] == 2
    assert data["daemon"]["heartbeat_interval_seconds"] == 30  # a default, filled in
    assert data["agent"]["env"] == {"API_KEY": "[redacted]", "GH_TOKEN": "${GH_TOKEN}", "LANG": "C"}
    assert data["messaging"]["slack"]["bot_token"] == "[redacted]"
    text = project.aiwg("config", "show")
    assert text.returncode == 0 and "sk-live-123" not in text.stdout and "xoxb-literal" not in text.stdout
    project.write_config("[]")
    bad = project.aiwg("config", "show", "--json")
    assert bad.returncode == 6 and json.loads(bad.stdout)["exit_code"] == 6
