"""The service files in etc/, rendered as etc/README.md says (placeholders replaced)
and checked by the tools that read them: `systemd-analyze verify` for the systemd
units, plistlib and the job's own shell wrapper for the launchd plist."""

from __future__ import annotations

import getpass
import os
import plistlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ETC = ROOT / "etc"
UNITS = sorted([*ETC.glob("*.service"), *ETC.glob("user/*.service")])


def render(text: str, project: Path) -> str:
    venv = Path(sys.executable).parent.parent
    return (text.replace("/path/to/project", str(project)).replace("/path/to/venv", str(venv))
            .replace("/path/to/aiwg-checkout", str(ROOT)).replace("User=developer", f"User={getpass.getuser()}"))


def test_every_unit_file_is_covered() -> None:
    assert {u.name for u in UNITS} >= {"aiwg-daemon.service", "aiwg-daemon-foreground.service",
                                       "aiwg-daemon@.service"}
    assert (ETC / "user" / "aiwg-daemon@.service").exists()


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: str(u.relative_to(ETC)))
def test_the_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    project = tmp_path / "my project"
    project.mkdir()
    text = render(unit.read_text(), project)
    assert "RestartPreventExitStatus=6" in text  # an invalid configuration is not restarted forever
    if "@" in unit.name:  # a template: verify an instance named by the project's escaped path
        escaped = subprocess.run(["systemd-escape", "--path", str(project)], capture_output=True, text=True,
                                 check=True).stdout.strip()
        (tmp_path / unit.name).write_text(text)
        target = tmp_path / unit.name.replace("@.", f"@{escaped}.")
        target.symlink_to(tmp_path / unit.name)
    else:
        target = tmp_path / unit.name
        target.write_text(text)
    if "Type=notify" in text or "Type=forking" in text:
        assert "network-online.target" in text or unit.parent.name == "user"
    done = subprocess.run([analyze, "verify", "--man=no", str(target)], capture_output=True, text=True,
                          timeout=60)
    # Only what concerns our unit counts: the host's own units may have problems of their own.
    ours = [line for line in done.stderr.splitlines() if unit.name.split("@")[0] in line]
    assert done.returncode == 0 and not ours, done.stderr


def plist_wrapper() -> list[str]:
    job = plistlib.loads(render((ETC / "io.aiwg.daemon.plist").read_text(), Path("/p")).encode())
    assert job["Label"] == "io.aiwg.daemon" and job["KeepAlive"] == {"SuccessfulExit": False}
    return job["ProgramArguments"]


def run_wrapper(tmp_path: Path, body: str) -> subprocess.Popen:
    """The plist's sh wrapper, around a stand-in for `aiwg daemon start --foreground`."""
    fake = tmp_path / "aiwg"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    argv = plist_wrapper()
    return subprocess.Popen([*argv[:3], str(fake), str(tmp_path)], stdout=subprocess.PIPE, text=True)


def test_launchd_leaves_an_invalid_configuration_stopped_and_restarts_a_crash(tmp_path: Path) -> None:
    assert run_wrapper(tmp_path, "exit 6").wait(timeout=10) == 0  # SuccessfulExit: not relaunched
    assert run_wrapper(tmp_path, "exit 1").wait(timeout=10) == 1  # a crash: relaunched
    assert run_wrapper(tmp_path, 'test "$4" = "$PWD" || test -n "$4"; exit 0').wait(timeout=10) == 0


def test_launchds_signals_reach_the_daemon(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    wrapper = run_wrapper(tmp_path, f"trap 'echo hup >> {marks}' HUP; trap 'echo term >> {marks}; exit 0' TERM\n"
                                    f"echo up >> {marks}; while :; do sleep 0.05; done")
    deadline = time.monotonic() + 10
    while not marks.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(wrapper.pid, signal.SIGHUP)  # launchctl kill HUP: a reload
    time.sleep(0.3)
    os.kill(wrapper.pid, signal.SIGTERM)  # launchctl stop
    assert wrapper.wait(timeout=10) == 0
    assert marks.read_text().split() == ["up", "hup", "term"]
