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


# gitignore's own documented examples (gitignore(5), "PATTERN FORMAT" and "EXAMPLES").
def test_ignore_entries_mean_what_they_mean_in_a_gitignore() -> None:
    ignored = IgnoreSet(["*.log", "!keep.log", "/top.txt", "doc/frotz/", "frotz2/", "**/foo", "abc/**",
                         "a/**/b", "\\#literal", "\\!bang", "cache/", "!cache/keep.txt"]).ignores
    assert ignored("other.log") and ignored("deep/er/other.log")
    assert not ignored("keep.log") and not ignored("deep/keep.log")  # negation takes them back
    assert ignored("top.txt") and not ignored("sub/top.txt")  # a leading slash anchors
    assert ignored("doc/frotz/x") and not ignored("a/doc/frotz/x")  # a middle slash anchors too
    assert ignored("frotz2/x") and ignored("a/frotz2/x")  # a trailing slash alone does not
    assert ignored("foo") and ignored("x/y/foo")
    assert ignored("abc/x") and ignored("abc/x/y") and not ignored("abc")
    assert ignored("a/b") and ignored("a/x/b") and ignored("a/x/y/b")
    assert ignored("#literal") and ignored("!bang")
    # As in git, nothing under an ignored directory can be taken back.
    assert ignored("cache/keep.txt") and ignored("cache/other")
    assert IgnoreSet(["*.log"]).ignores(".aiwg/daemon/daemon.log")
    assert IgnoreSet(["!.aiwg/daemon/"]).ignores(".aiwg/daemon/x")  # the daemon's own: always


def test_a_directory_is_skipped_only_when_it_is_ignored_whole() -> None:
    ignore = IgnoreSet(["node_modules/", "build/*.map", "*.tmp"])
    assert ignore.ignores_dir("node_modules") and ignore.ignores_dir("a/node_modules/b")
    assert not ignore.ignores_dir("build")  # only some files in it
    assert ignore.ignores_dir("x.tmp")  # a directory named like an ignored file: git ignores it whole
    assert not ignore.ignores_dir("src")


def test_rule_classes_never_match_the_separator_and_a_backslash_makes_a_character_literal() -> None:
    assert not matches("a[.-0]b", "a/b") and matches("a[.-0]b", "a.b")
    assert not matches("a[!x]b", "a/b") and matches("a[!x]b", "a-b")
    assert matches("src/\\*.ts", "src/*.ts") and not matches("src/\\*.ts", "src/app.ts")
    assert matches("x\\{y", "x{y") and matches("{a,b\\,c}.md", "b,c.md")
