"""Text that can always be written as UTF-8: lone surrogates found, escaped, shown."""

from __future__ import annotations

from aiwg.core.text import display_path, lone_surrogate, utf8_safe


def test_lone_surrogates_are_found_and_pairs_are_not() -> None:
    assert lone_surrogate("plain ascii") is None
    assert lone_surrogate("émoji 😀") is None  # a pair from JSON decodes to one character
    assert lone_surrogate("x\ud800y\udc80") == "\ud800"
    assert lone_surrogate("bad\udcffname") == "\udcff"


def test_utf8_safe_escapes_only_what_cannot_be_encoded() -> None:
    assert utf8_safe("é ok") == "é ok"
    assert utf8_safe("a\ud800b é") == "a\\ud800b é"
    assert utf8_safe("a\ud800b").encode("utf-8") == b"a\\ud800b"


def test_display_path_shows_the_bytes_of_a_name_that_is_not_utf8() -> None:
    name = b"src/bad\xff\xfename-\xc3\xa9.txt".decode("utf-8", "surrogateescape")
    assert display_path(name) == "src/bad\\xff\\xfename-é.txt"
    assert display_path("src/é.txt") == "src/é.txt"
    assert display_path("src/\ud800.txt") == "src/\\ud800.txt"  # no file name decodes to this
