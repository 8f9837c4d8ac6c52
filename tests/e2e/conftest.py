"""Fixtures the end-to-end modules share."""

from tests.fakes.messaging_project import telegram

__all__ = ["telegram"]  # a fixture: pytest finds it in this conftest
