"""The docs cannot drift from what the commands do: the README's quick start runs
as written, and the user guide's shell sessions (`$ aiwg …` followed by what it
prints) are replayed against a temp project with the fake agent, each printed line
compared with the documented one once the parts that differ from run to run (ids,
pids, paths, times, counts) are set aside.

Only sessions that are safe and deterministic here are replayed: they are listed in
SESSIONS by their first command; a session that needs a chat app or a real claude
is not."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import AIWG, Project

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

#: The user guide's sessions replayed here, by their first command.
SESSIONS = (
    "aiwg daemon start",
    "aiwg daemon stop",
    "aiwg daemon list",
    'aiwg task submit "Upgrade the dependencies" --require-approval',
)

_VARIABLE = [
    (re.compile(r"\bt-[a-z0-9]{10}\b"), "t-ID"),
    (re.compile(r"\bc-[0-9a-f]{8,10}\b"), "c-ID"),
    (re.compile(r"(?<![\w-])/[^\s,)]+"), "PATH"),
    (re.compile(r"\b\d+[dhms](?: \d+[hms])?\b"), "AGE"),
    (re.compile(r"\b\d+(?:\.\d+)?\b"), "N"),
    (re.compile(r"\b(?:healthy|degraded)\b"), "HEALTH"),
]


def shape(line: str) -> str:
    """A printed line with what varies from run to run set aside."""
    line = line.split("(on stderr)")[0]
    for pattern, word in _VARIABLE:
        line = pattern.sub(word, line)
    return " ".join(line.split())


def sessions(text: str) -> list[list[tuple[str, list[str]]]]:
    """Each fenced block of `$ command` lines, as (command, printed lines)."""
    found = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S):
        steps: list[tuple[str, list[str]]] = []
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
        if steps:
            found.append(steps)
    return found


def run(project: Project, command: str, ids: dict[str, str]) -> tuple[int, list[str]]:
    for documented, real in ids.items():
        command = command.replace(documented, real)
    argv = shlex.split(command)
    assert argv[0] == "aiwg", command
    result = project.aiwg(*argv[1:])
    return result.returncode, (result.stdout + result.stderr).splitlines()


def test_the_readme_quick_start_runs_as_written(project: Project) -> None:
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"^```sh\n(.*?)^```", readme, re.M | re.S) if ".venv/bin/aiwg" in b)
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith(".venv/bin/aiwg")]
    assert commands[0].endswith("daemon start") and commands[-1].endswith("daemon stop")
    for command in commands:
        argv = shlex.split(command.replace(".venv/bin/aiwg", AIWG, 1))
        result = project.aiwg(*argv[1:])
        assert result.returncode == 0, (command, result.stdout, result.stderr)


@pytest.mark.parametrize("first", SESSIONS)
def test_a_user_guide_session_prints_what_the_guide_shows(project: Project, first: str) -> None:
    guide = (ROOT / "docs" / "user-guide.md").read_text()
    [steps] = [s for s in sessions(guide) if s[0][0] == first]
    if first != "aiwg daemon start":
        project.start()
    ids: dict[str, str] = {}
    for command, documented in steps:
        status, printed = run(project, command, ids)
        assert status == 0, (command, printed)
        for doc_line in documented:  # a task id the guide shows stands for the one this run made
            for doc_id in re.findall(r"\bt-[a-z0-9]{10}\b", doc_line):
                real = next((m for line in printed for m in re.findall(r"\bt-[a-z0-9]{10}\b", line)), None)
                if real and doc_id not in ids:
                    ids[doc_id] = real
        expected = [shape(line) for line in documented if line.strip()]
        actual = [shape(line) for line in printed if line.strip()]
        if first == "aiwg daemon list":  # other users' daemons would not be here: the header and our row
            expected, actual = expected[:1], actual[:1]
        # stdout and stderr are captured apart: their lines' relative order is not the guide's to show
        assert sorted(actual) == sorted(expected), (command, printed)
    if project.running():
        project.aiwg("daemon", "stop")
