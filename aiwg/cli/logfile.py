# tests: tests/e2e/test_lifecycle.py
"""Reading the daemon's log for `aiwg daemon logs`: its last lines, and the lines
that follow, across rotation."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable


def last_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of the file (none if it is missing)."""
    if count == 0:
        return []
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            block = 8192
            data = b""
            position = end
            while position > 0 and data.count(b"\n") <= count:
                step = min(block, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    return text[-count:]


def follow_lines(path: Path, emit: Callable[[str], Any]) -> None:
    """Each line added to the file from now on, for ever; a file that is rotated
    (replaced) is read to its end, then the new one from its start."""
    handle = None
    inode = None
    from_start = not path.exists()  # a log that appears later is read from its first line
    while True:
        if handle is None:
            try:
                handle = open(path, "rb")
                inode = os.fstat(handle.fileno()).st_ino
                if not from_start:
                    handle.seek(0, os.SEEK_END)
            except FileNotFoundError:
                time.sleep(0.25)
                continue
        chunk = handle.readline()
        if chunk:
            emit(chunk.decode("utf-8", "replace").rstrip("\n"))
            continue
        try:
            rotated = os.stat(path).st_ino != inode
        except FileNotFoundError:
            rotated = True
        if rotated:
            rest = handle.read()
            for line in rest.decode("utf-8", "replace").splitlines():
                emit(line)
            handle.close()
            handle = None
            try:
                handle = open(path, "rb")
                inode = os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                handle = None
            continue
        time.sleep(0.2)
