"""Glob matching for rule patterns and ignore entries: a table of cases."""

from __future__ import annotations

import pytest

from aiwg.core.globs import GlobError, IgnoreSet, compile_glob, expand_braces, glob_problem, matches

CASES = [
    ("src/**/*.ts", "src/a.ts", True),
    ("src/**/*.ts", "src/deep/er/a.ts", True),
    ("src/**/*.ts", "src/a.js", False),
    ("src/**/*.ts", "lib/src/a.ts", False),
    ("src/**/*.ts", "src/a.tsx", False),
    ("src/**/*.{ts,js}", "src/x/a.js", True),
    ("src/**/*.{ts,js}", "src/x/a.ts", True),
    ("src/**/*.{ts,js}", "src/x/a.py", False),
    ("**/.env*", ".env", True),
    ("**/.env*", "config/.env.local", True),
    ("**/.env*", "config/env", False),
    ("*.md", "README.md", True),
    ("*.md", "docs/README.md", False),
    ("**/*.md", "docs/README.md", True),
    ("**/*.md", "README.md", True),
    ("src/*", "src/.hidden", True),  # dotfiles are matched like any name
    ("src/**/*.ts", "src/.cache/a.ts", True),
    ("src/?.ts", "src/a.ts", True),
    ("src/?.ts", "src/ab.ts", False),
    ("src/[ab].ts", "src/b.ts", True),
    ("src/[!ab].ts", "src/c.ts", True),
    ("src/[!ab].ts", "src/a.ts", False),
    ("{src,test}/**/*.py", "test/unit/t.py", True),
    ("{src,test}/**/*.py", "docs/t.py", False),
    ("a{b,c{d,e}}f", "acef", True),
    ("**", "any/path/at/all", True),
    ("src/**", "src/a/b", True),
    ("file with space.txt", "file with space.txt", True),
    ("a+b(c).txt", "a+b(c).txt", True),
]


@pytest.mark.parametrize("pattern, path, expected", CASES, ids=[f"{p} ~ {q}" for p, q, _ in CASES])
def test_glob_table(pattern: str, path: str, expected: bool) -> None:
    assert matches(pattern, path) is expected


@pytest.mark.parametrize("bad", ["src/{a,b", "src/a,b}", "src/[ab", "src/a**b/c", "", "   "])
def test_bad_globs_are_named(bad: str) -> None:
    assert glob_problem(bad) is not None
    with pytest.raises(GlobError):
        compile_glob(bad)


def test_brace_expansion() -> None:
    assert expand_braces("x.{a,b}") == ["x.a", "x.b"]
    assert expand_braces("{a,b}{1,2}") == ["a1", "a2", "b1", "b2"]
    assert expand_braces("plain") == ["plain"]


IGNORE = IgnoreSet(["node_modules/", ".git/", "*.log", "build/*.map", "docs/api/"])


@pytest.mark.parametrize(
    "path, ignored",
    [
        ("node_modules/x/index.js", True),
        ("web/node_modules/x.js", True),
        ("node_modules", False),  # the directory entry itself is a name, not a path below it
        (".git/HEAD", True),
        ("src/app.log", True),
        ("app.log", True),
        ("src/app.ts", False),
        ("build/a.map", True),
        ("x/build/a.map", False),  # anchored at the root
        ("docs/api/index.html", True),
        ("docs/guide.md", False),
        (".aiwg/daemon/daemon.log", True),  # the daemon's own files never count
        (".aiwg/daemon.json", False),
        (".github/workflows/ci.yml", False),  # .git/ is not a prefix match of .github
    ],
)
def test_ignore_entries(path: str, ignored: bool) -> None:
    assert IGNORE.ignores(path) is ignored


def test_ignored_directories_are_not_watched() -> None:
    assert IGNORE.ignores_dir("node_modules")
    assert IGNORE.ignores_dir("web/node_modules/pkg")
    assert IGNORE.ignores_dir(".aiwg/daemon")
    assert IGNORE.ignores_dir("docs/api")
    assert not IGNORE.ignores_dir("src")
    assert not IGNORE.ignores_dir("docs")
