"""The timestamp format of every file and of the wire."""

from aiwg.core.timefmt import iso_utc


def test_milliseconds_and_utc() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(1764964488.1239) == "2025-12-05T19:54:48.123Z"
    assert iso_utc(1764964488.1239) == "2025-12-05T19:54:48.123Z"  # the cached path says the same
    assert iso_utc(1764964489.5) == "2025-12-05T19:54:49.500Z"
