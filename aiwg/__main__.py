"""`python -m aiwg` is the `aiwg` command."""

from aiwg.cli import main

main()
