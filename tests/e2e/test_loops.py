"""Ralph loops end to end: the real daemon runs the fake agent, then a real check
command through the shell, until the check passes or a limit ends the task; the
iteration records, the prompts the agent saw, the events, a crash in the middle
and the `command` condition of a rule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project, alive, wait_for

pytestmark = pytest.mark.e2e

FAST = {"kill_grace_seconds": 0.5, "shutdown_grace_seconds": 1}
FINISHED = ("completed", "failed", "timeout", "cancelled", "rejected")

#: A check that fails until its Nth run, counting its runs in a file beside it.
CHECK = """\
n=$(cat "{counter}" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "{counter}"
echo "check run $n: $(( {passes_at} - n )) test(s) still failing"
[ "$n" -ge {passes_at} ]
"""


def configure(project: Project, **sections: Any) -> None:
    daemon = {**FAST, **sections.pop("daemon", {})}
    project.write_config(json.dumps({"daemon": daemon, "agent": {"output": "claude-json"}, **sections}))


def write_check(project: Project, passes_at: int, name: str = "check.sh") -> str:
    """The check's command line; it passes on its `passes_at`-th run (never, if 0)."""
    counter = project.root.parent / f"{name}.count"
    script = project.root.parent / name
    script.write_text(CHECK.format(counter=counter, passes_at=passes_at if passes_at else 10**6))
    return f"sh {script}"


def check_runs(project: Project, name: str = "check.sh") -> int:
    try:
        return int((project.root.parent / f"{name}.count").read_text())
    except FileNotFoundError:
        return 0


def git_init(project: Project) -> None:
    env = {**project.env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    for argv in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "--allow-empty", "-m", "start"]):
        subprocess.run(argv, cwd=project.root, env=env, check=True, capture_output=True)


def get(project: Project, task_id: str) -> dict[str, Any]:
    with project.client() as client:
        return client.call("task.get", taskId=task_id)


def finished(project: Project, task_id: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (t := get(project, task_id))["state"] in FINISHED and t, timeout=timeout)


def submit(project: Project, prompt: str, *options: str) -> str:
    result = project.aiwg("task", "submit", prompt, *options, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["taskId"]


def iteration_dir(project: Project, task_id: str, number: int) -> Path:
    return project.paths.daemon_dir / "actions" / task_id / "iterations" / f"{number:03d}"


def test_the_loop_stops_at_the_iteration_whose_check_passes(project: Project) -> None:
    configure(project)
    git_init(project)
    (project.root / "app.py").write_text("broken = True\n")
    project.start()
    check = write_check(project, passes_at=3)
    with project.client() as client:
        client.subscribe(["task:iteration", "task:completed"])
        task_id = client.call("task.submit", prompt="Fix the failing tests @cost:0.25", until=check,
                              maxIterations=5, source="cli")["taskId"]
        events = []
        for event in client.events(timeout=30):
            events.append(event)
            if event["topic"] == "task:completed":
                break
    record = get(project, task_id)
    assert record["state"] == "completed", record["error"]
    assert check_runs(project) == 3 and len(project.fake.runs()) == 3  # stopped exactly at the passing run

    iterations = [e["payload"] for e in events if e["topic"] == "task:iteration"]
    assert [(i["iteration"], i["passed"], i["checkExitCode"], i["outcome"]) for i in iterations] == [
        (1, False, 1, "continue"), (2, False, 1, "continue"), (3, True, 0, "completed")]
    assert [i["totalCostUsd"] for i in iterations] == [0.25, 0.5, 0.75]

    assert record["costUsd"] == 0.75 and record["exitCode"] == 0
    assert record["metadata"]["loop"]["iteration"] == 3
    assert [(i["iteration"], i["passed"], i["outcome"]) for i in record["iterations"]] == [
        (1, False, "continue"), (2, False, "continue"), (3, True, "completed")]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project.root, capture_output=True, text=True).stdout.strip()
    for number, it in enumerate(record["iterations"], 1):
        where = iteration_dir(project, task_id, number)
        assert (where / "prompt.md").read_text() == project.fake.runs()[number - 1]["prompt"]
        assert "done: " in (where / "agent.log").read_text()  # the agent's own output
        assert f"check run {number}:" in (where / "check.log").read_text()
        assert it["agent"]["exitCode"] == 0 and it["agent"]["costUsd"] == 0.25
        assert it["check"]["exitCode"] == (0 if number == 3 else 1) and it["check"]["command"] == check
        assert it["duration"] >= 0 and it["costUsd"] == 0.25 and it["totalCostUsd"] == 0.25 * number
        assert it["git"]["before"]["head"] == head and it["git"]["after"]["head"] == head
        assert "?? app.py" in it["git"]["after"]["status"]

    shown = project.aiwg("task", "get", task_id, check=True).stdout
    assert "iterations:" in shown and "OUTCOME" in shown
    table = shown.split("iterations:", 1)[1].splitlines()
    assert [line.split()[0] for line in table[2:5]] == ["1", "2", "3"]
    assert table[4].split()[2] == "pass" and table[2].split()[2] == "fail(1)"


def test_the_check_output_reaches_the_next_prompt(project: Project) -> None:
    configure(project)
    project.start()
    check = write_check(project, passes_at=2)
    task_id = submit(project, "Make the linter happy", "--until", check)
    assert finished(project, task_id)["state"] == "completed"
    first, second = project.fake.runs()
    assert first["prompt"] == "Make the linter happy"  # the first iteration gets the prompt as written
    assert second["prompt"].startswith("Make the linter happy\n")
    assert "attempt 2 of at most 5" in second["prompt"]
    assert f"`{check}` still failed (exit status 1)" in second["prompt"]
    assert "check run 1: 1 test(s) still failing" in second["prompt"]


def test_a_check_that_never_passes_stops_at_the_iteration_limit(project: Project) -> None:
    configure(project)
    project.start()
    check = write_check(project, passes_at=0)
    task_id = submit(project, "Try anyway", "--until", check, "--max-iterations", "3")
    record = finished(project, task_id)
    assert record["state"] == "failed"
    assert record["error"] == f"the check `{check}` still fails after 3 iteration(s), the limit"
    assert check_runs(project) == 3 and len(project.fake.runs()) == 3
    assert [i["outcome"] for i in record["iterations"]] == ["continue", "continue", "failed"]
    wait = project.aiwg("task", "get", task_id, "--follow")
    assert wait.returncode == 1 and "still fails after 3 iteration(s)" in wait.stderr


def test_the_budget_stops_the_loop(project: Project) -> None:
    configure(project)
    project.start()
    check = write_check(project, passes_at=0)
    task_id = submit(project, "Expensive fix @cost:0.4", "--until", check, "--budget", "1",
                     "--max-iterations", "10")
    record = finished(project, task_id)
    assert record["state"] == "failed"
    assert record["error"].startswith("budget of $1 spent ($1.2) after 3 iteration(s)")
    assert len(project.fake.runs()) == 3 and record["costUsd"] == pytest.approx(1.2)


def test_kill_9_mid_loop_resumes_at_the_next_iteration(project: Project) -> None:
    configure(project)
    daemon_pid = project.start()
    check = write_check(project, passes_at=3)
    # Each agent sleeps until the test ends it, so the test decides when an
    # iteration's agent is done; the daemon dies during the second one.
    task_id = submit(project, "Long fix @sleep:60 @grandchild", "--until", check)
    # Its grandchild too, before its agent is ended: the two leave in one process group.
    wait_for(lambda: len(project.fake.runs()) >= 1 and len(project.fake.grandchild_pids()) >= 1)
    first = project.fake.runs()[0]
    os.kill(first["pid"], signal.SIGTERM)  # iteration 1's agent ends (failed); its check runs
    wait_for(lambda: len(project.fake.runs()) >= 2, timeout=20)
    assert get(project, task_id)["metadata"]["loop"]["iteration"] == 1
    second = project.fake.runs()[1]
    wait_for(lambda: len(project.fake.grandchild_pids()) >= 2)
    os.kill(daemon_pid, signal.SIGKILL)
    wait_for(lambda: not alive(daemon_pid))
    assert alive(second["pid"])

    project.start()
    wait_for(lambda: not alive(second["pid"]), timeout=5)  # the crash's leftovers are gone
    assert all(not alive(pid) for pid in project.fake.grandchild_pids())
    wait_for(lambda: len(project.fake.runs()) >= 3, timeout=20)
    third = project.fake.runs()[2]
    assert "attempt 2 of at most 5" in third["prompt"]  # iteration 2 again, not 1, not 3
    os.kill(third["pid"], signal.SIGTERM)
    wait_for(lambda: len(project.fake.runs()) >= 4, timeout=20)
    assert "attempt 3 of at most 5" in project.fake.runs()[3]["prompt"]
    os.kill(project.fake.runs()[3]["pid"], signal.SIGTERM)
    record = finished(project, task_id)
    assert record["state"] == "completed" and check_runs(project) == 3
    assert [i["iteration"] for i in record["iterations"]] == [1, 2, 3]
    assert "re-queued to resume its loop at iteration 2" in project.log_text()


def test_cancel_ends_a_loop_between_or_during_its_processes(project: Project) -> None:
    configure(project)
    project.start()
    check = write_check(project, passes_at=0)
    task_id = submit(project, "Slow fix @sleep:60", "--until", check)
    wait_for(lambda: project.fake.runs())
    cancelled = project.aiwg("task", "cancel", task_id)
    assert cancelled.returncode == 0, cancelled.stderr
    record = finished(project, task_id)
    assert record["state"] == "cancelled" and record["error"] == "cancelled while running (in iteration 1)"
    assert not alive(project.fake.runs()[0]["pid"]) and check_runs(project) == 0


def test_loop_parameters_are_checked(project: Project) -> None:
    configure(project)
    project.start()
    no_until = project.aiwg("task", "submit", "x", "--max-iterations", "3")
    assert no_until.returncode == 2 and "--max-iterations needs --until COMMAND" in no_until.stderr
    with project.client() as client:
        from aiwg.errors import RpcError

        with pytest.raises(RpcError, match="Invalid parameter 'maxIterations'"):
            client.call("task.submit", prompt="x", until="true", maxIterations=0)
        with pytest.raises(RpcError, match="Invalid parameter 'until': required when budget is given"):
            client.call("task.submit", prompt="x", budget=1)
        with pytest.raises(RpcError, match="Invalid parameter 'metadata': loop"):
            client.call("task.submit", prompt="x", metadata={"loop": {"until": "true"}})
    assert project.running() and project.fake.runs() == []


def test_a_rule_submits_a_loop(project: Project) -> None:
    check = write_check(project, passes_at=2)
    configure(project, rules=[{
        "id": "fixer", "trigger": {"type": "event", "topic": "ci:red"},
        "action": {"type": "submit_task", "prompt": "Fix CI", "until": check, "max_iterations": 4}}])
    project.start()
    project.aiwg("event", "emit", "ci:red", check=True)
    [task] = wait_for(lambda: json.loads(project.aiwg("task", "list", "--json", check=True).stdout))
    record = finished(project, task["id"])
    assert record["state"] == "completed" and record["source"] == "rule:fixer"
    assert record["metadata"]["loop"]["maxIterations"] == 4 and len(record["iterations"]) == 2
    table = project.aiwg("automation", "status", check=True).stdout.splitlines()
    assert table[3].strip() == f"loop: until {check}  (at most 4 iterations)"


def test_a_bad_loop_in_a_rule_is_a_config_error_naming_the_key(project: Project) -> None:
    configure(project, rules=[{
        "id": "fixer", "trigger": {"type": "event", "topic": "ci:red"},
        "action": {"type": "submit_task", "prompt": "Fix CI", "max_iterations": 4}}])
    result = project.aiwg("daemon", "start")
    assert result.returncode != 0
    assert "rules[0] (fixer).action.until: required when max_iterations is set" in result.stderr


def test_a_command_condition_gates_a_rule_both_ways(project: Project) -> None:
    marker = project.root.parent / "tests-fail"
    configure(project, rules=[
        {"id": "fix-when-red", "trigger": {"type": "event", "topic": "push"},
         "condition": {"type": "command", "run": f"test ! -e {marker}", "expect": "failure"},
         "action": {"type": "submit_task", "prompt": "Fix the failing tests"}},
        {"id": "ship-when-green", "trigger": {"type": "event", "topic": "push"},
         "condition": {"type": "command", "run": f"test ! -e {marker}"},
         "action": {"type": "submit_task", "prompt": "Write the release notes"}},
    ])
    project.start()

    def prompts() -> list[str]:
        return sorted(t["prompt"] for t in json.loads(project.aiwg("task", "list", "--json", check=True).stdout))

    def skipped(rule: str) -> int:
        status = json.loads(project.aiwg("automation", "status", "--json", check=True).stdout)
        return next(r for r in status["rules"] if r["id"] == rule)["skippedCount"]

    project.aiwg("event", "emit", "push", check=True)  # the tests pass
    wait_for(lambda: prompts() == ["Write the release notes"] and skipped("fix-when-red") == 1)
    marker.write_text("")  # now they fail
    project.aiwg("event", "emit", "push", check=True)
    wait_for(lambda: prompts() == ["Fix the failing tests", "Write the release notes"]
             and skipped("ship-when-green") == 1)
    assert "`test ! -e" in project.log_text() and "the rule fires on success" in project.log_text()

    table = project.aiwg("automation", "status", check=True).stdout.splitlines()
    assert table[1].split()[3:7] == ["FIRES", "THROT", "SKIP", "LAST"]
    row = table.index(next(line for line in table if line.startswith("ship-when-green ")))
    assert table[row].split()[-4:-1] == ["1", "0", "1"]  # fired once, skipped once (the tests failed)
    assert table[row + 1].strip().startswith(f"if: test ! -e {marker}  (fires on success, timeout")
    assert "; last: exit 1 at " in table[row + 1]


def test_an_iteration_timeout_kills_the_agent_and_the_check_still_runs(project: Project) -> None:
    configure(project)
    project.start()
    check = write_check(project, passes_at=1)
    task_id = submit(project, "Slow agent @sleep:60 @grandchild", "--until", check, "--iteration-timeout", "0.01")
    record = finished(project, task_id)
    assert record["state"] == "completed"  # the half-done work passed the check
    [iteration] = record["iterations"]
    assert iteration["agent"]["error"] == "the agent timed out after 0.01 min"
    assert iteration["check"]["exitCode"] == 0
    assert not alive(project.fake.runs()[0]["pid"])
    assert all(not alive(pid) for pid in project.fake.grandchild_pids())


def test_a_check_that_runs_out_of_time_counts_as_failed(project: Project) -> None:
    configure(project)
    project.start()
    pid_file = project.root.parent / "check.pid"
    task_id = submit(project, "Fix it", "--until", f"echo $$ > {pid_file}; sleep 60", "--check-timeout", "0.01",
                     "--max-iterations", "2")
    record = finished(project, task_id)
    assert record["state"] == "failed" and "still fails after 2 iteration(s)" in record["error"]
    assert [i["check"]["timedOut"] for i in record["iterations"]] == [True, True]
    assert record["iterations"][0]["check"]["error"] == "the check timed out after 0.01 min"
    assert "did not finish" in project.fake.runs()[1]["prompt"]
    assert "the check timed out after 0.01 min" in project.fake.runs()[1]["prompt"]
    assert not alive(int(pid_file.read_text()))


def test_the_tasks_timeout_limits_the_whole_loop(project: Project) -> None:
    configure(project)
    project.start()
    check = write_check(project, passes_at=0)
    task_id = submit(project, "Keep trying @sleep:0.4", "--until", check, "--timeout", "0.02",
                     "--max-iterations", "100")
    record = finished(project, task_id)
    assert record["state"] == "timeout"
    assert record["error"].startswith("the loop timed out after 0.02 min")
    assert 1 <= len(project.fake.runs()) < 10
    assert all(not alive(run["pid"]) for run in project.fake.runs())


def test_a_stop_mid_loop_resumes_it_at_the_next_start(project: Project) -> None:
    configure(project)
    project.start()
    check = write_check(project, passes_at=2)
    task_id = submit(project, "Fix it @sleep:60", "--until", check)
    wait_for(lambda: project.fake.runs())
    project.aiwg("daemon", "stop", check=True)
    assert not alive(project.fake.runs()[0]["pid"])
    project.start()
    wait_for(lambda: len(project.fake.runs()) == 2, timeout=20)
    assert project.fake.runs()[1]["prompt"] == "Fix it @sleep:60"  # iteration 1 again: it never finished
    os.kill(project.fake.runs()[1]["pid"], signal.SIGTERM)
    wait_for(lambda: len(project.fake.runs()) == 3, timeout=20)
    os.kill(project.fake.runs()[2]["pid"], signal.SIGTERM)
    record = finished(project, task_id)
    assert record["state"] == "completed" and [i["iteration"] for i in record["iterations"]] == [1, 2]
    assert "interrupted by a daemon stop in iteration 1; the loop resumes at iteration 1" in project.log_text()
