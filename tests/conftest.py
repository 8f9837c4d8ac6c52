"""Shared fixtures: temp projects, the real CLI, real daemons, reactor hygiene."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from aiwg import instance
from aiwg.client import DaemonClient
from aiwg.paths import ProjectPaths

BIN = Path(sys.executable).parent
AIWG = str(BIN / "aiwg")
TWISTD = str(BIN / "twistd")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """True while `pid` runs (an exited, unreaped zombie does not count). Checked here,
    independently of the code under test."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIWG_")}
    env.pop("CLAUDECODE", None)
    env.update(extra)
    return env


class Project:
    """A temporary project directory with helpers to drive its daemon through the CLI."""

    def __init__(self, root: Path, runtime_dir: Path) -> None:
        self.root = root
        self.paths = ProjectPaths(root)
        self.env = clean_env(XDG_RUNTIME_DIR=str(runtime_dir))

    def aiwg(self, *args: str, timeout: float = 60, check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [AIWG, *args],
            cwd=self.root,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"aiwg {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def write_config(self, text: str) -> None:
        self.paths.aiwg_dir.mkdir(exist_ok=True)
        self.paths.config_file.write_text(text)

    def start(self, *args: str) -> int:
        self.aiwg("daemon", "start", *args, check=True)
        return self.pid()

    def pid(self) -> int:
        pid = instance.holder(self.paths)
        assert pid, "no daemon holds the lock"
        return pid

    def client(self, **kwargs: Any) -> DaemonClient:
        return DaemonClient(self.root, socket_path=self.paths.bind_socket(), **kwargs).connect()

    def running(self) -> bool:
        return instance.holder(self.paths) is not None

    def log_text(self) -> str:
        try:
            return self.paths.log_file.read_text()
        except FileNotFoundError:
            return ""

    def kill_everything(self) -> None:
        pid = instance.holder(self.paths)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class FakeClaude:
    """The fake `claude` (tests/fakes/fake_claude.py), first on PATH."""

    def __init__(self, bin_dir: Path, records: Path) -> None:
        self.bin_dir = bin_dir
        self.records = records

    def runs(self) -> list[dict[str, Any]]:
        import json

        found = []
        for path in sorted(self.records.glob("*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except ValueError:
                continue  # being rewritten right now
        return sorted(found, key=lambda r: r["started"])

    def grandchild_pids(self, kind: str = "grandchild") -> list[int]:
        return [int(p.read_text()) for p in self.records.glob(f"*.{kind}") if p.read_text()]


def install_fake_claude(directory: Path, name: str = "claude") -> FakeClaude:
    bin_dir = directory / "bin"
    records = directory / "records"
    bin_dir.mkdir(exist_ok=True)
    records.mkdir(exist_ok=True)
    source = (Path(__file__).parent / "fakes" / "fake_claude.py").read_text()
    script = bin_dir / name
    script.write_text(f"#!{sys.executable}\n{source}")
    script.chmod(0o755)
    return FakeClaude(bin_dir, records)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    root = tmp_path / "proj"
    root.mkdir()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    proj = Project(root, runtime)
    fake = install_fake_claude(tmp_path)
    proj.fake = fake
    proj.env["PATH"] = f"{fake.bin_dir}:{proj.env.get('PATH', os.defpath)}"
    proj.env["FAKE_CLAUDE_RECORDS"] = str(fake.records)
    yield proj
    if proj.running():
        proj.aiwg("daemon", "stop", "--timeout", "30")
        if proj.running():
            proj.kill_everything()
            pytest.fail("the daemon was still running after the test and had to be killed")


@pytest.fixture
def daemon(project: Project) -> Iterator[Project]:
    """A project with its daemon running (started through the real CLI)."""
    project.start()
    yield project


@pytest.fixture(autouse=True)
def reactor_hygiene(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves timers or listening ports on the global reactor, or
    child processes of this process running."""
    from aiwg import procfs

    children_before = procfs.own_children()
    if "twisted.internet.reactor" not in sys.modules:
        yield
        _no_children_left(children_before)
        return
    from twisted.internet import reactor
    from twisted.internet.tcp import Port as TCPPort
    from twisted.internet.unix import Port as UNIXPort

    before = set(reactor.getDelayedCalls())
    readers_before = set(reactor.getReaders())
    yield
    leftover = [c for c in reactor.getDelayedCalls() if c not in before and c.active()]
    if leftover:
        for call in leftover:
            call.cancel()
        pytest.fail(f"test left {len(leftover)} delayed call(s) on the reactor: {leftover}")
    ports = [r for r in reactor.getReaders() if r not in readers_before and isinstance(r, (TCPPort, UNIXPort))]
    if ports:
        for port in ports:
            port.stopListening()
        pytest.fail(f"test left {len(ports)} listening port(s) on the reactor: {ports}")
    _no_children_left(children_before)


def _no_children_left(before: set[int]) -> None:
    """Children the test started must have ended (a moment is allowed for a kill
    to land); one still running is killed, and the test fails."""
    from aiwg import procfs

    deadline = time.monotonic() + 2.0
    while True:
        alive = [pid for pid in procfs.own_children() - before
                 if (fields := procfs.stat_fields(pid)) is not None and fields[0] != b"Z"]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if alive:
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        pytest.fail(f"test left {len(alive)} child process(es) running: {alive}")
