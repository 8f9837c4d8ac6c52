# tests: tests/test_compat.py
"""Every private name of a dependency (Twisted, CPython) the project uses, in one place.

Each hook buys something measured (docs/compatibility.md has the table). None is
trusted because a name exists: each is proved by behaviour the first time it is
needed (`Hook.works`), and a hook whose behaviour check fails, or that an operator
turns off with AIWG_COMPAT_DISABLE=name[,name], is replaced by the public API it
stands in for: slower, never broken. `degraded()` lists the hooks not in use, with
the reason and the installed version, for `daemon status`.

Nothing here imports Twisted at module level: the CLI's fast paths import this.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable

#: Environment variable: hooks to leave unused (comma-separated names), e.g. when a
#: new release breaks one in a way its check does not see.
DISABLE_ENV = "AIWG_COMPAT_DISABLE"


def installed(distribution: str) -> str:
    if distribution == "python":
        import platform

        return platform.python_version()
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


class HookBroken(Exception):
    """A hook's behaviour check failed; the message names the hook and the version."""


class Hook:
    """One private name (or a family used together), with the check that proves it."""

    def __init__(self, name: str, distribution: str, names: str, check: Callable[[], None]) -> None:
        self.name = name
        self.distribution = distribution
        self.names = names  # what is used, as written in the dependency's source
        self._check = check
        self._verdict: str | None = None
        self._checked = False

    @property
    def problem(self) -> str | None:
        """None while the hook is usable; else why not (checked once)."""
        if not self._checked:
            self._verdict = self._run_check()
            self._checked = True
        return self._verdict

    def works(self) -> bool:
        if self._checked:  # the common case, on every reply: no property call
            return self._verdict is None
        return self.problem is None

    def _run_check(self) -> str | None:
        disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
        if self.name in disabled:
            return f"{self.name}: turned off by {DISABLE_ENV}"
        try:
            self._check()
        except Exception as exc:  # any way a check can fail means: do not use the hook
            return self.failure(exc)
        return None

    def failure(self, exc: BaseException) -> str:
        return (f"{self.name}: {self.names} of {self.distribution} {installed(self.distribution)} "
                f"no longer behaves as expected ({type(exc).__name__}: {exc}); using the public fallback")

    def reset(self) -> None:
        """Check again on next use (tests, after monkeypatching)."""
        self._checked, self._verdict = False, None


HOOKS: dict[str, Hook] = {}


def hook(name: str, distribution: str, names: str) -> Callable[[Callable[[], None]], Hook]:
    """Register a hook by its behaviour check (a decorator). The module that uses a
    private name declares its hook where it uses it; this module only keeps the
    registry, and the hooks that need nothing of the project's own code."""

    def register(check: Callable[[], None]) -> Hook:
        hook = Hook(name, distribution, names, check)
        HOOKS[name] = hook
        return hook

    return register


def degraded() -> list[str]:
    """The hooks checked so far that are not in use, with why."""
    return [hook.problem for hook in HOOKS.values() if hook._checked and hook.problem]


def status() -> dict[str, Any]:
    """Each hook checked so far: "in use", or why its public fallback is used."""
    return {name: (hook.problem or "in use") for name, hook in HOOKS.items() if hook._checked}


#: The hooks the daemon process uses (twistd-runner is the CLI's, checked there;
#: session-spawn is declared in aiwg/daemon/tasks/spawning.py, twistd-runner in launcher.py).
DAEMON_HOOKS = ("c-json-encoder", "transport-queue", "session-spawn")


def check(names: tuple[str, ...] = DAEMON_HOOKS) -> list[str]:
    """Run the checks of `names` now (at start-up, not at the first use); the problems.
    A hook whose module is not loaded is not in use, so there is nothing to check."""
    return [problem for name in names if name in HOOKS and (problem := HOOKS[name].problem)]


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise HookBroken(what)


# -- CPython: the C JSON encoder, built once ---------------------------------------

def _public_dumps() -> Callable[[Any], str]:
    import json

    return json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"),
                            check_circular=False).encode


def _c_dumps() -> Callable[[Any], str]:
    from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]

    def unserialisable(value: Any) -> Any:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    if c_make_encoder is None:
        raise HookBroken("json.encoder.c_make_encoder is None (no C accelerator)")
    encode = c_make_encoder(None, unserialisable, encode_basestring_ascii, None, ":", ",", False, False, False)
    return lambda value: "".join(encode(value, 0))


@hook("c-json-encoder", "python", "json.encoder.c_make_encoder")
def C_JSON_ENCODER() -> None:
    dumps = _c_dumps()
    sample = {"jsonrpc": "2.0", "id": 1, "result": {"a": [1, True, None, "\u00e9\U0001f600", 1.5, -0.0],
                                                     "b": {"c": "\"\\\n"}}}
    wanted = ('{"jsonrpc":"2.0","id":1,"result":{"a":[1,true,null,"\\u00e9\\ud83d\\ude00",1.5,-0.0],'
              '"b":{"c":"\\"\\\\\\n"}}}')
    expect(dumps(sample) == wanted, f"encodes {sample!r} as {dumps(sample)!r}, not {wanted!r}")
    for bad in (float("nan"), {1j: 2}, object()):
        try:
            dumps(bad)
        except (TypeError, ValueError):
            continue
        raise HookBroken(f"encoded {bad!r}, which is not JSON")


def compact_dumps() -> Callable[[Any], str]:
    """Compact, ASCII-only JSON without NaN: the C encoder built once (JSONEncoder.encode
    rebuilds it on every call: about 0.5 µs of a 16 µs round trip), or the public encoder."""
    return _c_dumps() if C_JSON_ENCODER.works() else _public_dumps()


# -- Twisted: how much a socket transport still has to send ------------------------

class NoIOReactor:
    """Enough of a reactor for a FileDescriptor or a Process whose descriptors are
    all given to be made, and nothing else: nothing is registered anywhere (for the
    behaviour checks, which must not touch the real reactor)."""

    def addWriter(self, _: Any) -> None:
        pass

    def removeWriter(self, _: Any) -> None:
        pass

    def addReader(self, _: Any) -> None:
        pass

    def removeReader(self, _: Any) -> None:
        pass


@hook("transport-queue", "twisted", "FileDescriptor._tempDataBuffer and _tempDataLen")
def TRANSPORT_QUEUE() -> None:
    from twisted.internet.abstract import FileDescriptor

    transport = FileDescriptor(reactor=NoIOReactor())
    transport.connected = True  # as a connected socket's transport is
    expect(not transport._tempDataBuffer and transport._tempDataLen == 0 and transport.dataBuffer == b"",
           "a new transport does not start with an empty queue")
    transport.write(b"xy")
    expect(transport._tempDataBuffer == [b"xy"] and transport._tempDataLen == 2,
           f"after write(b'xy'): _tempDataBuffer {transport._tempDataBuffer!r}, _tempDataLen "
           f"{transport._tempDataLen!r}")


def queued_output(transport: Any) -> int | None:
    """Bytes a socket transport holds unsent, or None when that cannot be known."""
    if not TRANSPORT_QUEUE.works():
        return None
    return len(getattr(transport, "dataBuffer", b"")) + getattr(transport, "_tempDataLen", 0)
