# tests: tests/e2e/test_isolation.py
"""`task.diff`, `task.merge` and `task.discard`: the review of an isolated task's
branch, part of the `task.` namespace (TaskMethods takes them from here). A
refusal (the branch is gone, the checkout is dirty, the merge would conflict) is
error -32013 whose message says why and whose `data.files` names the files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiwg.daemon.ipc.records import record_json
from aiwg.daemon.ipc.rpc import CallContext, Namespace, Param, method

if TYPE_CHECKING:
    from aiwg.daemon.tasks.supervisor import Supervisor


class BranchMethods(Namespace):
    _supervisor: "Supervisor"

    @method(
        Param("taskId", "string", required=True, non_empty=True),
        Param("stat", "boolean", default=False, description="A summary of the files changed instead of the diff."),
        description="An isolated task's branch against the commit it started from (git diff).",
    )
    def jsonrpc_diff(self, ctx: CallContext, taskId: str, stat: bool) -> Any:
        return self._supervisor.isolation.diff(taskId, stat)

    @method(
        Param("taskId", "string", required=True, non_empty=True),
        Param("into", "string", nullable=True, non_empty=True, description="The branch to merge into (default: "
              "the branch checked out in the project root)."),
        Param("squash", "boolean", default=False, description="One commit with all of the branch's changes, "
              "instead of a merge commit."),
        Param("by", "string", default="ipc", non_empty=True, description="Who merged, for the record."),
        description="Merge an ended isolated task's branch; refused, changing nothing, when the target "
        "checkout has uncommitted changes or the merge would conflict (the files are named).",
    )
    def jsonrpc_merge(self, ctx: CallContext, taskId: str, into: str | None, squash: bool, by: str) -> Any:
        return self._supervisor.isolation.merge(taskId, into, squash, by).addCallback(_merged)

    @method(
        Param("taskId", "string", required=True, non_empty=True),
        Param("by", "string", default="ipc", non_empty=True, description="Who discarded, for the record."),
        description="Delete an ended isolated task's branch (and its worktree, if it was kept).",
    )
    def jsonrpc_discard(self, ctx: CallContext, taskId: str, by: str) -> Any:
        return self._supervisor.isolation.discard(taskId, by).addCallback(
            lambda task: {"discarded": True, "workspace": record_json(task)["workspace"]})

    def merge_on_approval(self, task_id: str, by: str) -> Any:
        """tasks.merge "approval": approving a completed task that awaits its merge
        merges it; None if the task does not await one."""
        if self._supervisor.isolation.awaiting_merge(task_id) is None:
            return None
        return self._supervisor.isolation.merge(task_id, None, False, by).addCallback(
            lambda done: {"approved": True, "state": done.state.value, **_merged(done)})

    def keep_on_rejection(self, task_id: str, by: str) -> Any:
        if self._supervisor.isolation.awaiting_merge(task_id) is None:
            return None
        kept = self._supervisor.isolation.keep(task_id, by)
        return {"rejected": True, "state": kept.state.value, "workspace": record_json(kept)["workspace"]}


def _merged(task: Any) -> dict[str, Any]:
    workspace = record_json(task)["workspace"]
    return {"merged": True, "into": workspace.get("mergedInto"), "commit": workspace.get("mergeCommit"),
            "workspace": workspace}
