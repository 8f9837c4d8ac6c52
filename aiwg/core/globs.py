# tests: tests/core/test_globs.py
"""Glob patterns for rules and ignore entries, matched against project-relative paths.

Rule patterns (`src/**/*.{ts,js}`, `**/.env*`):
- `**` is any number of whole path segments, none included (`src/**/x` matches `src/x`);
- `*` and `?` match within one segment; `[abc]` / `[!abc]` are character classes;
- `{a,b}` are alternatives, which may contain globs and nest;
- names starting with a dot are matched like any other (unlike a shell).

Ignore entries (`watch.ignore`), gitignore-like:
- `name/` ignores a directory of that name at any depth, and all below it;
- a pattern without a slash (`*.log`, `.DS_Store`) matches a file or directory name at
  any depth; one with a slash (`build/*.map`, `docs/api/`) is anchored at the project root.
"""

from __future__ import annotations

import re
from functools import lru_cache


class GlobError(ValueError):
    pass


def expand_braces(pattern: str) -> list[str]:
    """`a{b,c{d,e}}f` → `abf`, `acdf`, `acef`. Unbalanced braces are an error."""
    depth = 0
    start = -1
    for index, char in enumerate(pattern):
        if char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise GlobError(f"unbalanced '}}' in {pattern!r}")
            if depth == 0:
                inner = pattern[start + 1 : index]
                head, tail = pattern[:start], pattern[index + 1 :]
                options = _split_top_level(inner)
                results: list[str] = []
                for option in options:
                    results.extend(expand_braces(head + option + tail))
                return results
    if depth != 0:
        raise GlobError(f"unbalanced '{{' in {pattern!r}")
    return [pattern]


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        current += char
    parts.append(current)
    return parts


def _segment_regex(segment: str, whole: str) -> str:
    out = ""
    index = 0
    while index < len(segment):
        char = segment[index]
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = segment.find("]", index + 2 if segment[index + 1 : index + 2] in ("!", "^") else index + 1)
            if end == -1:
                raise GlobError(f"unclosed '[' in {whole!r}")
            body = segment[index + 1 : end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            if not body:
                raise GlobError(f"empty character class in {whole!r}")
            body = body.replace("\\", "\\\\").replace("]", "\\]")
            out += f"[{'^/' if negate else ''}{body}]" if negate else f"[{body}]"
            index = end
        else:
            out += re.escape(char)
        index += 1
    return out


def _glob_regex(pattern: str) -> str:
    if pattern.startswith("/"):
        pattern = pattern[1:]
    segments = pattern.split("/")
    parts: list[str] = []
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if segment == "**":
            # Any number of whole segments; swallows the following slash too.
            parts.append("(?:[^/]+/)*" if not last else "(?:[^/]+/)*[^/]+")
            continue
        if "**" in segment:
            raise GlobError(f"'**' must be a whole path segment in {pattern!r}")
        parts.append(_segment_regex(segment, pattern) + ("" if last else "/"))
    return "".join(parts)


@lru_cache(maxsize=512)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """A compiled matcher for a rule pattern; GlobError says what is wrong with it."""
    if not pattern or not pattern.strip():
        raise GlobError("empty pattern")
    alternatives = [_glob_regex(p) for p in expand_braces(pattern)]
    return re.compile("^(?:" + "|".join(alternatives) + ")$")


def glob_problem(pattern: str) -> str | None:
    try:
        compile_glob(pattern)
    except GlobError as exc:
        return str(exc)
    return None


def ignore_problem(entry: str) -> str | None:
    """What is wrong with one `watch.ignore` entry, if anything."""
    try:
        IgnoreSet([entry])
    except GlobError as exc:
        return str(exc)
    return None


def matches(pattern: str, path: str) -> bool:
    """Does the project-relative `path` (with / separators) match `pattern`?"""
    return compile_glob(pattern).match(path.lstrip("/")) is not None


class IgnoreSet:
    """`watch.ignore` entries, plus the daemon's own directory, which never counts."""

    ALWAYS = (".aiwg/daemon/",)

    def __init__(self, entries: list[str] | tuple[str, ...]) -> None:
        self._dir_names: set[str] = set()
        self._anchored_dirs: list[re.Pattern[str]] = []
        self._names: list[re.Pattern[str]] = []
        self._anchored: list[re.Pattern[str]] = []
        for entry in (*entries, *self.ALWAYS):
            self._add(entry)

    def _add(self, entry: str) -> None:
        directory = entry.endswith("/")
        body = entry.strip("/")
        if not body:
            raise GlobError(f"empty ignore entry {entry!r}")
        anchored = "/" in body or entry.startswith("/")
        if directory:
            if anchored:
                self._anchored_dirs.append(compile_glob(body))
            elif not any(c in body for c in "*?[{"):
                self._dir_names.add(body)
            else:
                self._names.append(compile_glob(body))  # a glob of names, applied to dirs too
        elif anchored:
            self._anchored.append(compile_glob(body))
        else:
            self._names.append(compile_glob(body))

    def ignores(self, path: str) -> bool:
        """Is this project-relative file (or directory) path ignored?"""
        parts = [p for p in path.strip("/").split("/") if p]
        for index, name in enumerate(parts):
            if name in self._dir_names and index < len(parts) - 1:
                return True
            prefix = "/".join(parts[: index + 1])
            if index < len(parts) - 1 and any(p.match(prefix) for p in self._anchored_dirs):
                return True
            if any(p.match(name) for p in self._names):
                return True
        full = "/".join(parts)
        return any(p.match(full) for p in self._anchored)

    def ignores_dir(self, path: str) -> bool:
        """Is this directory ignored with everything under it (so it need not be watched)?"""
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts:
            return False
        full = "/".join(parts)
        return (
            any(name in self._dir_names for name in parts)
            or any(p.match("/".join(parts[: i + 1])) for p in self._anchored_dirs for i in range(len(parts)))
            or any(p.match(name) for p in self._names for name in parts)
            or any(p.match(full) for p in self._anchored)
        )
