"""Ralph loops, the pure part: settings with named problems, the next iteration's
prompt, and when a loop ends."""

from __future__ import annotations

import pytest

from aiwg.core.loops import (CHECK_TAIL_CHARS, LoopProgress, LoopSpec, LoopSpecError, Verdict,
                             after_iteration, check_tail, iteration_prompt, loop_json, spec_from_action)


def test_spec_defaults_and_round_trip() -> None:
    spec = LoopSpec.parse({"until": "  pytest -q "})
    assert spec == LoopSpec(until="pytest -q", max_iterations=5)
    full = LoopSpec.parse({"until": "make check", "maxIterations": 3, "budget": 2, "iterationTimeout": 10,
                           "checkTimeout": 3})
    assert LoopSpec.parse(full.to_json()) == full and full.budget_usd == 2.0


@pytest.mark.parametrize("data, named", [
    ({}, "until:"),
    ({"until": " "}, "until:"),
    ({"until": "x", "maxIterations": 0}, "maxIterations:"),
    ({"until": "x", "maxIterations": True}, "maxIterations:"),
    ({"until": "x", "maxIterations": 2.5}, "maxIterations:"),
    ({"until": "x", "budget": -1}, "budget:"),
    ({"until": "x", "budget": "1"}, "budget:"),
    ({"until": "x", "iterationTimeout": 0}, "iterationTimeout:"),
])
def test_bad_settings_name_the_parameter(data: dict, named: str) -> None:
    with pytest.raises(LoopSpecError, match=f"^{named}"):
        LoopSpec.parse(data)


def test_the_first_prompt_is_the_users_and_later_ones_carry_the_check() -> None:
    spec = LoopSpec(until="pytest -q", max_iterations=4)
    assert iteration_prompt("Fix the tests", 1, spec) == "Fix the tests"
    later = iteration_prompt("Fix the tests", 2, spec, "FAILED test_a.py::test_x - assert 1 == 2", 1)
    assert later.startswith("Fix the tests\n")
    assert "attempt 2 of at most 4" in later and "`pytest -q`" in later and "exit status 1" in later
    assert "FAILED test_a.py::test_x" in later


def test_only_the_end_of_a_long_check_output_is_carried() -> None:
    output = "start\n" + "x" * (CHECK_TAIL_CHARS * 3) + "\nthe real failure"
    tail = check_tail(output)
    assert tail.endswith("the real failure") and "start" not in tail
    assert len(tail) <= CHECK_TAIL_CHARS + 40 and tail.startswith("[… earlier output cut …]")
    assert check_tail("short") == "short"


def test_a_passing_check_completes_the_loop_at_once() -> None:
    spec = LoopSpec(until="true", max_iterations=3, budget_usd=1.0)
    assert after_iteration(spec, 1, 0, 5.0) == Verdict("completed")  # success wins over the budget


def test_limits_end_the_loop_with_the_reason() -> None:
    spec = LoopSpec(until="pytest -q", max_iterations=3, budget_usd=0.5)
    assert after_iteration(spec, 1, 1, 0.1) == Verdict("continue")
    assert after_iteration(spec, 2, None, None) == Verdict("continue")  # a check that timed out: try again
    over = after_iteration(spec, 2, 1, 0.5)
    assert over.outcome == "failed" and over.reason.startswith("budget of $0.5 spent")
    last = after_iteration(spec, 3, 1, 0.2, agent_failed="exit status 2")
    assert last.outcome == "failed"
    assert last.reason == ("the check `pytest -q` still fails after 3 iteration(s), the limit "
                           "(last agent run: exit status 2)")
    assert after_iteration(LoopSpec(until="x", max_iterations=9), 2, 1, 100.0) == Verdict("continue")  # no budget


def test_check_timeout_has_a_default_and_is_checked() -> None:
    assert LoopSpec.parse({"until": "x"}).check_timeout_minutes == 10.0
    assert LoopSpec.parse({"until": "x", "checkTimeout": 0.5}).check_timeout_minutes == 0.5
    with pytest.raises(LoopSpecError, match="^checkTimeout:"):
        LoopSpec.parse({"until": "x", "checkTimeout": -1})


def test_a_check_that_did_not_finish_is_said_so_in_the_next_prompt() -> None:
    spec = LoopSpec(until="npm test", max_iterations=3)
    later = iteration_prompt("Fix it", 2, spec, "partial output\n[the check timed out after 10 min]", None)
    assert "`npm test` did not finish" in later and "exit status" not in later


def test_progress_adds_up_and_survives_the_metadata_round_trip() -> None:
    start = LoopProgress()
    assert start.to_json() == {"iteration": 0, "activeSeconds": 0.0}
    one = start.finished(1, None, 12.5, 1, "boom")
    assert one.spent_usd is None  # an agent that reports no cost spends nothing we know of
    two = one.finished(2, 0.25, 7.5, None, "x" * (CHECK_TAIL_CHARS * 2))
    assert (two.iteration, two.spent_usd, two.active_seconds, two.last_exit) == (2, 0.25, 20.0, None)
    assert len(two.last_output) <= CHECK_TAIL_CHARS + 40  # only the tail is kept
    spec = LoopSpec(until="make", max_iterations=4)
    stored = loop_json(spec, two)
    assert LoopSpec.parse(stored) == spec and LoopProgress.from_json(stored) == two
    assert LoopProgress.from_json({"iteration": "3", "spentUsd": True, "lastCheck": "?"}) == LoopProgress()


def test_actions_name_their_loop_keys_in_config_terms() -> None:
    assert spec_from_action({"prompt": "x"}) is None
    spec = spec_from_action({"prompt": "x", "until": "make test", "max_iterations": 3, "check_timeout": 2})
    assert spec == LoopSpec(until="make test", max_iterations=3, check_timeout_minutes=2.0)
    assert spec_from_action(spec.to_config()) == spec
    with pytest.raises(LoopSpecError, match=r"^until: required when max_iterations and budget are set"):
        spec_from_action({"max_iterations": 3, "budget": 1})
    with pytest.raises(LoopSpecError, match=r"^iteration_timeout: must be a positive number"):
        spec_from_action({"until": "x", "iteration_timeout": 0})


def test_a_nul_in_the_check_output_cannot_break_the_next_prompt() -> None:
    spec = LoopSpec(until="x", max_iterations=3)
    prompt = iteration_prompt("Fix", 2, spec, "binary\x00junk", 1)
    assert "\x00" not in prompt and "binary\ufffdjunk" in prompt
    with pytest.raises(LoopSpecError, match="^until: the check command contains a NUL"):
        LoopSpec.parse({"until": "make\x00 test"})


def test_an_interrupted_iteration_still_counts_its_cost_and_time() -> None:
    progress = LoopProgress(iteration=2, spent_usd=0.5, active_seconds=30.0, last_exit=1, last_output="boom",
                            crashes=1)
    cut = progress.interrupted(0.25, 12.0)
    assert (cut.iteration, cut.spent_usd, cut.active_seconds, cut.crashes) == (2, 0.75, 42.0, 1)
    assert LoopProgress().interrupted(None, 5.0).spent_usd is None
    assert LoopProgress.from_json(cut.to_json()) == cut
