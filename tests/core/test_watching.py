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
    snapshot_diff,
    watch_cover,
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


# -- watch_cover ------------------------------------------------------------------

def cover_of(tree: dict[str, list[str]], ignored: set[str]) -> list[tuple[str, bool]]:
    def subdirs(path: str) -> list[str]:
        return [f"{path}/{name}" for name in tree.get(path, [])]

    return sorted(watch_cover("/p", subdirs, lambda path: path.rsplit("/", 1)[-1] in ignored))


def test_a_tree_with_nothing_ignored_is_one_recursive_watch() -> None:
    tree = {"/p": ["src", "docs"], "/p/src": ["a", "b"]}
    assert cover_of(tree, set()) == [("/p", True)]


def test_an_ignored_tree_is_left_out_and_its_siblings_stay_recursive() -> None:
    tree = {"/p": ["src", "node_modules", "docs"], "/p/node_modules": ["dep"], "/p/node_modules/dep": ["lib"],
            "/p/src": ["a"]}
    assert cover_of(tree, {"node_modules"}) == [("/p", False), ("/p/docs", True), ("/p/src", True)]


def test_only_the_spine_above_a_deep_ignored_tree_is_watched_flat() -> None:
    tree = {"/p": ["web", "lib"], "/p/web": ["app", "node_modules"], "/p/web/node_modules": ["x"],
            "/p/web/app": ["pages"]}
    assert cover_of(tree, {"node_modules"}) == [("/p", False), ("/p/lib", True), ("/p/web", False),
                                                ("/p/web/app", True)]


def test_an_ignored_leaf_does_not_split_a_recursive_watch() -> None:
    tree = {"/p": ["pkg"], "/p/pkg": ["__pycache__", "sub"], "/p/pkg/sub": ["__pycache__"]}
    assert cover_of(tree, {"__pycache__"}) == [("/p", True)]


def test_an_ignored_leaf_under_a_flat_watch_gets_no_watch() -> None:
    tree = {"/p": ["node_modules", "__pycache__", "src"], "/p/node_modules": ["dep"]}
    assert cover_of(tree, {"node_modules", "__pycache__"}) == [("/p", False), ("/p/src", True)]


def test_an_ignored_top_with_subdirectories_is_still_watched_itself() -> None:
    # The watch path is what the user asked for: ignoring applies below it.
    tree = {"/p": ["a"], "/p/a": ["b"]}
    assert cover_of(tree, {"p"}) == [("/p", True)]


def test_a_deep_tree_needs_no_recursion() -> None:
    tree = {}
    path = "/p"
    for i in range(5000):
        tree[path] = [f"d{i}"]
        path = f"{path}/d{i}"
    tree[path] = ["node_modules"]
    tree[f"{path}/node_modules"] = ["x"]
    cover = cover_of(tree, {"node_modules"})
    assert len(cover) == 5001 and all(not recursive for _, recursive in cover)


# -- snapshot_diff ----------------------------------------------------------------

def test_snapshot_diff_names_each_change_once() -> None:
    before = {"a": (1, 10, 1), "b": (1, 10, 2), "c": (1, 10, 3)}
    after = {"a": (1, 10, 1), "b": (2, 11, 2), "d": (1, 1, 4)}
    assert snapshot_diff(before, after) == [("b", "modified"), ("c", "deleted"), ("d", "created")]


def test_a_file_replaced_by_another_inode_is_modified() -> None:
    assert snapshot_diff({"a": (1, 1, 1)}, {"a": (1, 1, 9)}) == [("a", "modified")]
