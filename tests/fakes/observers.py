"""Observers that fail the way a watchdog release can: for the watcher's fallback tests."""

from __future__ import annotations

from typing import Any


def deaf_to_flat_watches() -> Any:
    """A native observer whose watches of a directory's own entries are added in
    the kernel but whose events reach nobody: how watchdog 7.1.1 broke the
    watcher's earlier design (watches added, never routed)."""
    from watchdog.observers import Observer

    class Nobody:
        def dispatch(self, event: Any) -> None:
            pass

    class Deaf(Observer):  # type: ignore[misc, valid-type]
        def schedule(self, handler: Any, path: Any, *, recursive: bool = False, **kwargs: Any) -> Any:
            return super().schedule(handler if recursive else Nobody(), path, recursive=recursive, **kwargs)

    return Deaf()
