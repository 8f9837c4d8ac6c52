"""Contract tests for every private hook in aiwg/compat.py (docs/compatibility.md).

Each hook passes its behaviour check on the installed releases; removing or
renaming the private name it rests on makes the check fail with the hook's name
and the installed version, and the public fallback still does the job. The last
tests start the real daemon with hooks turned off or really removed, and it
starts, serves and runs a task.
"""

from __future__ import annotations

import inspect
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from aiwg import compat
from aiwg.daemon.launcher import TWISTD_RUNNER  # declares the twistd-runner hook
from aiwg.daemon.tasks.spawning import SESSION_SPAWN  # declares the session-spawn hook
from tests.conftest import Project, wait_for

DOCS = Path(__file__).resolve().parents[1] / "docs" / "compatibility.md"


@pytest.fixture(autouse=True)
def fresh_verdicts() -> Iterator[None]:
    """Every test sees each hook checked anew, and leaves the real verdicts behind."""
    for hook in compat.HOOKS.values():
        hook.reset()
    yield
    for hook in compat.HOOKS.values():
        hook.reset()


def renamed(cls: type, old: str, new: str) -> type:
    """`cls` as it would be if its release had renamed `old` to `new`: its source,
    renamed, run again in its own module."""
    module = sys.modules[cls.__module__]
    source = textwrap.dedent(inspect.getsource(cls)).replace(old, new)
    namespace = dict(vars(module))
    exec(compile(source, f"<renamed {cls.__name__}>", "exec"), namespace)
    return namespace[cls.__name__]


def assert_names(problem: str | None, hook: str, distribution: str) -> None:
    assert problem is not None, f"{hook}: the check passed on a broken hook"
    assert problem.startswith(f"{hook}: ") and f"{distribution} {compat.installed(distribution)}" in problem


@pytest.mark.parametrize("name", sorted(compat.HOOKS))
def test_every_hook_works_on_the_installed_release(name: str) -> None:
    hook = compat.HOOKS[name]
    assert hook.problem is None, hook.problem


def test_every_hook_is_in_the_docs_table() -> None:
    table = DOCS.read_text()
    for name, hook in compat.HOOKS.items():
        assert f"| `{name}` |" in table, f"{name} is not in docs/compatibility.md"


def test_c_json_encoder_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    import json.encoder

    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    assert_names(compat.C_JSON_ENCODER.problem, "c-json-encoder", "python")
    dumps = compat.compact_dumps()
    assert dumps({"a": ["\u00e9", 1.5, None]}) == '{"a":["\\u00e9",1.5,null]}'
    with pytest.raises(ValueError):
        dumps(float("nan"))


def test_c_json_encoder_that_changed_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import json.encoder

    real = json.encoder.c_make_encoder

    def shifted(*args: Any) -> Any:  # a release that reordered the separators
        args = list(args)
        args[4], args[5] = args[5], args[4]
        return real(*args)

    monkeypatch.setattr(json.encoder, "c_make_encoder", shifted)
    assert_names(compat.C_JSON_ENCODER.problem, "c-json-encoder", "python")


def test_transport_queue_renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.internet import abstract

    monkeypatch.setattr(abstract, "FileDescriptor",
                        renamed(abstract.FileDescriptor, "_tempDataBuffer", "_pendingWrites"))
    assert_names(compat.TRANSPORT_QUEUE.problem, "transport-queue", "twisted")
    assert compat.queued_output(object()) is None  # unknown: never sent around a queue we cannot see


def test_session_spawn_check_with_a_child_that_ends_before_it_is_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twisted reaps a child that has already exited when it registers it: the
    check must take the exit status from there (it once failed the hook for it)."""
    real = os.posix_spawnp

    def spawn_and_let_it_end(*args: Any, **kwargs: Any) -> int:
        pid = real(*args, **kwargs)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # ended, still to be reaped
        return pid

    monkeypatch.setattr(os, "posix_spawnp", spawn_and_let_it_end)
    from aiwg.daemon.tasks.spawning import check_session_leader

    check_session_leader(os.getcwd())


def test_session_spawn_helpers_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.internet import process

    monkeypatch.delattr(process, "_listOpenFDs")
    assert_names(SESSION_SPAWN.problem, "session-spawn", "twisted")


def test_session_spawn_override_no_longer_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release that renames _trySpawnInsteadOfFork starts children its own way:
    not as session leaders. (Simulated by calling Twisted's own method.)"""
    from twisted.internet import process

    from aiwg.daemon.tasks.spawning import SessionLeaderProcess

    monkeypatch.setattr(SessionLeaderProcess, "_trySpawnInsteadOfFork", process.Process._trySpawnInsteadOfFork)
    monkeypatch.setattr(SessionLeaderProcess, "_setupChild", process.Process._setupChild)
    assert_names(SESSION_SPAWN.problem, "session-spawn", "twisted")


@pytest.mark.usefixtures("reactor_hygiene")
def test_the_spawn_fallback_still_makes_a_session_leader(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from twisted.internet import process, reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import ProcessProtocol

    from aiwg.daemon.tasks.spawning import SessionLeaderProcess, spawn_session_leader

    monkeypatch.setattr(SessionLeaderProcess, "_trySpawnInsteadOfFork", process.Process._trySpawnInsteadOfFork)
    monkeypatch.setattr(SessionLeaderProcess, "_setupChild", process.Process._setupChild)
    assert not SESSION_SPAWN.works()
    done: Deferred = Deferred()

    class Collect(ProcessProtocol):
        out = b""

        def outReceived(self, data: bytes) -> None:
            self.out += data

        def processEnded(self, reason: Any) -> None:
            done.callback(self.out)

    protocol = Collect()
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())"
    spawn_session_leader(reactor, protocol, sys.executable, [sys.executable, "-c", code], dict(os.environ),
                         str(tmp_path), {0: "w", 1: "r", 2: "r"})
    out: list[bytes] = []
    done.addCallback(out.append)
    wait_for(lambda: (reactor.iterate(0.05), out)[1], timeout=20)
    assert out[0].split() == [b"True", b"True"]


def rename_in_method(monkeypatch: pytest.MonkeyPatch, cls: type, method: str, old: str, new: str) -> None:
    """`cls.method` as it would be if its release had renamed `old` to `new` (in its
    source, run again in its own module), with `new` meaning what `old` did."""
    module = sys.modules[cls.__module__]
    source = textwrap.dedent(inspect.getsource(getattr(cls, method))).replace(old, new)
    namespace = dict(vars(module))
    exec(compile(source, f"<renamed {method}>", "exec"), namespace)
    monkeypatch.setattr(cls, method, namespace[method])
    monkeypatch.setattr(cls, new, getattr(cls, old), raising=False)


def test_twistd_runner_that_no_longer_calls_wait_for_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.scripts import _twistd_unix

    rename_in_method(monkeypatch, _twistd_unix.UnixApplicationRunner, "daemonize", "_waitForStart", "_awaitStartup")
    assert_names(TWISTD_RUNNER.problem, "twistd-runner", "twisted")


def test_twistd_runner_that_no_longer_formats_through_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.scripts import _twistd_unix

    rename_in_method(monkeypatch, _twistd_unix.UnixApplicationRunner, "postApplication", "_formatChildException",
                     "_describeFailure")
    assert_names(TWISTD_RUNNER.problem, "twistd-runner", "twisted")


def test_an_operator_can_turn_a_hook_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(compat.DISABLE_ENV, "transport-queue, c-json-encoder")
    assert compat.TRANSPORT_QUEUE.problem == "transport-queue: turned off by AIWG_COMPAT_DISABLE"
    assert compat.C_JSON_ENCODER.problem is not None
    assert compat.status()["transport-queue"].endswith("AIWG_COMPAT_DISABLE")


# -- the real daemon, through the fallbacks ------------------------------------------

# As if CPython had no C encoder, and Twisted had renamed _trySpawnInsteadOfFork
# (in both classes that define or call it).
SITE_REMOVING_HOOKS = '''
import inspect, textwrap
import json.encoder
json.encoder.c_make_encoder = None
import twisted.internet.process as _process
_namespace = dict(vars(_process))
for _name in ("_BaseProcess", "Process"):
    _source = textwrap.dedent(inspect.getsource(getattr(_process, _name)))
    exec(compile(_source.replace("_trySpawnInsteadOfFork", "_spawnInstead"), "<renamed>", "exec"), _namespace)
    setattr(_process, _name, _namespace[_name])
'''


def run_a_task_and_read_status(project: Project) -> dict[str, Any]:
    submitted = project.aiwg("task", "submit", "say hi", "--wait", check=True)
    assert submitted.returncode == 0
    assert len(project.fake.runs()) == 1  # the agent was spawned, through the fallback where it is one
    with project.client() as client:
        assert client.call("ping")
        return client.call("daemon.status")


@pytest.mark.e2e
def test_the_daemon_starts_and_serves_with_every_hook_turned_off(project: Project) -> None:
    project.env[compat.DISABLE_ENV] = ",".join(sorted(compat.HOOKS))
    started = project.aiwg("daemon", "start", check=True)
    assert "twistd-runner: turned off" in started.stderr and "running twistd as a child process" in started.stderr
    status = run_a_task_and_read_status(project)
    fallbacks = status["subsystems"]["compat"]
    assert set(fallbacks) == set(compat.DAEMON_HOOKS)
    assert all(verdict.endswith("turned off by AIWG_COMPAT_DISABLE") for verdict in fallbacks.values())
    assert status["health"] == "degraded"
    assert sum("dependency hook not in use" in issue for issue in status["health_issues"]) == len(compat.DAEMON_HOOKS)
    stopped = project.aiwg("daemon", "stop", check=True)
    assert stopped.returncode == 0


@pytest.mark.e2e
def test_the_daemon_starts_and_serves_with_hooks_really_removed(project: Project, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE_REMOVING_HOOKS)
    project.env["PYTHONPATH"] = str(site)
    project.aiwg("daemon", "start", check=True)
    status = run_a_task_and_read_status(project)
    fallbacks = status["subsystems"]["compat"]
    assert fallbacks["transport-queue"] == "in use"
    assert fallbacks["c-json-encoder"].startswith("c-json-encoder: json.encoder.c_make_encoder of python ")
    assert fallbacks["session-spawn"].startswith("session-spawn: ")
    assert "does not lead its own process group" in fallbacks["session-spawn"]
    log = project.log_text()
    assert "dependency hook not in use: session-spawn" in log
