# tests: tests/core/test_config.py
"""Configuration: the shipped JSON Schema, its defaults, and validation into a frozen Config.

The schema is the single source of truth: defaults come from its `default`
keywords, the documentation from its `description`s, and every error message
from the constraints of the key that failed, so they cannot drift apart.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator, Mapping

from attrs import frozen

from aiwg.core import remote, strictjson, workspaces
from aiwg.core.cron import cron_problem, zone_problem
from aiwg.core.loops import LoopSpecError, spec_from_action
from aiwg.core.events import pattern_problem
from aiwg.core.globs import glob_problem
from aiwg.core.messaging import SECRET_KEYS
from aiwg.errors import ConfigError

SCHEMA_RESOURCE = "daemon.schema.json"

#: Schedule actions the daemon performs itself; any other name must be in `actions`.
BUILTIN_ACTIONS = ("health-check",)


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema for daemon.json, as shipped in the package."""
    text = resources.files("aiwg.core").joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@frozen
class LogSettings:
    max_size_mb: float
    max_files: int
    level: str
    format: str

    @property
    def max_bytes(self) -> int:
        return max(1, int(self.max_size_mb * 1024 * 1024))


@frozen
class IpcSettings:
    max_line_bytes: int


@frozen
class EventLogSettings:
    retention_days: int
    max_file_mb: float


@frozen
class RetentionSettings:
    max_tasks: int
    max_age_days: float


@frozen
class DaemonSettings:
    heartbeat_interval_seconds: float
    max_parallel_actions: int
    action_timeout_minutes: float
    shutdown_grace_seconds: float
    kill_grace_seconds: float
    task_output_max_mb: float
    retention: RetentionSettings
    log: LogSettings
    ipc: IpcSettings
    events: EventLogSettings


@frozen
class Config:
    """A validated configuration with every default filled in."""

    daemon: DaemonSettings
    data: Mapping[str, Any]
    source: str
    digest: str
    warnings: tuple[str, ...] = ()

    def section(self, name: str) -> Any:
        """A section of the configuration (with defaults), e.g. `watch`."""
        return copy.deepcopy(self.data[name])

    def changed_sections(self, other: "Config") -> list[str]:
        """Top-level keys whose values differ from `other`, dotted one level down."""
        changed: list[str] = []
        for key in sorted(set(self.data) | set(other.data)):
            mine, theirs = self.data.get(key), other.data.get(key)
            if mine == theirs:
                continue
            if isinstance(mine, dict) and isinstance(theirs, dict):
                for sub in sorted(set(mine) | set(theirs)):
                    if mine.get(sub) != theirs.get(sub):
                        changed.append(f"{key}.{sub}")
            else:
                changed.append(key)
        return changed


#: Environment variable names whose literal values in a config file are secrets.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE)


def literal_secrets(data: Mapping[str, Any]) -> list[str]:
    """Key paths of secrets written literally in a configuration (not `${VAR}`):
    the messaging bridges' tokens and webhook URLs, and env entries named like a
    secret (`API_KEY`, `GITHUB_TOKEN`) in `agent.env`, `actions` and rule actions."""
    from aiwg.core.messaging import SECRET_KEYS

    def literal(value: Any) -> bool:
        return isinstance(value, str) and bool(value) and "${" not in value

    found = remote.literal_url_secrets(data.get("executors"))
    for platform, section in (data.get("messaging") or {}).items():
        if isinstance(section, Mapping):
            found += [f"messaging.{platform}.{key}" for key in SECRET_KEYS if literal(section.get(key))]
    envs: list[tuple[str, Any]] = [("agent.env", (data.get("agent") or {}).get("env"))]
    envs += [(f"actions.{name}.env", (action or {}).get("env")) for name, action in (data.get("actions") or {}).items()
             if isinstance(action, Mapping)]
    envs += [(f"rules[{index}].action.env", ((rule or {}).get("action") or {}).get("env"))
             for index, rule in enumerate(data.get("rules") or []) if isinstance(rule, Mapping)]
    for where, env in envs:
        if isinstance(env, Mapping):
            found += [f"{where}.{name}" for name, value in env.items() if _SECRET_NAME.search(name) and literal(value)]
    return found


def redacted(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a configuration with each secret written literally (as
    `literal_secrets` finds them) replaced by `[redacted]`; `${VAR}` references
    stay, since they name a variable, not its value."""
    import copy

    out = copy.deepcopy(dict(data))
    for path in literal_secrets(data):
        parts = _path_parts(path)
        node: Any = out
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = "[redacted]"
    return out


def _path_parts(path: str) -> list[Any]:
    """`rules[2].action.env.TOKEN` → ["rules", 2, "action", "env", "TOKEN"]."""
    parts: list[Any] = []
    for piece in path.split("."):
        name, _, index = piece.partition("[")
        parts.append(name)
        if index:
            parts.append(int(index.rstrip("]")))
    return parts


def defaults() -> dict[str, Any]:
    """The configuration a project gets with no daemon.json at all."""
    filled = _fill_defaults(schema(), {})
    assert isinstance(filled, dict)
    return filled


def parse_config_text(text: str, source: str) -> Config:
    """Parse and validate daemon.json text; ConfigError names each problem."""
    try:
        document = strictjson.decoder.decode(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(
            source, [f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"]
        ) from None
    except strictjson.NotJson as exc:
        raise ConfigError(source, [f"not valid JSON: {exc}"]) from None
    return validate(document, source)


def validate(document: Any, source: str) -> Config:
    """Validate a decoded daemon.json document and fill in defaults."""
    from jsonschema import Draft202012Validator  # costly import; only the daemon pays it

    if not isinstance(document, dict):
        raise ConfigError(source, [f"(top level): must be an object, got {_show(document)}"])
    problems: list[str] = []
    warnings: list[str] = []
    validator = Draft202012Validator(schema())
    for error in validator.iter_errors(document):
        for kind, message in _explain(error):
            (warnings if kind == "warning" else problems).append(message)
    problems.extend(_semantic_problems(document))
    messaging_problems, messaging_warnings = _messaging_checks(document.get("messaging"))
    problems.extend(messaging_problems)
    warnings.extend(messaging_warnings + remote.broker_warnings(document.get("executors")))
    if problems:
        named = [_name_item(document, p) for p in problems]
        raise ConfigError(source, sorted(set(named), key=named.index))
    data = _fill_defaults(schema(), _strip_unknown(schema(), document))
    assert isinstance(data, dict)
    return Config(
        daemon=_daemon_settings(data["daemon"]),
        data=data,
        source=source,
        digest=digest(data),
        warnings=tuple(warnings),
    )


def digest(data: Mapping[str, Any]) -> str:
    """A short stable hash of a configuration, reported in state.json."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def describe(subschema: Mapping[str, Any]) -> str:
    """What a key must be, in words: 'an integer ≥ 1', 'one of "info", "debug"'."""
    if "enum" in subschema:
        return "one of " + ", ".join(json.dumps(v) for v in subschema["enum"])
    if "const" in subschema:
        return json.dumps(subschema["const"])
    if "anyOf" in subschema:
        return " or ".join(describe(s) for s in subschema["anyOf"])
    kind = subschema.get("type")
    words = {
        "integer": "an integer",
        "number": "a number",
        "string": "a string",
        "boolean": "true or false",
        "object": "an object",
        "array": "a list",
        "null": "null",
    }
    text = words.get(kind, "a value") if isinstance(kind, str) else "a value"
    if kind == "array" and isinstance(subschema.get("items"), Mapping):
        item = describe(subschema["items"])
        text = f"a list of {_plural(item)}"
    if kind == "string" and subschema.get("minLength"):
        text = "a non-empty string"
    bounds = []
    if "minimum" in subschema:
        bounds.append(f"≥ {_num(subschema['minimum'])}")
    if "exclusiveMinimum" in subschema:
        bounds.append(f"> {_num(subschema['exclusiveMinimum'])}")
    if "maximum" in subschema:
        bounds.append(f"≤ {_num(subschema['maximum'])}")
    if "exclusiveMaximum" in subschema:
        bounds.append(f"< {_num(subschema['exclusiveMaximum'])}")
    if bounds:
        text += " " + " and ".join(bounds)
    return text


def key_path(parts: Iterator[Any] | list[Any]) -> str:
    """`daemon.log.max_files`, `rules[2].trigger` from a jsonschema path."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _explain(error: Any) -> Iterator[tuple[str, str]]:
    path = list(error.absolute_path)
    where = key_path(path)
    validator = error.validator
    if validator == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        for extra in sorted(set(error.instance) - set(known)):
            suggestion = difflib.get_close_matches(extra, known, n=1)
            hint = f" (did you mean '{suggestion[0]}'?)" if suggestion else ""
            yield "warning", f"{key_path(path + [extra])}: unknown key, ignored{hint}"
        return
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        yield "error", f"{key_path(path + [missing])}: required"
        return
    if validator in ("if", "then", "allOf"):
        return
    if validator == "anyOf" and isinstance(error.instance, dict):
        branch = [e for e in error.context if e.schema.get("type") == "object" or e.validator == "required"]
        if branch:
            for sub in branch:
                yield from _explain(sub)
            return
    subschema = _schema_at(path) or error.schema
    if len(path) == 3 and path[0] == "messaging" and path[2] in SECRET_KEYS:
        yield "error", f"{where}: must be {describe(subschema)} (a secret: its value is not shown)"
        return
    yield "error", f"{where}: must be {describe(subschema)}, got {_show(error.instance)}"


def _schema_at(path: list[Any]) -> Mapping[str, Any] | None:
    """The declared subschema for a document path (the whole key, not one keyword)."""
    node: Mapping[str, Any] = schema()
    for part in path:
        if isinstance(part, int):
            items = node.get("items")
            if not isinstance(items, Mapping):
                return None
            node = items
        else:
            props = node.get("properties", {})
            if part not in props:
                return None
            node = props[part]
    return node


def _semantic_problems(document: Mapping[str, Any]) -> list[str]:
    """What the schema cannot say: unique names and ids, known actions, real zones."""
    problems: list[str] = []
    schedule = document.get("schedule")
    jobs = schedule.get("jobs") if isinstance(schedule, Mapping) else None
    actions = document.get("actions")
    action_names = set(actions) if isinstance(actions, Mapping) else set()
    if isinstance(schedule, Mapping) and isinstance(schedule.get("timezone"), str):
        problem = zone_problem(schedule["timezone"])
        if problem:
            problems.append(f"schedule.timezone: {problem}")
    seen: dict[str, int] = {}
    for index, job in enumerate(jobs if isinstance(jobs, list) else []):
        if not isinstance(job, Mapping):
            continue
        name = job.get("name", job.get("id"))
        if name is None:
            problems.append(f"schedule.jobs[{index}].name: required")
        elif isinstance(name, str):
            if name in seen:
                problems.append(
                    f"schedule.jobs[{index}].name: '{name}' is already used by "
                    f"schedule.jobs[{seen[name]}]"
                )
            seen.setdefault(name, index)
        if isinstance(job.get("cron"), str) and cron_problem(job["cron"]):
            problems.append(f"schedule.jobs[{index}].cron: {cron_problem(job['cron'])}")
        if isinstance(job.get("timezone"), str) and zone_problem(job["timezone"]):
            problems.append(f"schedule.jobs[{index}].timezone: {zone_problem(job['timezone'])}")
        action = job.get("action")
        if isinstance(action, str) and action not in BUILTIN_ACTIONS and action not in action_names:
            known = ", ".join(sorted(action_names)) or "none defined"
            problems.append(
                f"schedule.jobs[{index}].action: '{action}' is neither a built-in action "
                f"({', '.join(BUILTIN_ACTIONS)}) nor a name in `actions` ({known}); define it as "
                f'"actions": {{"{action}": {{"prompt": "…"}}}}'
            )
    problems.extend(_watch_problems(document.get("watch")))
    for name, action in (actions.items() if isinstance(actions, Mapping) else ()):
        problems.extend(_loop_problems(f"actions.{name}", action))
    rules = document.get("rules")
    ids: dict[str, int] = {}
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(rule, Mapping) and isinstance(rule.get("id"), str):
            rule_id = rule["id"]
            trigger = rule.get("trigger")
            if isinstance(trigger, Mapping) and trigger.get("type") == "schedule":
                cron = trigger.get("cron")
                if isinstance(cron, str) and cron_problem(cron):
                    problems.append(f"rules[{index}].trigger.cron: {cron_problem(cron)}")
            if isinstance(trigger, Mapping) and trigger.get("type") == "file_change":
                pattern = trigger.get("pattern")
                if isinstance(pattern, str) and glob_problem(pattern):
                    problems.append(f"rules[{index}].trigger.pattern: {glob_problem(pattern)}")
            if isinstance(trigger, Mapping) and trigger.get("type") == "event":
                topic = trigger.get("topic")
                if isinstance(topic, str) and pattern_problem(topic):
                    problems.append(f"rules[{index}].trigger.topic: {pattern_problem(topic)}")
            problems.extend(_loop_problems(f"rules[{index}].action", rule.get("action")))
            if rule_id in ids:
                problems.append(
                    f"rules[{index}].id: '{rule_id}' is already used by rules[{ids[rule_id]}]"
                )
            ids.setdefault(rule_id, index)
    problems.extend(_tasks_problems(document.get("tasks")))
    tasks = document.get("tasks")
    isolating = isinstance(tasks, Mapping) and tasks.get("isolation") == "worktree"
    places = [(f"actions.{name}", a) for name, a in (actions.items() if isinstance(actions, Mapping) else ())]
    places += [(f"rules[{i}].action", r.get("action")) for i, r in enumerate(rules if isinstance(rules, list) else [])
               if isinstance(r, Mapping)]
    for where, action in places:
        if isinstance(action, Mapping) and "base" in action and not action.get("isolate", isolating):
            problems.append(f"{where}.base: only an isolated task starts from a base; add \"isolate\": true "
                            "(or set tasks.isolation to \"worktree\")")
    return problems + remote.executor_problems(document.get("executors"), places)


def _tasks_problems(tasks: Any) -> list[str]:
    """An isolated task's branch name and commit author must be usable by git."""
    if not isinstance(tasks, Mapping):
        return []
    problems = []
    prefix = tasks.get("branch_prefix")
    if isinstance(prefix, str) and prefix:
        try:
            workspaces.workspace_for("t-0000000000", prefix)
        except workspaces.WorkspaceError as exc:
            problems.append(str(exc))
    author = tasks.get("commit_author")
    if isinstance(author, str) and author.strip():
        try:
            workspaces.parse_author(author)
        except workspaces.WorkspaceError as exc:
            problems.append(str(exc))
    return problems


def _loop_problems(where: str, action: Any) -> list[str]:
    """A loop asked for by an action: its keys make sense together."""
    if not isinstance(action, Mapping):
        return []
    try:
        spec_from_action(action)
    except LoopSpecError as exc:
        return [f"{where}.{exc}"]
    return []


#: The secret keys of each bridge, and the variable the docs suggest for each.
_SECRETS = {
    "telegram": {"bot_token": "TELEGRAM_BOT_TOKEN"},
    "slack": {"bot_token": "SLACK_BOT_TOKEN", "app_token": "SLACK_APP_TOKEN", "webhook_url": "SLACK_WEBHOOK_URL"},
    "discord": {"bot_token": "DISCORD_BOT_TOKEN", "webhook_url": "DISCORD_WEBHOOK_URL"},
}
_ENV_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


def _messaging_checks(messaging: Any) -> tuple[list[str], list[str]]:
    """An enabled bridge needs a way to send; secrets belong in the environment; an
    empty allowlist is legal (nobody) but worth a word when the bridge can listen."""
    problems: list[str] = []
    warnings: list[str] = []
    if not isinstance(messaging, Mapping):
        return problems, warnings
    for platform, secrets in _SECRETS.items():
        section = messaging.get(platform)
        if not isinstance(section, Mapping):
            continue
        where = f"messaging.{platform}"
        for key, variable in secrets.items():
            value = section.get(key)
            if isinstance(value, str) and value and not _ENV_REFERENCE.match(value.strip()):
                warnings.append(
                    f"{where}.{key}: a literal secret in the configuration file; prefer "
                    f'"${{{variable}}}" and export {variable} in the daemon\'s environment'
                )
        topics = (section.get("notify") or {}).get("topics") if isinstance(section.get("notify"), Mapping) else None
        for index, topic in enumerate(topics if isinstance(topics, list) else []):
            if isinstance(topic, str) and pattern_problem(topic):
                problems.append(f"{where}.notify.topics[{index}]: {pattern_problem(topic)}")
        if section.get("enabled") is not True:
            continue
        has = {key: isinstance(section.get(key), str) and bool(section.get(key, "").strip())
               for key in SECRET_KEYS}
        if platform == "telegram" and not has["bot_token"]:
            problems.append(f'{where}.bot_token: required when the bridge is enabled, e.g. "${{TELEGRAM_BOT_TOKEN}}"')
        if platform in ("slack", "discord") and not (has["bot_token"] or has["webhook_url"]):
            variable = _SECRETS[platform]["bot_token"]
            problems.append(f'{where}.bot_token: required when the bridge is enabled (or webhook_url for '
                            f'notifications only), e.g. "${{{variable}}}"')
        elif platform == "slack" and has["app_token"] and not has["bot_token"]:
            problems.append(f"{where}.bot_token: required with app_token: answers are posted with the bot token")
        listens = has["bot_token"] and (platform != "slack" or has["app_token"])
        allowed_where = "allowed_chats" if platform == "telegram" else "allowed_channels"
        if listens and not section.get("allowed_users") and not section.get(allowed_where):
            warnings.append(f"{where}.allowed_users: empty (and no {allowed_where}): nobody may send "
                            "commands or chat; notifications still go out")
    return problems, warnings


def _watch_problems(watch: Any) -> list[str]:
    from aiwg.core.globs import ignore_problem
    from aiwg.core.watching import watch_path_problem

    def ignores(entries: Any, where: str) -> list[str]:
        return [f"{where}[{i}]: {ignore_problem(e)}"
                for i, e in enumerate(entries or []) if isinstance(e, str) and ignore_problem(e)]

    if not isinstance(watch, Mapping):
        return []
    problems = ignores(watch.get("ignore"), "watch.ignore")
    paths = watch.get("paths")
    for index, item in enumerate(paths if isinstance(paths, list) else []):
        path = item if isinstance(item, str) else item.get("path") if isinstance(item, Mapping) else None
        where = f"watch.paths[{index}]" if isinstance(item, str) else f"watch.paths[{index}].path"
        if isinstance(path, str) and watch_path_problem(path):
            problems.append(f"{where}: {watch_path_problem(path)}")
        if isinstance(item, Mapping):
            problems.extend(ignores(item.get("ignore"), f"watch.paths[{index}].ignore"))
    return problems


_ITEM = re.compile(r"^(rules|schedule\.jobs)\[(\d+)\]")


def _name_item(document: Mapping[str, Any], problem: str) -> str:
    """`rules[2].trigger.type: …` → `rules[2] (auto-test).trigger.type: …`: say which rule or job."""
    match = _ITEM.match(problem)
    if not match or problem[match.end():].startswith(" ("):
        return problem
    items: Any = document.get("rules") if match.group(1) == "rules" else (document.get("schedule") or {}).get("jobs")
    index = int(match.group(2))
    if not isinstance(items, list) or index >= len(items) or not isinstance(items[index], Mapping):
        return problem
    item = items[index]
    label = item.get("id") if match.group(1) == "rules" else item.get("name", item.get("id"))
    if not isinstance(label, str) or not label:
        return problem
    return f"{problem[:match.end()]} ({label}){problem[match.end():]}"


def _strip_unknown(node: Mapping[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in node:
        props = node["properties"]
        if node.get("additionalProperties") is False:
            return {k: _strip_unknown(props[k], v) for k, v in value.items() if k in props}
        return {k: _strip_unknown(props.get(k, {}), v) for k, v in value.items()}
    return value


def _fill_defaults(node: Mapping[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and "properties" in node:
        filled = dict(value)
        for key, sub in node["properties"].items():
            if key in filled:
                filled[key] = _fill_defaults(sub, filled[key])
            elif "default" in sub:
                filled[key] = _fill_defaults(sub, copy.deepcopy(sub["default"]))
        return filled
    return value


def _daemon_settings(section: Mapping[str, Any]) -> DaemonSettings:
    log = section["log"]
    return DaemonSettings(
        heartbeat_interval_seconds=float(section["heartbeat_interval_seconds"]),
        max_parallel_actions=int(section["max_parallel_actions"]),
        action_timeout_minutes=float(section["action_timeout_minutes"]),
        shutdown_grace_seconds=float(section["shutdown_grace_seconds"]),
        kill_grace_seconds=float(section["kill_grace_seconds"]),
        task_output_max_mb=float(section["task_output_max_mb"]),
        retention=RetentionSettings(
            max_tasks=int(section["retention"]["max_tasks"]),
            max_age_days=float(section["retention"]["max_age_days"]),
        ),
        log=LogSettings(
            max_size_mb=float(log["max_size_mb"]),
            max_files=int(log["max_files"]),
            level=str(log["level"]),
            format=str(log["format"]),
        ),
        ipc=IpcSettings(max_line_bytes=int(section["ipc"]["max_line_bytes"])),
        events=EventLogSettings(
            retention_days=int(section["events"]["retention_days"]),
            max_file_mb=float(section["events"]["max_file_mb"]),
        ),
    )


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    return json.dumps(value)


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _plural(text: str) -> str:
    """'a non-empty string or an object' → 'non-empty strings or objects'."""
    words = {"integer": "integers", "string": "strings", "number": "numbers", "object": "objects",
             "list": "lists", "value": "values"}
    parts = []
    for alternative in text.split(" or "):
        for article in ("an ", "a "):
            if alternative.startswith(article):
                alternative = alternative[len(article):]
                break
        head, _, rest = alternative.partition(" ")
        tokens = alternative.split(" ")
        for i, token in enumerate(tokens):
            if token in words:
                tokens[i] = words[token]
                break
        parts.append(" ".join(tokens))
    return " or ".join(parts)
