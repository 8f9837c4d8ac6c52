"""TreeWatch and the probe with the real watchdog on a temporary tree: ignored trees
get no kernel watch, directories that appear under a flat watch are followed, and a
probe tells a working observer from one whose events never arrive."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from aiwg import procfs
from aiwg.daemon.watch.observers import TreeWatch, native_observer, probe
from tests.fakes.observers import deaf_to_flat_watches

linux_only = pytest.mark.skipif(not Path("/proc/self/fdinfo").exists(), reason="needs Linux inotify and /proc")


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def dispatch(self, event: Any) -> None:
        if event.is_directory:
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        with self.lock:
            self.events.append((event.event_type, os.fsdecode(path)))

    def saw(self, kind: str, path: Path) -> bool:
        with self.lock:
            return (kind, str(path)) in self.events


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def ignore_node_modules(path: str) -> bool:
    return os.path.basename(path) == "node_modules"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for i in range(5):
        (tmp_path / "src" / f"pkg{i}").mkdir(parents=True)
        (tmp_path / "node_modules" / f"dep{i}" / "lib").mkdir(parents=True)
    return tmp_path


def watching(project: Path, tree: TreeWatch) -> tuple[TreeWatch, Recorder]:
    """`tree` watching the project (node_modules left out), started, and what it reports."""
    recorder = Recorder()
    tree.add(str(project), recorder, ignore_node_modules)
    tree.observer.start()
    return tree, recorder


@pytest.fixture
def started() -> Any:
    trees: list[TreeWatch] = []

    def start(prunes: bool = True, observer: Any = None) -> TreeWatch:
        tree = TreeWatch(observer or native_observer(), prunes=prunes)
        trees.append(tree)
        return tree

    yield start
    for tree in trees:
        tree.observer.stop()
        tree.observer.join(timeout=10)


@linux_only
def test_ignored_trees_get_no_kernel_watch_and_their_siblings_report(project: Path, started: Any) -> None:
    before = procfs.inotify_watch_count() or 0
    tree, recorder = watching(project, started())
    # the root (its own entries) and src with its five packages: nothing of node_modules' 15
    assert (procfs.inotify_watch_count() or 0) - before == 7
    assert tree.watch_count == 2
    (project / "src" / "pkg2" / "a.ts").write_text("x")
    (project / "node_modules" / "dep2" / "b.js").write_text("x")
    (project / "top.txt").write_text("x")
    wait_for(lambda: recorder.saw("created", project / "src" / "pkg2" / "a.ts"))
    wait_for(lambda: recorder.saw("created", project / "top.txt"))
    time.sleep(0.2)
    assert not any("node_modules" in path for _, path in recorder.events)


@linux_only
def test_a_directory_made_under_a_flat_watch_is_followed_with_what_it_already_holds(
        project: Path, started: Any) -> None:
    tree, recorder = watching(project, started())
    deep = project / "lib" / "a" / "b"
    deep.mkdir(parents=True)  # `mkdir -p`: b may exist before lib's watch does
    (deep / "early.py").write_text("x")
    wait_for(lambda: recorder.saw("created", deep / "early.py"))
    wait_for(lambda: str(project / "lib") in tree._watches)
    (deep / "later.py").write_text("x")
    wait_for(lambda: recorder.saw("created", deep / "later.py"))
    # A new ignored tree under a flat watch is left out like the first one.
    (project / "node_modules" / "fresh" / "x").mkdir(parents=True)
    (project / "web" / "node_modules" / "y").mkdir(parents=True)
    (project / "web" / "app.ts").write_text("x")
    wait_for(lambda: recorder.saw("created", project / "web" / "app.ts"))
    assert not any("node_modules" in path for path in tree._watches)


@linux_only
def test_a_directory_moved_or_deleted_under_a_flat_watch_takes_its_watches_with_it(
        project: Path, started: Any) -> None:
    tree, recorder = watching(project, started())
    (project / "src" / "pkg1" / "m.ts").write_text("x")
    wait_for(lambda: recorder.saw("created", project / "src" / "pkg1" / "m.ts"))
    os.rename(project / "src", project / "source")
    wait_for(lambda: str(project / "source") in tree._watches and str(project / "src") not in tree._watches)
    wait_for(lambda: recorder.saw("created", project / "source" / "pkg1" / "m.ts"))
    (project / "source" / "pkg1" / "n.ts").write_text("x")
    wait_for(lambda: recorder.saw("created", project / "source" / "pkg1" / "n.ts"))
    shutil.rmtree(project / "source")
    wait_for(lambda: str(project / "source") not in tree._watches)
    assert tree.watch_count == 1  # the root alone


@linux_only
def test_the_stock_arrangement_is_one_recursive_watch(project: Path, started: Any) -> None:
    before = procfs.inotify_watch_count() or 0
    tree = started(prunes=False)
    tree.add(str(project), Recorder(), ignore_node_modules)
    tree.observer.start()
    assert tree.watch_count == 1
    assert (procfs.inotify_watch_count() or 0) - before == 18  # all 18 directories, node_modules included


@linux_only
@pytest.mark.parametrize("prunes", [True, False], ids=["pruned", "stock"])
def test_the_probe_passes_on_a_working_observer_and_leaves_nothing(tmp_path: Path, started: Any,
                                                                   prunes: bool) -> None:
    tree = started(prunes=prunes)
    tree.observer.start()
    before = procfs.inotify_watch_count() or 0
    assert probe(tree, str(tmp_path / "probe"), timeout=5) is None
    assert not (tmp_path / "probe").exists()
    assert tree.watch_count == 0
    wait_for(lambda: (procfs.inotify_watch_count() or 0) <= before)


@linux_only
def test_the_probe_names_what_did_not_arrive(tmp_path: Path, started: Any) -> None:
    tree = started(observer=deaf_to_flat_watches())
    tree.observer.start()
    cause = probe(tree, str(tmp_path / "probe"), timeout=1)
    assert cause is not None and "a file in a flat-watched directory" in cause
    assert "recursively watched" not in cause


@linux_only
def test_a_directory_deleted_and_made_again_keeps_its_watch(project: Path, started: Any) -> None:
    """`rm -rf gen && mkdir -p gen/x`: the old watch's own delete may come after the
    new watch; it must not take the new one away."""
    tree, recorder = watching(project, started())
    gen = project / "gen"
    for round_ in range(15):
        (gen / "x").mkdir(parents=True)
        (gen / "x" / f"f{round_}").write_text("x")
        wait_for(lambda: str(gen) in tree._watches)
        shutil.rmtree(gen)
    (gen / "x").mkdir(parents=True)
    wait_for(lambda: str(gen) in tree._watches)
    time.sleep(0.3)  # any late delete of an old watch arrives
    assert str(gen) in tree._watches
    (gen / "x" / "last.txt").write_text("x")
    wait_for(lambda: recorder.saw("created", gen / "x" / "last.txt"))


@linux_only
def test_a_handler_that_fails_does_not_end_the_dispatch_thread(project: Path, started: Any) -> None:
    tree = started()
    seen: list[str] = []

    class Fussy:
        def dispatch(self, event: Any) -> None:
            if event.is_directory:
                return
            seen.append(os.fsdecode(event.src_path))
            if len(seen) == 1:
                raise RuntimeError("a bug in a handler")

    tree.add(str(project), Fussy(), ignore_node_modules)
    tree.observer.start()
    (project / "src" / "one.ts").write_text("x")
    wait_for(lambda: len(seen) >= 1)
    (project / "src" / "two.ts").write_text("x")
    wait_for(lambda: str(project / "src" / "two.ts") in seen)
