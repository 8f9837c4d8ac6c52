"""Agent argv, environment and result parsing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from aiwg.core.agents import (
    MAX_ARGUMENT_BYTES,
    AgentSettings,
    build_argv,
    prompt_problem,
    child_env,
    parse_result,
    redact,
    secret_forms,
    secret_values,
)


def test_default_argv_keeps_the_prompt_as_one_element_after_the_options() -> None:
    prompt = "fix it; rm -rf / $(id)\nnow"
    assert build_argv(AgentSettings(), prompt) == ["claude", "-p", "--output-format", "json", "--", prompt]


def test_templates_args_and_agent() -> None:
    codex = AgentSettings(command=("codex", "exec", "{prompt}"), args=("--sandbox", "workspace-write"), output="text")
    assert build_argv(codex, "hi") == ["codex", "exec", "--sandbox", "workspace-write", "--", "hi"]
    aider = AgentSettings(command=("aider", "--message={prompt}", "--yes"))
    assert build_argv(aider, "x y") == ["aider", "--message=x y", "--yes"]
    assert build_argv(AgentSettings(command=("tool",)), "p") == ["tool", "--", "p"]
    assert build_argv(AgentSettings(), "p", agent="reviewer")[-4:] == ["--agent", "reviewer", "--", "p"]
    assert build_argv(AgentSettings(), "p", resume="s-1")[-4:] == ["--resume", "s-1", "--", "p"]


def _parser(options: dict[str, bool], prompt_option: str | None = None) -> argparse.ArgumentParser:
    """A model of an agent CLI's parser: `options` maps each option to whether it takes
    a value; the prompt is `prompt_option`'s value, or the positional argument.
    argparse treats `--` and `--opt=value` as commander (claude), clap (codex),
    yargs (gemini) and argparse (aider) do."""
    parser = argparse.ArgumentParser(exit_on_error=False, add_help=False)
    for option, takes_value in options.items():
        parser.add_argument(option, **({} if takes_value else {"action": "store_true"}))
    if prompt_option is None:
        parser.add_argument("prompt", nargs="?")
    return parser


#: The templates docs/configuration.md documents, with a model of each CLI's options.
DOCUMENTED = {
    "claude": (AgentSettings(), {"-p": False, "--output-format": True, "--dangerously-skip-permissions": False,
                                 "--agent": True, "--resume": True}, None),
    "codex": (AgentSettings(command=("codex", "exec", "{prompt}"), args=("--sandbox", "workspace-write"),
                            output="text"), {"exec": False, "--sandbox": True, "--dangerously-skip-permissions": False},
              None),
    "gemini": (AgentSettings(command=("gemini", "--prompt={prompt}"), args=("--approval-mode=yolo",), output="text"),
               {"--prompt": True, "--approval-mode": True, "--yolo": False}, "--prompt"),
    "aider": (AgentSettings(command=("aider", "--message={prompt}"), args=("--yes-always", "--no-auto-commits"),
                            output="text"), {"--message": True, "--yes-always": False, "--no-auto-commits": False},
              "--message"),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
# (A prompt of exactly "--" is left out: argparse, aider's parser, drops that value.)
@pytest.mark.parametrize("prompt", ["--dangerously-skip-permissions", "-p", "--yolo", "-- --sandbox x", "-"])
def test_a_prompt_that_looks_like_an_option_is_read_as_the_prompt(name: str, prompt: str) -> None:
    settings, options, prompt_option = DOCUMENTED[name]
    argv = build_argv(settings, prompt)
    program, *rest = argv
    if name == "codex":
        rest = rest[1:]  # the subcommand
        options = {k: v for k, v in options.items() if k != "exec"}
    parsed = vars(_parser(options, prompt_option).parse_args(rest))
    got = parsed[prompt_option.lstrip("-")] if prompt_option else parsed["prompt"]
    assert got == prompt
    assert not parsed.get("dangerously_skip_permissions") and not parsed.get("yolo")


def test_the_documented_templates_are_the_ones_tested() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for name, (settings, _, _) in DOCUMENTED.items():
        if name == "claude":
            continue
        assert json.dumps(list(settings.command)) in docs, f"{name}'s template in docs/configuration.md changed"


def test_a_prompt_over_one_argument_is_refused_with_the_limit() -> None:
    assert prompt_problem(AgentSettings(), "x" * (MAX_ARGUMENT_BYTES - 1)) is None
    problem = prompt_problem(AgentSettings(), "x" * MAX_ARGUMENT_BYTES)
    assert problem is not None and "131,071 bytes (128 KiB)" in problem and "131,072 bytes" in problem
    # Multi-byte text counts in bytes, and an embedded template counts its own text too.
    assert prompt_problem(AgentSettings(), "é" * 65536) is not None
    aider = AgentSettings(command=("aider", "--message={prompt}"))
    assert prompt_problem(aider, "x" * (MAX_ARGUMENT_BYTES - 5)) is not None


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


def test_a_parser_without_end_of_options_keeps_the_template_and_refuses_dash_prompts() -> None:
    wrapper = AgentSettings(command=("sh", "-c", 'echo "$0"', "{prompt}"), end_of_options=False)
    assert build_argv(wrapper, "hello") == ["sh", "-c", 'echo "$0"', "hello"]
    assert prompt_problem(wrapper, "hello") is None
    problem = prompt_problem(wrapper, "-rf /")
    assert problem is not None and "starts with '-'" in problem and "agent.end_of_options: false" in problem
    joined = AgentSettings(command=("tool", "--message={prompt}"), end_of_options=False)
    assert prompt_problem(joined, "-fine as a value") is None


def test_a_raw_result_is_cut_with_a_pointer_to_the_output_file() -> None:
    from aiwg.core.agents import MAX_RAW_RESULT_CHARS

    flood = "x" * (MAX_RAW_RESULT_CHARS + 10)
    for output in ("text", "claude-json"):
        result = parse_result(output, flood).result
        assert result is not None and result.startswith("x" * MAX_RAW_RESULT_CHARS)
        assert result.endswith("[… 10 more characters in the task's output file]")
    assert parse_result("text", "  short answer\n").result == "short answer"
