"""The watch plan and how a burst of raw changes is summarised."""

from __future__ import annotations

import pytest

from aiwg.core.watching import (
    MAX_LISTED_CHANGES,
    ChangeSet,
    Change,
    changes_from_payload,
    matching_paths,
    plan_from_config,
    watch_path_problem,
)
from aiwg.core.globs import matches


def net(*raw: tuple) -> list[tuple]:
    changes = ChangeSet()
    for item in raw:
        changes.add(*item)
    return [(c.path, c.kind, c.source) for c in changes.changes()]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ([("a", "modified"), ("a", "modified")], [("a", "modified", None)]),
        ([("a", "created"), ("a", "modified")], [("a", "created", None)]),
        ([("a", "created"), ("a", "deleted")], []),
        ([("a", "modified"), ("a", "deleted")], [("a", "deleted", None)]),
        ([("a", "deleted"), ("a", "created")], [("a", "modified", None)]),
        # an editor's atomic save: a temp file written, then renamed over the real one
        ([("a.ts.tmp", "created"), ("a.ts.tmp", "modified"), ("a.ts", "moved", "a.ts.tmp")], [("a.ts", "modified", None)]),
        ([("b", "moved", "a")], [("b", "moved", "a")]),
        ([("b", "moved", "a"), ("c", "moved", "b")], [("c", "moved", "a")]),
        ([("b", "moved", "a"), ("a", "moved", "b")], [("a", "modified", None)]),
        ([("b", "moved", "a"), ("b", "modified")], [("b", "moved", "a")]),
        ([("x", "modified"), ("y", "created"), ("x", "modified")], [("x", "modified", None), ("y", "created", None)]),
    ],
)
def test_a_burst_is_reduced_to_its_net_effect(raw: list[tuple], expected: list[tuple]) -> None:
    assert net(*raw) == expected


def test_payload_lists_changes_and_counts_exactly_beyond_the_listing_limit() -> None:
    changes = ChangeSet()
    for i in range(MAX_LISTED_CHANGES + 5):
        changes.add(f"src/f{i}.ts", "modified")
    payload = changes.payload()
    assert payload["count"] == MAX_LISTED_CHANGES + 5
    assert payload["truncated"] is True
    assert len(payload["changes"]) == len(payload["paths"]) == MAX_LISTED_CHANGES
    assert payload["changes"][0] == {"path": "src/f0.ts", "kind": "modified"}
    assert changes.raw == MAX_LISTED_CHANGES + 5


def test_moves_carry_their_origin_and_rules_match_either_end() -> None:
    changes = ChangeSet()
    changes.add("src/new.ts", "moved", "old/place.js")
    payload = changes.payload()
    assert payload["changes"] == [{"path": "src/new.ts", "kind": "moved", "from": "old/place.js"}]
    parsed = changes_from_payload(payload)
    assert parsed == [Change("src/new.ts", "moved", "old/place.js")]
    assert matching_paths(lambda p: matches("old/**", p), parsed) == ["src/new.ts"]
    assert matching_paths(lambda p: matches("src/**/*.ts", p), parsed) == ["src/new.ts"]
    assert matching_paths(lambda p: matches("docs/**", p), parsed) == []


def test_plan_defaults_to_the_whole_project_and_drops_nested_paths() -> None:
    assert plan_from_config({}).paths == ["."]
    plan = plan_from_config({"paths": ["src/", "./src/lib", "test", "src"], "debounce_ms": 250})
    assert plan.paths == ["src", "test"]
    assert plan.debounce_seconds == 0.25
    assert plan_from_config({"paths": [".", "src"]}).paths == ["."]


def test_plan_entries_apply_their_own_filters() -> None:
    plan = plan_from_config({"paths": [{"path": "src", "events": ["create", "modify"], "extensions": ["ts", ".tsx"],
                                        "ignore": ["*.gen.ts"]}]})
    entry = plan.entries[0]
    assert entry.admits("src/a.ts", "modified")
    assert entry.admits("src/b.tsx", "created")
    assert not entry.admits("src/a.ts", "deleted")
    assert not entry.admits("src/a.js", "modified")
    assert not entry.admits("src/api.gen.ts", "modified")


def test_the_plan_admits_what_neither_watch_ignore_nor_the_entry_filters_out() -> None:
    plan = plan_from_config({"ignore": ["*.log"], "paths": [{"path": "src", "extensions": [".ts"]}]})
    entry = plan.entries[0]
    assert plan.admits(entry, "src/a.ts", "created")
    assert not plan.admits(entry, "src/a.log", "created")  # watch.ignore
    assert not plan.admits(entry, "src/a.js", "created")  # the entry's extensions


def test_the_daemons_own_directory_is_always_ignored() -> None:
    plan = plan_from_config({"ignore": ["node_modules/", "*.log"]})
    assert plan.ignore.ignores(".aiwg/daemon/daemon.log")
    assert plan.ignore.ignores(".aiwg/daemon/tasks.db")
    assert plan.ignore.ignores_dir(".aiwg/daemon")
    assert plan.ignore.ignores_dir("pkg/node_modules")
    assert plan.ignore.ignores("build/out.log")
    assert not plan.ignore.ignores(".aiwg/daemon.json")
    assert not plan.ignore.ignores("src/app.ts")


@pytest.mark.parametrize("path", ["../elsewhere", "/etc", "src/../../x"])
def test_paths_outside_the_project_are_refused(path: str) -> None:
    assert "outside the project" in (watch_path_problem(path) or "")
