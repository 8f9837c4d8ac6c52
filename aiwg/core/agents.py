# tests: tests/core/test_agents.py
"""Agent command lines, child environments and result parsing. No shell, ever.

The default agent is `claude -p <prompt> --output-format json`: the prompt is
one argv element whatever it contains, and the JSON result carries the answer,
the session id (for follow-up turns) and the cost.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping

from attrs import frozen

DEFAULT_COMMAND = ("claude", "-p", "{prompt}", "--output-format", "json")
OUTPUT_PARSERS = ("text", "claude-json")

#: Variables that make `claude` refuse to start, or change what it does, when
#: the daemon itself was started from inside a Claude Code session.
DROPPED_ENV = ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@frozen
class AgentSettings:
    command: tuple[str, ...] = DEFAULT_COMMAND
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = {}
    output: str = "claude-json"
    #: The agent's parser takes `--` as the end of its options (most do).
    end_of_options: bool = True

    @property
    def program(self) -> str:
        return self.command[0]


@frozen
class AgentResult:
    """What the agent reported about its run, when it reports anything."""

    result: str | None = None
    session_id: str | None = None
    cost_usd: float | None = None
    is_error: bool = False
    subtype: str | None = None


#: Linux's limit on one argv element (MAX_ARG_STRLEN, 32 pages), its NUL included.
MAX_ARGUMENT_BYTES = 128 * 1024


def build_argv(settings: AgentSettings, prompt: str, agent: str | None = None,
               resume: str | None = None) -> list[str]:
    """The command line for one run: the template's options, extra args, `--agent`,
    `--resume <session>` when a chat turn continues an agent session, and the prompt.

    A prompt is never read as an option, whoever wrote it (a chat user, a rule, a
    file name): a `{prompt}` element of its own, or none in the template, puts it
    last, after `--`, which ends the options for every common parser (Claude Code's,
    codex's, argparse, yargs); a `{prompt}` inside an element (`--message={prompt}`)
    is that option's value, whatever it starts with. With `end_of_options` off
    (a parser that does not know `--`, such as `sh -c`), the prompt stays where
    `{prompt}` is, and prompt_problem refuses one that starts with `-`."""
    if not settings.end_of_options:
        return _as_written(settings, prompt, agent, resume)
    argv: list[str] = []
    embedded = False
    for part in settings.command:
        if part == "{prompt}":
            continue
        if "{prompt}" in part:
            argv.append(part.replace("{prompt}", prompt))
            embedded = True
        else:
            argv.append(part)
    argv.extend(settings.args)
    if agent:
        argv.extend(["--agent", agent])
    if resume:
        argv.extend(["--resume", resume])
    if not embedded:
        argv.extend(["--", prompt])
    return argv


def _as_written(settings: AgentSettings, prompt: str, agent: str | None, resume: str | None) -> list[str]:
    argv = [part.replace("{prompt}", prompt) for part in settings.command]
    argv.extend(settings.args)
    if agent:
        argv.extend(["--agent", agent])
    if resume:
        argv.extend(["--resume", resume])
    if not any("{prompt}" in part for part in settings.command):
        argv.append(prompt)
    return argv


def argument_bytes(text: str) -> int:
    """How many bytes `text` takes as one argv element (with its NUL)."""
    try:
        return len(text.encode("utf-8", "surrogateescape")) + 1
    except UnicodeEncodeError:
        return len(text.encode("utf-8", "surrogatepass")) + 1


def prompt_problem(settings: AgentSettings, prompt: str) -> str | None:
    """Why this prompt cannot be given to the agent (None: it can): checked when a
    task is submitted, so that it is refused then rather than failed at spawn."""
    standalone = not any("{prompt}" in part and part != "{prompt}" for part in settings.command)
    if not settings.end_of_options and standalone and prompt.startswith("-"):
        return ("the prompt starts with '-', and this agent's command line (agent.end_of_options: false) "
                "has no way to tell it from an option: reword it, or give the prompt as an option's value "
                "(`--message={prompt}`)")
    template = next((part for part in settings.command if "{prompt}" in part and part != "{prompt}"), "{prompt}")
    size = argument_bytes(template.replace("{prompt}", prompt))
    if size > MAX_ARGUMENT_BYTES:
        return (f"the prompt is {size - 1:,} bytes; one command-line argument holds at most "
                f"{MAX_ARGUMENT_BYTES - 1:,} bytes (128 KiB) on Linux: shorten it, or put the text in a file "
                "and name the file in the prompt")
    return None


def expand(template: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """`${VAR}` from `environ`; returns the text and the names that were not set."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            missing.append(name)
            return ""
        return environ[name]

    return _VAR.sub(replace, template), missing


def referenced_names(template: str) -> list[str]:
    """The variables a `${VAR}` template names."""
    return [m.group(1) for m in _VAR.finditer(template)]


def child_env(
    base: Mapping[str, str], *layers: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The agent's environment: the daemon's, minus nesting guards, plus each
    layer with `${VAR}` expanded from the daemon's. Returns (env, unset names)."""
    env = {k: v for k, v in base.items() if k not in DROPPED_ENV}
    missing: list[str] = []
    for layer in layers:
        for key, template in layer.items():
            value, unset = expand(template, base)
            env[key] = value
            missing.extend(unset)
    return env, missing


def secret_values(base: Mapping[str, str], *layers: Mapping[str, str]) -> list[str]:
    """Values that must never be logged: whatever configured env resolves to."""
    values = []
    for layer in layers:
        for template in layer.values():
            value, _ = expand(template, base)
            if len(value) >= 4:
                values.append(value)
    return values


def _as_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")  # a value from a non-UTF-8 environment
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


def secret_forms(secrets: Iterable[str]) -> list[bytes]:
    """Each secret as an agent may print it: as it is, and escaped inside a JSON
    string (non-ASCII kept, as JavaScript writes it, or escaped, as Python does).
    A JSON reply is decoded later, after redaction, so an escaped secret missed in
    the output would come back in the clear in the task's result. Longest first."""
    forms: set[bytes] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.add(_as_bytes(secret))
        forms.add(_as_bytes(json.dumps(secret, ensure_ascii=False)[1:-1]))
        forms.add(json.dumps(secret)[1:-1].encode("ascii"))
    return sorted(forms, key=len, reverse=True)


class StreamRedactor:
    """Secrets taken out of an agent's output streams as they come: each stream's
    last bytes (one fewer than the longest secret form) are held back until the
    next read, so a secret split across two reads is still caught; `flush` gives
    them up once the stream has ended."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.forms = secret_forms(secrets)
        self.holdback = max((len(s) for s in self.forms), default=1) - 1
        self._carry: dict[int, bytes] = {}

    def feed(self, stream: int, data: bytes) -> bytes:
        """What of `data` can go out now, redacted."""
        if not self.forms:
            return data
        data = self.redact(self._carry.pop(stream, b"") + data)
        if self.holdback:
            data, self._carry[stream] = data[:-self.holdback], data[-self.holdback:]
        return data

    def flush(self, stream: int) -> bytes:
        """What was held back of a stream that has ended, redacted."""
        held = self._carry.pop(stream, b"")
        return self.redact(held) if held else b""

    def redact(self, data: bytes) -> bytes:
        for secret in self.forms:
            if secret in data:
                data = data.replace(secret, b"[redacted]")
        return data


def redact(text: str, secrets: Iterable[str], mark: str = "[redacted]") -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, mark)
    return text


#: A result taken from raw output (`text`, or no JSON result found) is cut here:
#: the output file has the whole of it.
MAX_RAW_RESULT_CHARS = 64 * 1024


def _raw_result(text: str) -> str | None:
    text = text.strip()
    if len(text) > MAX_RAW_RESULT_CHARS:
        cut = len(text) - MAX_RAW_RESULT_CHARS
        text = text[:MAX_RAW_RESULT_CHARS] + f"\n[… {cut} more characters in the task's output file]"
    return text or None


def parse_result(output: str, stdout: str) -> AgentResult:
    """Read the agent's result from its stdout (`claude-json`: the last JSON object
    with "type": "result"; `text`: the whole stdout is the answer, up to
    MAX_RAW_RESULT_CHARS)."""
    if output == "text":
        return AgentResult(result=_raw_result(stdout))
    found: Mapping[str, Any] | None = None
    stripped = stdout.strip()
    candidates = [stripped] if stripped.startswith("{") else []
    candidates += [line for line in reversed(stdout.splitlines()) if line.lstrip().startswith("{")]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("type") == "result":
            found = value
            break
    if found is None:
        return AgentResult(result=_raw_result(stripped))
    cost = found.get("total_cost_usd", found.get("cost_usd"))
    result = found.get("result")
    return AgentResult(
        result=result if isinstance(result, str) else None,
        session_id=found.get("session_id") if isinstance(found.get("session_id"), str) else None,
        cost_usd=float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None,
        is_error=bool(found.get("is_error")),
        subtype=found.get("subtype") if isinstance(found.get("subtype"), str) else None,
    )


def settings_from_config(section: Mapping[str, Any]) -> AgentSettings:
    return AgentSettings(
        command=tuple(section.get("command") or DEFAULT_COMMAND),
        args=tuple(section.get("args") or ()),
        env=dict(section.get("env") or {}),
        output=str(section.get("output") or "claude-json"),
        end_of_options=bool(section.get("end_of_options", True)),
    )
