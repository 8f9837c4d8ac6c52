# tests: tests/core/test_config.py, tests/e2e/test_jsonrpc_socket.py
"""JSON as the RFC has it: no NaN, no Infinity, no number too large for a float.

Python's json module accepts all three by default; the config file and the
IPC socket both refuse them with these hooks.
"""

from __future__ import annotations

import json
from typing import Any


class NotJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise NotJson(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise NotJson(f"the number {text} is out of range")
    return value


#: Keyword arguments for json.loads / json.JSONDecoder.
HOOKS: dict[str, Any] = {"parse_constant": _no_constant, "parse_float": _finite}

decoder = json.JSONDecoder(**HOOKS)
