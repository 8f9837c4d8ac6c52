# tests: tests/core/test_globs.py
r"""Glob patterns for rules and ignore entries, matched against project-relative paths.

Rule patterns (`src/**/*.{ts,js}`, `**/.env*`):
- `**` is any number of whole path segments, none included (`src/**/x` matches `src/x`);
- `*` and `?` match within one segment; `[abc]` / `[!abc]` are character classes;
- `{a,b}` are alternatives, which may contain globs and nest;
- names starting with a dot are matched like any other (unlike a shell);
- `\` makes the next character literal (`src/\*.ts` is a file named `*.ts`), and no
  `*`, `?` or class ever matches the `/` between segments.

Ignore entries (`watch.ignore`) have exactly `.gitignore`'s meaning (see IgnoreSet).
"""

from __future__ import annotations

import re
from functools import lru_cache

import pathspec


class GlobError(ValueError):
    pass


def expand_braces(pattern: str) -> list[str]:
    """`a{b,c{d,e}}f` → `abf`, `acdf`, `acef`. Unbalanced braces are an error."""
    depth = 0
    start = -1
    escaped = False
    for index, char in enumerate(pattern):
        if escaped or char == "\\":  # `\{`, `\}`, `\,` are themselves
            escaped = not escaped
            continue
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
    escaped = False
    for char in text:
        if escaped or char == "\\":
            escaped = not escaped
            current += char
            continue
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
        if char == "\\" and index + 1 < len(segment):  # `\*`: a literal star
            out += re.escape(segment[index + 1])
            index += 2
            continue
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
            # A class never matches the separator, whatever its range (`[.-0]` spans '/').
            out += f"[^/{body}]" if negate else f"(?!/)[{body}]"
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
    """`watch.ignore` entries, read exactly as git reads a .gitignore (through
    pathspec): `name/` a directory at any depth, a pattern with a slash anchored at
    the project root, `!pattern` taking a path back, `\\` escaping, the last
    matching entry deciding; and, as in git, nothing inside an ignored directory can
    be taken back. The daemon's own directory comes last, so that no entry can."""

    ALWAYS = (".aiwg/daemon/", ".aiwg/worktrees/")  # the daemon's own files; tasks' worktrees

    def __init__(self, entries: list[str] | tuple[str, ...]) -> None:
        for entry in entries:
            if not entry.strip().strip("/").lstrip("!"):
                raise GlobError(f"empty ignore entry {entry!r}")
        try:
            self._spec = pathspec.GitIgnoreSpec.from_lines([*entries, *self.ALWAYS])
        except (ValueError, TypeError) as exc:  # pathspec's GitWildMatchPatternError is a ValueError
            raise GlobError(str(exc)) from None
        self._dirs: dict[str, bool] = {}  # directory → ignored, as asked so far

    def ignores(self, path: str) -> bool:
        """Is this project-relative file (or directory) path ignored?"""
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts:
            return False
        if self.ignores_dir("/".join(parts[:-1])):
            return True
        full = "/".join(parts)
        return self._spec.match_file(full) or (path.endswith("/") and self._spec.match_file(full + "/"))

    def ignores_dir(self, path: str) -> bool:
        """Is this directory ignored with everything under it (so it need not be watched)?"""
        parts = [p for p in path.strip("/").split("/") if p]
        for index in range(1, len(parts) + 1):
            prefix = "/".join(parts[:index])
            known = self._dirs.get(prefix)
            if known is None:
                if len(self._dirs) > 50_000:
                    self._dirs.clear()
                known = self._dirs[prefix] = self._spec.match_file(prefix + "/")
            if known:
                return True
        return False
