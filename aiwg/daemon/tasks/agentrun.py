# tests: tests/daemon/test_supervisor.py, tests/e2e/test_tasks.py
"""One running process of a task (its agent, or a loop's check or agent) and the
protocol that feeds it: the output file with its cap, redaction of secrets (also
across two reads), the task:output stream, the bounded view of stdout the result
is read from, and the signals that stop it. Its supervisor decides; it records.
"""

from __future__ import annotations

import codecs
import os
import signal
from pathlib import Path
from typing import Any

from attrs import evolve
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from aiwg.core import agents
from aiwg.core.outcomes import RunEnd
from aiwg.core.tasks import OUTPUT_TAIL_BYTES, Task

#: Of an agent's stdout, the start and the end are kept in memory to read its
#: result from (claude's JSON result is its last line); the rest is only in the
#: output file. Bounded, so that a flood of output costs no memory.
STDOUT_HEAD_BYTES = 64 * 1024
STDOUT_TAIL_BYTES = 1024 * 1024
#: After a run that streamed more than this, freed memory is handed back to the
#: system (glibc keeps a fragmented heap otherwise, long after a flood of output).
TRIM_AFTER_BYTES = 8 * 1024 * 1024


def trim_heap() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def output_end(path: str | None) -> str:
    """The end of a task's output file (where claude's JSON result is)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - STDOUT_TAIL_BYTES))
            return handle.read(STDOUT_TAIL_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


class Run:
    """One running process of a task — its agent, or a loop's check — with its
    output file, timers and why it is being stopped.

    `kind` is "agent" for a plain task, "loop-agent" or "loop-check" for a phase of
    a loop, whose output is appended to the task's log (it continues across the
    iterations) and copied to the iteration's own file (`copy_to`)."""

    def __init__(self, supervisor: Any, task: Task, secrets: list[str], kind: str = "agent",
                 copy_to: Path | None = None, offset: int = 0) -> None:
        self.supervisor = supervisor
        self.task = task
        self.kind = kind
        self.copy_to = copy_to
        self.copy: Any = None
        self.copied = 0
        self.output: Any = None  # opened at the first byte: a silent agent costs no file
        self.secret_texts = tuple(secrets)
        self.secrets = agents.secret_forms(secrets)
        # A secret split across two reads must still be caught: keep back this many bytes.
        self.holdback = max((len(s) for s in self.secrets), default=1) - 1
        self.carry: dict[int, bytes] = {1: b"", 2: b""}
        self.decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in (1, 2)}
        self.protocol: AgentProcessProtocol | None = None
        self.transport: Any = None
        self.pgid: int | None = None
        self.written = 0
        self.emitted = 0
        self.truncated = False
        self.output_problem: str | None = None  # why the output file stopped being written, if it did
        self.tail = bytearray()
        self.stdout_head = bytearray()  # the first STDOUT_HEAD_BYTES of stdout
        self.stdout_tail = bytearray()  # the last STDOUT_TAIL_BYTES or so after that
        self.stdout_bytes = 0
        self.stderr_tail = bytearray()
        self.reason: str | None = None  # "timeout" | "cancel" | "shutdown", set before exit only
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self.exited = False
        self.timeout_call: Any = None
        self.kill_call: Any = None
        self.drain_call: Any = None
        self.ended: Deferred = Deferred()
        self.started = supervisor.reactor.seconds()
        if kind != "agent":  # a loop phase: the task's log and its stream go on from where they are
            self.written = _size(task.output_path)
            self.emitted = max(offset, self.written)
            self.truncated = self.written >= supervisor.settings.output_max_bytes

    @property
    def looping(self) -> bool:
        return self.kind != "agent"

    def parsed(self, output: str) -> agents.AgentResult:
        """The agent's report from its stdout, with the secrets redacted once more
        after decoding (an escape the output's redaction could not know of)."""
        parsed = agents.parse_result(output, self.stdout_text())
        if self.secret_texts and (parsed.result or parsed.subtype):
            parsed = evolve(parsed, result=parsed.result and agents.redact(parsed.result, self.secret_texts),
                            subtype=parsed.subtype and agents.redact(parsed.subtype, self.secret_texts))
        return parsed

    def end(self, output: str) -> RunEnd:
        """What is known of the run once it is over, for core.outcomes."""
        last = bytes(self.stderr_tail).decode("utf-8", "replace").strip().splitlines()
        return RunEnd(exit_code=self.exit_code, exit_signal=self.exit_signal, reason=self.reason,
                      parsed=self.parsed(output), output_tail=bytes(self.tail).decode("utf-8", "replace"),
                      output_bytes=self.written, stderr_last_line=last[-1] if last else "",
                      output_problem=self.output_problem)

    def stdout_text(self) -> str:
        """What was kept of stdout: all of it, or its start and its end."""
        del self.stdout_tail[:-STDOUT_TAIL_BYTES]
        kept = bytes(self.stdout_head)
        if self.stdout_tail:
            cut = self.stdout_bytes - len(self.stdout_head) - len(self.stdout_tail)
            kept += (f"\n[… {cut} bytes, in the task's output file …]\n".encode() if cut else b"") + self.stdout_tail
        return kept.decode("utf-8", "replace")

    # -- output ------------------------------------------------------------

    def received(self, fd: int, data: bytes) -> None:
        if self.secrets:
            data = self._redact(self.carry[fd] + data)
            if self.holdback:
                data, self.carry[fd] = data[: -self.holdback], data[-self.holdback :]
        if data:
            self._record(fd, data)

    def flush_carry(self) -> None:
        """The agent is gone: what was held back for redaction goes out now."""
        for fd in (1, 2):
            if self.carry[fd]:
                held, self.carry[fd] = self.carry[fd], b""
                self._record(fd, self._redact(held))

    def _redact(self, data: bytes) -> bytes:
        for secret in self.secrets:
            if secret in data:
                data = data.replace(secret, b"[redacted]")
        return data

    def _record(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.stdout_bytes += len(data)
            room = STDOUT_HEAD_BYTES - len(self.stdout_head)
            if room > 0:
                self.stdout_head += data[:room]
                data_rest = data[room:]
            else:
                data_rest = data
            if data_rest:
                self.stdout_tail += data_rest
                if len(self.stdout_tail) > 2 * STDOUT_TAIL_BYTES:  # trimmed now and then, not per chunk
                    del self.stdout_tail[:-STDOUT_TAIL_BYTES]
        if fd == 2:
            self.stderr_tail += data
            del self.stderr_tail[:-4096]
        self.tail += data
        del self.tail[:-OUTPUT_TAIL_BYTES]
        offset = self.emitted  # position in the agent's output stream (= in the file, up to the cap)
        self.emitted += len(data)
        limit = self.supervisor.settings.output_max_bytes
        if self.copy_to is not None and self.copied <= limit:
            self._copy(data, limit)
        if not self.truncated:
            try:
                if self.output is None:
                    self.output = self._open_output()
                room = max(0, limit - self.written)
                chunk = data[:room]
                self.output.write(chunk)
                self.written += len(chunk)
                if len(data) > room:
                    self.output.write(f"\n[aiwg: output truncated at {limit} bytes]\n".encode())
                    self.truncated = True
                self.output.flush()
            except OSError as exc:
                self._output_failed(exc)
        self.supervisor.bus.publish(
            "task:output",
            {
                "taskId": self.task.id,
                "stream": "stdout" if fd == 1 else "stderr",
                "chunk": self.decoders[fd].decode(data),
                "offset": offset,
                "bytes": len(data),
            },
        )

    def _output_failed(self, exc: OSError) -> None:
        """The task's output file cannot be written (a full disk, a read-only or
        failing file system): stop writing it, keep draining the agent's pipes (it
        runs on), and say why, in the log, the health and the task's error."""
        self.truncated = True
        self.output_problem = (f"the daemon could not write the task's output to {self.task.output_path}: "
                               f"{exc.strerror or exc}; the output was cut there")
        handle, self.output = self.output, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass
        self.supervisor.output_write_failed(self.task.id, exc)

    def _open_output(self) -> Any:
        mode = os.O_APPEND if self.looping else os.O_TRUNC
        fd = os.open(str(self.task.output_path), os.O_WRONLY | os.O_CREAT | mode, 0o600)
        return os.fdopen(fd, "wb")

    def _copy(self, data: bytes, limit: int) -> None:
        """The iteration's own file, capped like the task's log."""
        try:
            if self.copy is None:
                self.copy = open(os.open(str(self.copy_to), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
            room = max(0, limit - self.copied)
            self.copy.write(data[:room])
            if len(data) > room:
                self.copy.write(f"\n[aiwg: output truncated at {limit} bytes]\n".encode())
                self.copied = limit + 1
            else:
                self.copied += len(data)
            self.copy.flush()
        except OSError as exc:
            self.supervisor.log.warn("task {task_id}: cannot write {path}: {error}", task_id=self.task.id,
                                     path=str(self.copy_to), error=str(exc))
            self.copy_to = None

    def close_output(self) -> None:
        for handle in (self.output, self.copy):
            if handle is not None:
                try:
                    handle.close()
                except OSError:
                    pass

    # -- signals -----------------------------------------------------------

    def signal_group(self, signum: int) -> None:
        if self.pgid is None:
            return
        try:
            self.supervisor.killpg(self.pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, reason: str, grace: float) -> None:
        """TERM the group now, KILL it after `grace` seconds. Once the agent has
        exited its outcome stands: stopping only clears out what it left behind."""
        if self.reason is None and not self.exited:
            self.reason = reason
        self.signal_group(signal.SIGTERM)
        if self.kill_call is None or not self.kill_call.active():
            self.kill_call = self.supervisor.reactor.callLater(grace, self.kill_now)

    def kill_now(self) -> None:
        self.signal_group(signal.SIGKILL)
        self.supervisor.kill_marked(self.task.id)
        if self.reason is not None:
            # The daemon stops this run (timeout, cancel, stop): all of the task goes.
            # Not for what a run that ended left behind: in a loop the task's next
            # process already runs in the same cgroup (the task's end clears it).
            self.supervisor.kill_cgroup(self.task.id)

    def cancel_timers(self) -> None:
        for call in (self.timeout_call, self.kill_call, self.drain_call):
            if call is not None and call.active():
                call.cancel()
        self.timeout_call = self.kill_call = self.drain_call = None


class AgentProcessProtocol(ProcessProtocol):
    def __init__(self, run: Run) -> None:
        self.run = run

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.run.received(childFD, data)

    def processExited(self, reason: Any) -> None:
        self.run.supervisor._exited(self.run, reason.value)

    def processEnded(self, reason: Any) -> None:
        self.run.supervisor._ended(self.run)


def _size(path: str | None) -> int:
    try:
        return os.stat(path).st_size if path else 0
    except OSError:
        return 0
