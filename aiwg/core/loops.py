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

from attrs import frozen

DEFAULT_MAX_ITERATIONS = 5
#: How much of the check's output the next prompt carries (its end: where failures are).
CHECK_TAIL_CHARS = 6000
#: Metadata key of a loop's settings and progress in the task record.
LOOP_KEY = "loop"


class LoopSpecError(ValueError):
    """A loop setting that cannot work; the message names the parameter."""


@frozen
class LoopSpec:
    until: str
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    budget_usd: float | None = None
    iteration_timeout_minutes: float | None = None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> "LoopSpec":
        """From task metadata or a request (`until`, `maxIterations`, `budget`,
        `iterationTimeout`), with each problem named."""
        until = data.get("until")
        if not isinstance(until, str) or not until.strip():
            raise LoopSpecError("until: the check command must be a non-empty string, e.g. \"pytest -q\"")
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
        return cls(until=until.strip(), max_iterations=max_iterations,
                   budget_usd=float(budget) if budget is not None else None,
                   iteration_timeout_minutes=float(per_iteration) if per_iteration is not None else None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"until": self.until, "maxIterations": self.max_iterations}
        if self.budget_usd is not None:
            out["budget"] = self.budget_usd
        if self.iteration_timeout_minutes is not None:
            out["iterationTimeout"] = self.iteration_timeout_minutes
        return out


def check_tail(output: str, limit: int = CHECK_TAIL_CHARS) -> str:
    """The end of the check's output, marked when cut."""
    if len(output) <= limit:
        return output
    return "[… earlier output cut …]\n" + output[-limit:]


def iteration_prompt(original: str, iteration: int, spec: LoopSpec,
                     last_check_output: str | None = None, last_exit: int | None = None) -> str:
    """The prompt of iteration `iteration` (1-based). The first is the user's prompt as
    given; each later one adds what the previous check said."""
    if iteration <= 1 or last_check_output is None:
        return original
    return (
        f"{original}\n\n"
        f"---\n"
        f"This is attempt {iteration} of at most {spec.max_iterations}. After the previous attempt the "
        f"check `{spec.until}` still failed (exit status {last_exit}). The end of its output:\n\n"
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
