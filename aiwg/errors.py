# tests: tests/test_client.py, tests/daemon/test_ipc_protocol.py
"""The one list of error codes: JSON-RPC's, ours, and the CLI's exit statuses.

Exceptions carry a code and a message written for people; the daemon turns
them into JSON-RPC error objects and the CLI into exit statuses. Stdlib only.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the CLI start-up time
    from typing import Any

# JSON-RPC 2.0 reserved codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# Application codes (-32000..-32099 is the implementation-defined server range).
# -32000..-32003 are reserved with the meanings AIWG's protocol design gave them;
# unknown task ids are reported as -32602 (invalid params), as AIWG's daemon does.
TASK_NOT_FOUND = -32000
NOT_CANCELLABLE = -32001
QUEUE_FULL = -32002
SUBSYSTEM_UNAVAILABLE = -32003
CONFIG_INVALID = -32010
SHUTTING_DOWN = -32011
STORE_UNWRITABLE = -32012  # the task store could not be written (a full disk, a read-only file system)
BRANCH_REFUSED = -32013  # an isolated task's branch cannot be merged, diffed or discarded (the message says why)


# CLI exit statuses (LSB init-script conventions where they apply).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_STATUS_NOT_RUNNING = 3  # `status` only, as LSB says
EXIT_STATUS_UNKNOWN = 4
EXIT_NOT_CONFIGURED = 6
EXIT_NOT_RUNNING = 7


class AiwgError(Exception):
    """Base of our errors: a message for people plus an exit status."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class RpcError(AiwgError):
    """A JSON-RPC error: raised by method handlers, and by clients on error replies."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        """What the CLI exits with for this error: 6 when the daemon's configuration
        is what stands in the way (an invalid file, a subsystem it leaves off)."""
        return EXIT_NOT_CONFIGURED if self.code in (CONFIG_INVALID, SUBSYSTEM_UNAVAILABLE) else EXIT_FAILURE

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    def __repr__(self) -> str:
        return f"RpcError({self.code}, {self.message!r})"


class InvalidParams(RpcError):
    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(INVALID_PARAMS, message, data)


class DaemonNotRunning(AiwgError):
    exit_code = EXIT_NOT_RUNNING


class RequestTimeout(AiwgError):
    pass


class ConnectionClosed(AiwgError):
    pass


class ConfigError(AiwgError):
    """The configuration is unusable; `problems` names each key path and what is wrong."""

    exit_code = EXIT_NOT_CONFIGURED

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration in {source}:\n{lines}")


class AlreadyRunning(AiwgError):
    """Another daemon holds this project's lock."""

    exit_code = EXIT_OK

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        super().__init__(f"already running (pid {pid if pid else 'unknown'})")
