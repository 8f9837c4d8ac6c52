# tests: tests/test_cli.py
"""The `aiwg` command.

No client command imports Twisted, and `aiwg daemon ping` — what scripts and
health checks run, often every few seconds — does not even import click: it
is recognised here and answered with the stdlib client. Nor do the plain forms
of the everyday commands (fast.py). Everything else goes to the click
application in aiwg.cli.app.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    from aiwg.cli import ping

    request = ping.parse_fast(args)
    if request is not None:
        sys.exit(ping.run(**request))
    if os.environ.get("AIWG_CLI_FAST", "1") != "0":
        from aiwg.cli import fast

        plain = fast.parse(args)
        if plain is not None:
            status = fast.run(plain)
            if status is not None:
                sys.exit(status)
    from aiwg.cli import app

    app.run(args)
