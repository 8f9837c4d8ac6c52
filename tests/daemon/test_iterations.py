"""A loop's iteration records on disk: one directory per iteration, a repeated
attempt replaces the interrupted one, records come back in iteration order."""

from __future__ import annotations

import os
from pathlib import Path

from aiwg.daemon.tasks.iterations import STATUS_LIMIT, IterationRecords, snapshot_json


def test_records_are_kept_per_iteration_and_read_in_order(tmp_path: Path) -> None:
    records = IterationRecords(tmp_path)
    for n in (2, 1, 10):
        where = records.begin("t-abc", n, f"prompt {n}")
        assert where == tmp_path / "t-abc" / "iterations" / f"{n:03d}"
        assert (where / "prompt.md").read_text() == f"prompt {n}"
        for private in (where / "prompt.md", where, where.parent, where.parent.parent):
            assert os.stat(private).st_mode & 0o077 == 0  # prompts may hold private text
        records.write("t-abc", n, {"iteration": n})
    records.begin("t-abc", 11, "still running")  # no record yet: not listed
    assert [r["iteration"] for r in records.read_all("t-abc")] == [1, 2, 10]
    assert records.read_all("t-none") == []


def test_an_interrupted_attempt_is_replaced(tmp_path: Path) -> None:
    records = IterationRecords(tmp_path)
    where = records.begin("t-abc", 3, "first try")
    (where / "agent.log").write_text("half")
    records.begin("t-abc", 3, "second try")
    assert sorted(os.listdir(where)) == ["prompt.md"] and (where / "prompt.md").read_text() == "second try"
    records.remove("t-abc")
    assert not (tmp_path / "t-abc").exists()


def test_snapshots_are_kept_as_lines_and_cut_when_huge() -> None:
    assert snapshot_json(None) is None
    assert snapshot_json({"head": "abc", "status": " M a.py\n?? b.py\n"}) == {
        "head": "abc", "status": [" M a.py", "?? b.py"]}
    huge = snapshot_json({"head": None, "status": "?? x\n" * STATUS_LIMIT})
    assert huge["statusTruncated"] is True and len(huge["status"]) <= STATUS_LIMIT // 5 + 1
