# tests: tests/daemon/test_ipc_protocol.py
"""Declaring and dispatching JSON-RPC methods on top of txjsonrpc-ng.

txjsonrpc-ng gives the method model: `jsonrpc_<name>` methods on handler
objects, with dotted names routed through sub-handlers (`daemon.status` is
`jsonrpc_status` on the `daemon` sub-handler). What it lacks, and this module
adds: declared parameters, checked before the call so that -32602 names the
parameter at fault; the -32601 message AIWG clients expect; `rpc.discover`
built from the declarations; a per-name cache so dispatch costs one dict hit.
"""

from __future__ import annotations

from typing import Any, Callable

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.python import reflect
from txjsonrpc_ng.jsonrpc import BaseSubhandler

from aiwg.core.text import lone_surrogate
from aiwg.errors import METHOD_NOT_FOUND, InvalidParams, RpcError

_NO_DEFAULT = object()
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: How deep an object or array parameter may nest. Such values are stored, logged
#: and re-encoded later, on deeper stacks: far below Python's recursion limit, so
#: that no later step can fail where the request itself was accepted.
MAX_NESTING = 64

_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
    "string[]": "an array of strings",
}


@frozen
class Param:
    """One declared parameter of an RPC method."""

    name: str
    type: str
    required: bool = False
    default: Any = None
    description: str = ""
    non_empty: bool = False
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None

    def check(self, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        if not _is_type(value, self.type):
            raise InvalidParams(
                f"Invalid parameter '{self.name}': must be {_TYPE_WORDS[self.type]}, "
                f"got {_show(value)}"
            )
        if self.non_empty and (not value or (self.type == "string" and not value.strip())):
            raise InvalidParams(f"Invalid parameter '{self.name}': must not be empty")
        if self.type == "string":
            if "\x00" in value:
                raise InvalidParams(f"Invalid parameter '{self.name}': must not contain NUL characters")
            _check_text(value, self.name)
        elif self.type == "string[]":
            for item in value:
                _check_text(item, self.name)
        elif self.type in ("object", "array"):
            _check_nested(value, self.name)
        if self.type == "integer" and not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidParams(f"Invalid parameter '{self.name}': out of range (64-bit integer), got {value}")
        if self.type == "number" and (value != value or value in (float("inf"), float("-inf"))):
            raise InvalidParams(f"Invalid parameter '{self.name}': must be a finite number")
        if self.minimum is not None and value < self.minimum:
            raise InvalidParams(
                f"Invalid parameter '{self.name}': must be ≥ {self.minimum:g}, got {value}"
            )
        if self.maximum is not None and value > self.maximum:
            raise InvalidParams(
                f"Invalid parameter '{self.name}': must be ≤ {self.maximum:g}, got {value}"
            )
        return value

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if not self.required and self.default is not None:
            out["default"] = self.default
        if self.description:
            out["description"] = self.description
        return out


@frozen
class CallContext:
    """What a handler may know about its caller: the connection, for subscriptions."""

    connection: Any = None


def method(*params: Param, description: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a `jsonrpc_*` handler's parameters and one-line description."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func.rpc_params = params  # type: ignore[attr-defined]
        func.rpc_description = description  # type: ignore[attr-defined]
        return func

    return decorate


class Namespace(BaseSubhandler):
    """A group of methods sharing a prefix (`daemon.`, `task.`)."""

    def __init__(self) -> None:
        BaseSubhandler.__init__(self)


class MethodTable(Namespace):
    """The root handler: resolves names, binds params, calls, lists methods."""

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[str, tuple[Callable[..., Any], tuple[Param, ...]]] = {}

    def add(self, prefix: str, namespace: Namespace) -> None:
        self.putSubHandler(prefix, namespace)
        self._cache.clear()

    def resolve(self, name: str) -> tuple[Callable[..., Any], tuple[Param, ...]]:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        not_found = RpcError(METHOD_NOT_FOUND, f"Method not found: {name}")
        if not name or name.startswith(".") or "__" in name or name != name.strip():
            raise not_found
        func = self._lookup(name)
        params = getattr(func, "rpc_params", None)
        if params is None:  # not declared with @method: not published
            raise not_found
        self._cache[name] = (func, params)
        return func, params

    def _lookup(self, name: str) -> Any:
        """`a.b.c` → the `jsonrpc_c` method of sub-handler `b` of sub-handler `a`,
        through txjsonrpc-ng's public sub-handler API (its own lookup is private)."""
        *prefixes, last = name.split(self.separator)
        handler: Any = self
        for prefix in prefixes:
            handler = handler.getSubHandler(prefix)
            if handler is None:
                return None
        func = getattr(handler, f"jsonrpc_{last}", None)
        return func if callable(func) else None

    def call(self, name: str, params: Any, context: CallContext) -> Any:
        """Run a method: its result, or a Deferred of it. Raises RpcError."""
        func, declared = self.resolve(name)
        if declared or params:
            result = func(context, **bind(declared, params))
        else:
            result = func(context)
        if type(result) is dict or type(result) is list:  # the common, synchronous case
            return result
        if hasattr(result, "__await__") and not isinstance(result, Deferred):
            result = Deferred.fromCoroutine(result)
        return result

    def discover(self) -> list[dict[str, Any]]:
        """Every published method with its parameters, sorted by name."""
        found: list[dict[str, Any]] = []
        todo: list[tuple[BaseSubhandler, str]] = [(self, "")]
        while todo:
            handler, prefix = todo.pop()
            for short in reflect.prefixedMethodNames(type(handler), "jsonrpc_"):
                func = getattr(handler, f"jsonrpc_{short}")
                if not hasattr(func, "rpc_params"):
                    continue
                found.append(
                    {
                        "name": prefix + short,
                        "description": func.rpc_description,
                        "params": [p.describe() for p in func.rpc_params],
                    }
                )
            for sub in handler.getSubHandlerPrefixes():
                todo.append((handler.getSubHandler(sub), f"{prefix}{sub}."))
        return sorted(found, key=lambda m: m["name"])


def bind(declared: tuple[Param, ...], params: Any) -> dict[str, Any]:
    """Match JSON-RPC params (by name or by position) to declared parameters."""
    if params is None:
        given: dict[str, Any] = {}
    elif isinstance(params, list):
        if len(params) > len(declared):
            raise InvalidParams(
                f"Invalid params: expected at most {len(declared)} positional "
                f"parameter(s), got {len(params)}"
            )
        given = {p.name: v for p, v in zip(declared, params)}
    else:
        given = params
        names = {p.name for p in declared}
        for key in given:
            if key not in names:
                accepted = ", ".join(sorted(names)) or "none"
                raise InvalidParams(
                    f"Unknown parameter '{key}' (accepted: {accepted})"
                )
    bound: dict[str, Any] = {}
    for param in declared:
        if param.name in given:
            value = given[param.name]
            if param.required and (value is None or (param.non_empty and value == "")):
                raise InvalidParams(f"Missing required parameter: {param.name}")
            bound[param.name] = param.check(value)
        elif param.required:
            raise InvalidParams(f"Missing required parameter: {param.name}")
        else:
            bound[param.name] = param.default
    return bound


def _is_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string[]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    raise ValueError(f"unknown param type {kind}")


def _check_text(value: str, name: str) -> None:
    """A JSON string may hold an escaped lone surrogate (\\ud800), which is not
    Unicode text: nothing can store, log or pass it on as UTF-8."""
    bad = lone_surrogate(value)
    if bad is not None:
        raise InvalidParams(f"Invalid parameter '{name}': contains a lone UTF-16 surrogate "
                            f"(\\u{ord(bad):04x}), which is not valid Unicode text")


def _check_nested(value: Any, name: str) -> None:
    """Every string (keys too) is text, and nothing nests deeper than MAX_NESTING."""
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if depth > MAX_NESTING and type(item) in (dict, list):
            raise InvalidParams(f"Invalid parameter '{name}': nested deeper than {MAX_NESTING} levels")
        if type(item) is dict:
            for key, child in item.items():
                _check_text(key, name)
                todo.append((child, depth + 1))
        elif type(item) is list:
            todo.extend((child, depth + 1) for child in item)
        elif type(item) is str:
            _check_text(item, name)


def _show(value: Any) -> str:
    import json

    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
