# tests: tests/core/test_remote.py
"""What the daemon and a remote worker agree on, with nothing run: the Redis keys
of a project's remote tasks, the payload a task travels in (over the broker), the
report a worker writes when it ends, and a broker URL fit to be shown.

No secret value is in a payload: the agent's environment travels as its
`${VAR}` templates and is expanded from the worker's own environment.
"""

from __future__ import annotations

import hashlib
import json
import socket
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

from attrs import asdict, field, frozen

#: The payload's version: a worker refuses one it does not know.
PAYLOAD_VERSION = 1
#: The Celery task every payload is sent to.
TASK_NAME = "aiwg.run_task"
DEFAULT_QUEUE = "aiwg"
#: A worker renews its lease on a task this often; it expires after LEASE_SECONDS
#: without a renewal: the worker is lost.
LEASE_RENEW_SECONDS = 1.0
LEASE_SECONDS = 6
#: A worker says it is there this often, for this long.
PRESENCE_RENEW_SECONDS = 3.0
PRESENCE_SECONDS = 10
#: The events stream is capped (approximately) at this many entries.
EVENTS_MAXLEN = 200_000
#: A task's hash outlives its end by this long, for a daemon that re-attaches late.
RESULT_TTL_SECONDS = 7 * 24 * 3600
#: Output goes over in chunks of at most this many bytes.
OUTPUT_CHUNK_BYTES = 64 * 1024


def namespace_for(project_root: str, host: str | None = None) -> str:
    """A project's keys, unique per daemon: its machine and its directory."""
    digest = hashlib.sha256(f"{host or socket.gethostname()}:{project_root}".encode()).hexdigest()
    return digest[:16]


def run_id(task_id: str, attempt: int) -> str:
    """One attempt of a task: what a worker claims, leases and reports on. A task
    queued again after its worker was lost is a new run, and what the lost one
    might still say is not taken for the new one's."""
    return f"{task_id}.{attempt}"


@frozen
class Keys:
    """The Redis keys of one project's remote tasks (per run: see run_id)."""

    namespace: str

    @property
    def prefix(self) -> str:
        return f"aiwg:{self.namespace}"

    @property
    def events(self) -> str:
        """A stream: claimed, output and finished entries of every remote task."""
        return f"{self.prefix}:events"

    def task(self, run: str) -> str:
        """A hash: state (published, running, finished), worker, report."""
        return f"{self.prefix}:run:{run}"

    def lease(self, run: str) -> str:
        return f"{self.prefix}:lease:{run}"

    def claim(self, run: str) -> str:
        return f"{self.prefix}:claim:{run}"

    def cancel(self, run: str) -> str:
        return f"{self.prefix}:cancel:{run}"


#: Workers say they are there under these keys, whatever project they serve.
WORKER_PREFIX = "aiwg:worker:"
#: The consumer group a daemon reads its events stream with.
DAEMON_GROUP = "daemon"


def worker_key(name: str) -> str:
    return f"{WORKER_PREFIX}{name}"


@frozen
class Payload:
    """One task as a worker runs it."""

    namespace: str
    task_id: str
    prompt: str
    program: str  # found on the worker's PATH
    argv: tuple[str, ...]  # the whole command line, as the local executor runs it (argv[0]: the program)
    env: Mapping[str, str]  # templates: `${VAR}` expanded on the worker
    output_format: str
    timeout_seconds: float
    kill_grace_seconds: float
    output_max_bytes: int
    git_remote: str
    base: str  # a commit id
    branch: str
    commit_message: str
    author: tuple[str, str] | None = None
    attempt: int = 1
    version: int = PAYLOAD_VERSION
    extra: Mapping[str, Any] = field(factory=dict)

    @property
    def run(self) -> str:
        return run_id(self.task_id, self.attempt)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["argv"] = list(self.argv)
        out["env"] = dict(self.env)
        out["author"] = list(self.author) if self.author else None
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Payload":
        """PayloadError names what is wrong with a payload (an old daemon, a stray message)."""
        if not isinstance(data, Mapping):
            raise PayloadError("the payload is not an object")
        version = data.get("version")
        if version != PAYLOAD_VERSION:
            raise PayloadError(f"payload version {version!r}; this worker runs version {PAYLOAD_VERSION}")
        try:
            author = data.get("author")
            return cls(
                namespace=str(data["namespace"]), task_id=str(data["task_id"]), prompt=str(data["prompt"]),
                program=str(data["program"]), argv=tuple(str(a) for a in data["argv"]),
                env={str(k): str(v) for k, v in dict(data["env"]).items()},
                output_format=str(data["output_format"]), timeout_seconds=float(data["timeout_seconds"]),
                kill_grace_seconds=float(data["kill_grace_seconds"]),
                output_max_bytes=int(data["output_max_bytes"]), git_remote=str(data["git_remote"]),
                base=str(data["base"]), branch=str(data["branch"]), commit_message=str(data["commit_message"]),
                author=(str(author[0]), str(author[1])) if author else None,
                attempt=int(data.get("attempt", 1)),
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise PayloadError(f"the payload is malformed: {exc!r}") from None


class PayloadError(ValueError):
    pass


@frozen
class Report:
    """How a remote run ended, as the worker writes it (the task's hash, and the
    stream's `finished` entry). `reason`: why the worker stopped the agent
    (timeout, cancel, shutdown), if it did; `error`: the worker could not run it
    at all (no agent on its PATH, the base commit not fetched)."""

    worker: str
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    error: str | None = None
    head: str | None = None  # the branch's tip, pushed; None: no change
    output_bytes: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "Report":
        data = json.loads(text)
        return cls(
            worker=str(data.get("worker") or "?"),
            exit_code=data.get("exit_code") if isinstance(data.get("exit_code"), int) else None,
            signal=data.get("signal") if isinstance(data.get("signal"), int) else None,
            reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
            error=data.get("error") if isinstance(data.get("error"), str) else None,
            head=data.get("head") if isinstance(data.get("head"), str) else None,
            output_bytes=int(data.get("output_bytes") or 0),
        )


def shown_url(url: str) -> str:
    """A broker URL for status and logs: its password replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def url_problem(url: str) -> str | None:
    """Why a broker URL cannot be used (None: it can): Redis only."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("redis", "rediss", "unix"):
        return f"scheme {parts.scheme or '(none)'!r} is not supported; use redis://, rediss:// or unix://"
    if parts.scheme != "unix" and not parts.hostname:
        return "no host in the URL"
    return None


#: The executors a configuration may name: the local one, and the remote kinds.
LOCAL = "local"
REMOTE_KINDS = ("celery",)


def configured_executors(section: Any) -> list[str]:
    """`local` and each remote executor the `executors` section configures."""
    names = [LOCAL]
    if isinstance(section, Mapping):
        names += [kind for kind in REMOTE_KINDS if isinstance(section.get(kind), Mapping)]
    return names


def executor_problems(section: Any, places: list[tuple[str, Any]]) -> list[str]:
    """An executor named anywhere must be configured; a broker URL must be one
    (unless it is a `${VAR}`, read when the daemon starts); a loop runs locally."""
    known = configured_executors(section)
    problems = []

    def unknown(where: str, name: Any) -> None:
        if isinstance(name, str) and name not in known:
            hint = (f"configure executors.{name}" if name in REMOTE_KINDS
                    else f"one of {', '.join(known)}")
            problems.append(f"{where}: executor '{name}' is not configured ({hint})")

    if isinstance(section, Mapping):
        unknown("executors.default", section.get("default"))
        for kind in REMOTE_KINDS:
            item = section.get(kind)
            if not isinstance(item, Mapping):
                continue
            for key in ("broker", "backend"):
                url = item.get(key)
                if isinstance(url, str) and "${" not in url and url_problem(url):
                    problems.append(f"executors.{kind}.{key}: {shown_url(url)}: {url_problem(url)}")
    default = section.get("default", LOCAL) if isinstance(section, Mapping) else LOCAL
    for where, action in places:
        if not isinstance(action, Mapping):
            continue
        unknown(f"{where}.executor", action.get("executor"))
        if "until" in action and action.get("executor", default) != LOCAL:
            problems.append(f"{where}.executor: a loop (until) runs on the local executor only")
    return problems


def literal_url_secrets(section: Any) -> list[str]:
    """Key paths of broker URLs with a password written literally (not `${VAR}`)."""
    out = []
    for kind in REMOTE_KINDS:
        item = section.get(kind) if isinstance(section, Mapping) else None
        for key in ("broker", "backend"):
            url = item.get(key) if isinstance(item, Mapping) else None
            if isinstance(url, str) and "${" not in url:
                try:
                    has_password = urlsplit(url).password is not None
                except ValueError:
                    has_password = False
                if has_password:
                    out.append(f"executors.{kind}.{key}")
    return out


def broker_warnings(section: Any) -> list[str]:
    """A password written into a broker URL belongs in the environment."""
    return [f"{path}: a literal password in the configuration file; write it as ${{VAR}} and export VAR in "
            "the daemon's environment" for path in literal_url_secrets(section)]


@frozen
class RemoteSettings:
    """A remote executor's settings, its URLs still templates."""

    kind: str
    broker: str
    backend: str | None
    queue: str
    git_remote: str
    max_in_flight: int | None
    connect_timeout: float

    @classmethod
    def from_section(cls, kind: str, item: Mapping[str, Any]) -> "RemoteSettings":
        return cls(kind=kind, broker=str(item["broker"]), backend=item.get("backend"),
                   queue=str(item.get("queue", DEFAULT_QUEUE)), git_remote=str(item["git_remote"]),
                   max_in_flight=item.get("max_in_flight"),
                   connect_timeout=float(item.get("connect_timeout_seconds", 5)))


def remote_settings(section: Any) -> dict[str, RemoteSettings]:
    if not isinstance(section, Mapping):
        return {}
    return {kind: RemoteSettings.from_section(kind, section[kind]) for kind in REMOTE_KINDS
            if isinstance(section.get(kind), Mapping)}
