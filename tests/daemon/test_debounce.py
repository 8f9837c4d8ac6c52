"""The trailing debouncer, driven by a Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from aiwg.daemon.debounce import Debouncer


def make(wait: float = 5.0, result: Any = None) -> tuple[Debouncer, Clock, list[list[Any]]]:
    clock = Clock()
    calls: list[list[Any]] = []

    def function(batch: list[Any]) -> Any:
        calls.append(batch)
        return result() if callable(result) else result

    return Debouncer(reactor=clock, wait=wait, function=function), clock, calls


def test_a_burst_becomes_one_call_after_the_quiet_period() -> None:
    debouncer, clock, calls = make()
    for i in range(20):
        debouncer.push(f"src/f{i % 5}.ts")
        clock.advance(1)  # each write restarts the quiet period
    assert calls == []
    clock.advance(3.9)
    assert calls == []
    clock.advance(0.1)
    assert calls == [["src/f0.ts", "src/f1.ts", "src/f2.ts", "src/f3.ts", "src/f4.ts"]]
    clock.advance(100)
    assert len(calls) == 1 and clock.getDelayedCalls() == []


def test_separate_bursts_give_separate_calls() -> None:
    debouncer, clock, calls = make(wait=2)
    debouncer.push("a")
    clock.advance(2)
    debouncer.push("b")
    clock.advance(2)
    assert calls == [["a"], ["b"]]


def test_items_arriving_during_a_slow_call_wait_for_it() -> None:
    pending: list[Deferred] = []

    def slow() -> Deferred:
        d: Deferred = Deferred()
        pending.append(d)
        return d

    debouncer, clock, calls = make(wait=1, result=slow)
    debouncer.push("a")
    clock.advance(1)
    debouncer.push("b")
    debouncer.push("c")
    clock.advance(10)
    assert calls == [["a"]]  # never concurrent
    pending[0].callback(None)
    clock.advance(1)
    assert calls == [["a"], ["b", "c"]]


def test_a_failing_call_is_logged_and_the_debouncer_keeps_working() -> None:
    def boom() -> None:
        raise RuntimeError("rule action failed")

    debouncer, clock, calls = make(wait=1, result=boom)
    debouncer.push("a")
    clock.advance(1)
    debouncer.push("b")
    clock.advance(1)
    assert calls == [["a"], ["b"]]


def test_stop_cancels_the_timer_and_drops_pending_items() -> None:
    debouncer, clock, calls = make()
    debouncer.push("a")
    d = debouncer.stop()
    assert d.called and clock.getDelayedCalls() == []
    clock.advance(10)
    assert calls == []


def test_keys_deduplicate() -> None:
    debouncer, clock, calls = make(wait=1)
    debouncer.push({"path": "a", "kind": "created"}, key="a")
    debouncer.push({"path": "a", "kind": "modified"}, key="a")
    clock.advance(1)
    assert calls == [[{"path": "a", "kind": "modified"}]]
