# tests: tests/core/test_loops.py
"""Ralph loops, the pure part: what a loop is, what the next iteration is told, and
when the loop ends. No processes, no clock.

A loop task runs the agent, then the check command the user wrote; the check's
exit status 0 ends the task `completed`. Otherwise the next iteration's prompt
carries the original prompt, the iteration number and the end of the check's
output, so the agent learns what still fails. Limits end it `failed` with the
reason: the number of iterations, the money the agent reports spending, and the
task's overall timeout (enforced by the supervisor's timer).
"""

from __future__ import annotations

from typing import Any, Mapping

from attrs import evolve, frozen

from aiwg.core import agents

DEFAULT_MAX_ITERATIONS = 5
#: Minutes the check command may run before it counts as failed.
DEFAULT_CHECK_TIMEOUT_MINUTES = 10.0
#: How much of the check's output the next prompt carries (its end: where failures are).
CHECK_TAIL_CHARS = 6000


class LoopSpecError(ValueError):
    """A loop setting that cannot work; the message names the parameter."""


@frozen
class LoopSpec:
    until: str
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    budget_usd: float | None = None
    iteration_timeout_minutes: float | None = None
    check_timeout_minutes: float = DEFAULT_CHECK_TIMEOUT_MINUTES

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> "LoopSpec":
        """From a stored loop or a request (`until`, `maxIterations`, `budget`,
        `iterationTimeout`, `checkTimeout`), with each problem named."""
        until = data.get("until")
        if not isinstance(until, str) or not until.strip():
            raise LoopSpecError("until: the check command must be a non-empty string, e.g. \"pytest -q\"")
        if "\x00" in until:
            raise LoopSpecError("until: the check command contains a NUL character")
        max_iterations = data.get("maxIterations", DEFAULT_MAX_ITERATIONS)
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or not 1 <= max_iterations <= 1000:
            raise LoopSpecError(f"maxIterations: must be an integer from 1 to 1000, got {max_iterations!r}")
        budget = data.get("budget")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
            raise LoopSpecError(f"budget: must be a positive number of US dollars, got {budget!r}")
        per_iteration = data.get("iterationTimeout")
        if per_iteration is not None and (isinstance(per_iteration, bool)
                                          or not isinstance(per_iteration, (int, float)) or per_iteration <= 0):
            raise LoopSpecError(f"iterationTimeout: must be a positive number of minutes, got {per_iteration!r}")
        check_timeout = data.get("checkTimeout", DEFAULT_CHECK_TIMEOUT_MINUTES)
        if isinstance(check_timeout, bool) or not isinstance(check_timeout, (int, float)) or check_timeout <= 0:
            raise LoopSpecError(f"checkTimeout: must be a positive number of minutes, got {check_timeout!r}")
        return cls(until=until.strip(), max_iterations=max_iterations,
                   budget_usd=float(budget) if budget is not None else None,
                   iteration_timeout_minutes=float(per_iteration) if per_iteration is not None else None,
                   check_timeout_minutes=float(check_timeout))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"until": self.until, "maxIterations": self.max_iterations}
        if self.budget_usd is not None:
            out["budget"] = self.budget_usd
        if self.iteration_timeout_minutes is not None:
            out["iterationTimeout"] = self.iteration_timeout_minutes
        out["checkTimeout"] = self.check_timeout_minutes
        return out

    def to_config(self) -> dict[str, Any]:
        """As a rule's action or an `actions` entry writes it."""
        wire = self.to_json()
        return {key: wire[w] for key, w in CONFIG_KEYS.items() if w in wire}


@frozen
class LoopProgress:
    """How far a loop has come, kept in the task's record beside its spec so
    that a restarted daemon resumes after the last finished iteration."""

    iteration: int = 0  # iterations finished (agent and check both ran)
    crashes: int = 0  # times the daemon died while this loop ran (each resumes it)
    spent_usd: float | None = None  # None: the agent never reported a cost
    active_seconds: float = 0.0  # time spent in finished iterations (the overall timeout's clock)
    last_exit: int | None = None  # the last check's exit status (None: it did not finish)
    last_output: str | None = None  # the end of the last check's output

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "LoopProgress":
        def number(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        last = data.get("lastCheck") if isinstance(data.get("lastCheck"), Mapping) else {}
        done = data.get("iteration")
        exit_code = last.get("exitCode")
        output = last.get("output")
        crashes = data.get("crashes")
        return cls(
            iteration=done if isinstance(done, int) and not isinstance(done, bool) and done > 0 else 0,
            crashes=crashes if isinstance(crashes, int) and not isinstance(crashes, bool) and crashes > 0 else 0,
            spent_usd=number("spentUsd"),
            active_seconds=number("activeSeconds") or 0.0,
            last_exit=exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None,
            last_output=output if isinstance(output, str) else None,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"iteration": self.iteration, "activeSeconds": round(self.active_seconds, 3)}
        if self.spent_usd is not None:
            out["spentUsd"] = self.spent_usd
        if self.iteration:
            out["lastCheck"] = {"exitCode": self.last_exit, "output": self.last_output or ""}
        if self.crashes:
            out["crashes"] = self.crashes
        return out

    def finished(self, iteration: int, cost_usd: float | None, seconds: float,
                 check_exit: int | None, check_output: str) -> "LoopProgress":
        """The progress once iteration `iteration` has run its agent and its check."""
        spent = self.spent_usd
        if cost_usd is not None:
            spent = (spent or 0.0) + cost_usd
        return LoopProgress(iteration=iteration, spent_usd=spent, active_seconds=self.active_seconds + seconds,
                            last_exit=check_exit, last_output=check_tail(check_output), crashes=self.crashes)

    def interrupted(self, cost_usd: float | None, seconds: float) -> "LoopProgress":
        """An iteration cut short still spent its money and its time: they count
        against the budget and the loop's timeout when it runs again."""
        spent = self.spent_usd if cost_usd is None else (self.spent_usd or 0.0) + cost_usd
        return evolve(self, spent_usd=spent, active_seconds=self.active_seconds + seconds)


def loop_json(spec: LoopSpec, progress: LoopProgress) -> dict[str, Any]:
    """A loop's settings and progress as one object: the store's `loop` column,
    and `metadata.loop` in a task record on the wire."""
    return {**spec.to_json(), **progress.to_json()}


#: A rule's or an action's loop keys (config, snake_case) → LoopSpec's (wire, camelCase).
CONFIG_KEYS = {"until": "until", "max_iterations": "maxIterations", "budget": "budget",
               "iteration_timeout": "iterationTimeout", "check_timeout": "checkTimeout"}


def parse_loop(values: Mapping[str, Any], names: Mapping[str, str] | None = None,
               when: str = "set") -> LoopSpec | None:
    """The loop asked for by `values` (LoopSpec's keys; None or absent: not given),
    None when nothing is; a problem is named as the caller spells the key (`names`,
    from LoopSpec's key to the caller's), `when` saying how a value came."""
    names = names or {}
    given = {key: value for key, value in values.items() if value is not None}
    if not given:
        return None
    if "until" not in given:
        shown = [names.get(key, key) for key in given]
        raise LoopSpecError(f"{names.get('until', 'until')}: required when {' and '.join(shown)} "
                            f"{'is' if len(shown) == 1 else 'are'} {when} (a loop needs its check command)")
    try:
        return LoopSpec.parse(given)
    except LoopSpecError as exc:
        key, _, problem = str(exc).partition(": ")
        raise LoopSpecError(f"{names.get(key, key)}: {problem}") from None


def spec_from_action(action: Mapping[str, Any]) -> LoopSpec | None:
    """The loop a rule's action or an `actions` entry asks for (None: a plain task);
    a problem is named by its config key."""
    return parse_loop({wire: action.get(key) for key, wire in CONFIG_KEYS.items()},
                      {wire: key for key, wire in CONFIG_KEYS.items()})


def check_tail(output: str, limit: int = CHECK_TAIL_CHARS) -> str:
    """The end of the check's output, marked when cut. A NUL (binary output) cannot
    travel in a prompt, which is a command-line argument: it is replaced."""
    output = output.replace("\x00", "\ufffd")
    if len(output) <= limit:
        return output
    return "[… earlier output cut …]\n" + output[-limit:]


def iteration_prompt(original: str, iteration: int, spec: LoopSpec,
                     last_check_output: str | None = None, last_exit: int | None = None) -> str:
    """The prompt of iteration `iteration` (1-based). The first is the user's prompt as
    given; each later one adds what the previous check said."""
    if iteration <= 1 or last_check_output is None:
        return original
    how = f"still failed (exit status {last_exit})" if last_exit is not None else "did not finish"
    return (
        f"{original}\n\n"
        f"---\n"
        f"This is attempt {iteration} of at most {spec.max_iterations}. After the previous attempt the "
        f"check `{spec.until}` {how}. The end of its output:\n\n"
        f"{check_tail(last_check_output)}\n"
        f"---\n"
        f"Fix what the check reports, then stop; the check runs again after you."
    )


@frozen
class Verdict:
    """What happens after an iteration: `continue`, or the task's final state and error."""

    outcome: str  # "continue", "completed" or "failed"
    reason: str | None = None


def after_iteration(spec: LoopSpec, iteration: int, check_exit: int | None, spent_usd: float | None,
                    agent_failed: str | None = None) -> Verdict:
    """The loop's decision once iteration `iteration` and its check have run.
    `check_exit` None: the check did not finish (timed out, could not start)."""
    if check_exit == 0:
        return Verdict("completed")
    if spent_usd is not None and spec.budget_usd is not None and spent_usd >= spec.budget_usd:
        return Verdict("failed", f"budget of ${spec.budget_usd:g} spent (${spent_usd:.4g}) after "
                                 f"{iteration} iteration(s); the check `{spec.until}` still fails")
    if iteration >= spec.max_iterations:
        detail = f" (last agent run: {agent_failed})" if agent_failed else ""
        return Verdict("failed", f"the check `{spec.until}` still fails after {iteration} iteration(s), "
                                 f"the limit{detail}")
    return Verdict("continue")


def prompt_problem(settings: agents.AgentSettings, prompt: str, loop: LoopSpec | None) -> str | None:
    """Why `prompt` cannot reach the agent, or None: for a loop, also with the end
    of the check's output that its later iterations add."""
    problem = agents.prompt_problem(settings, prompt)
    if problem is None and loop is not None:
        longest = iteration_prompt(prompt, loop.max_iterations, loop, "\U0001f600" * (CHECK_TAIL_CHARS + 1), 1)
        if agents.prompt_problem(settings, longest) is not None:
            problem = ("with the end of the check's output that a later iteration adds (up to "
                       f"{CHECK_TAIL_CHARS:,} characters), the prompt would not fit in one command-line "
                       f"argument ({agents.MAX_ARGUMENT_BYTES - 1:,} bytes on Linux): shorten it")
    return problem
