"""Agent argv, environment and result parsing."""

from __future__ import annotations

import json

from aiwg.core.agents import (
    AgentSettings,
    build_argv,
    child_env,
    parse_result,
    redact,
    secret_forms,
    secret_values,
)


def test_default_argv_keeps_the_prompt_as_one_element() -> None:
    prompt = "fix it; rm -rf / $(id)\nnow"
    assert build_argv(AgentSettings(), prompt) == ["claude", "-p", prompt, "--output-format", "json"]


def test_templates_args_and_agent() -> None:
    codex = AgentSettings(command=("codex", "exec", "{prompt}"), args=("--sandbox", "workspace-write"), output="text")
    assert build_argv(codex, "hi") == ["codex", "exec", "hi", "--sandbox", "workspace-write"]
    aider = AgentSettings(command=("aider", "--message={prompt}", "--yes"))
    assert build_argv(aider, "x y") == ["aider", "--message=x y", "--yes"]
    assert build_argv(AgentSettings(command=("tool",)), "p") == ["tool", "p"]
    assert build_argv(AgentSettings(), "p", agent="reviewer")[-2:] == ["--agent", "reviewer"]


def test_child_env_drops_nesting_guards_and_expands_vars() -> None:
    base = {"PATH": "/bin", "CLAUDECODE": "1", "CLAUDE_CODE_ENTRYPOINT": "cli", "TOKEN": "abc123"}
    env, missing = child_env(base, {"API_KEY": "${TOKEN}", "URL": "https://x/${NOPE}/y"})
    assert env == {"PATH": "/bin", "TOKEN": "abc123", "API_KEY": "abc123", "URL": "https://x//y"}
    assert missing == ["NOPE"]


def test_secret_values_and_redaction() -> None:
    secrets = secret_values({"T": "supersecret"}, {"A": "${T}", "B": "literal-key", "C": "x"})
    assert secrets == ["supersecret", "literal-key"]
    assert redact("token=supersecret and literal-key", secrets) == "token=[redacted] and [redacted]"


def test_secret_forms_cover_json_escapes_longest_first() -> None:
    forms = secret_forms(['q"\\é-key', "plain-key", ""])
    assert set(forms) == {
        'q"\\é-key'.encode(), 'q\\"\\\\é-key'.encode(), b'q\\"\\\\\\u00e9-key', b"plain-key",
    }
    assert [len(f) for f in forms] == sorted((len(f) for f in forms), reverse=True)
    assert secret_forms(["\udcff-from-a-latin1-env"]) == [b"\\udcff-from-a-latin1-env", b"\xff-from-a-latin1-env"]


def test_parse_claude_json_result() -> None:
    result = {"type": "result", "subtype": "success", "is_error": False, "result": "All green",
              "session_id": "abc", "total_cost_usd": 0.12}
    parsed = parse_result("claude-json", json.dumps(result) + "\n")
    assert (parsed.result, parsed.session_id, parsed.cost_usd, parsed.is_error) == ("All green", "abc", 0.12, False)


def test_parse_stream_json_takes_the_last_result_line() -> None:
    lines = [{"type": "system", "subtype": "init"}, {"type": "assistant"},
             {"type": "result", "is_error": True, "subtype": "error_max_turns", "session_id": "s"}]
    parsed = parse_result("claude-json", "\n".join(json.dumps(x) for x in lines))
    assert parsed.is_error and parsed.subtype == "error_max_turns" and parsed.result is None


def test_old_cost_field_and_garbage() -> None:
    assert parse_result("claude-json", '{"type":"result","cost_usd":1}').cost_usd == 1.0
    assert parse_result("claude-json", "plain text answer").result == "plain text answer"
    assert parse_result("text", "  answer \n").result == "answer"
    assert parse_result("claude-json", "").result is None
