# tests: tests/daemon/test_process.py, tests/daemon/test_supervisor.py, tests/e2e/test_tasks.py
"""One process of a task (its agent, or a loop's agent or check), from spawn to
the end of its output: spawned in a session of its own, its output redacted
(also across two reads) into the capped output file and the task:output stream,
a bounded view of stdout kept to read the result from, its process group cleared
out once it exits, and the signals that stop it.

It reports through two Deferreds, the way a process's outcome should: `exited`
fires when the process is gone (its slot is free), `ended` once its output is
all in; both with its `Exit`. It knows nothing of the supervisor: whoever starts
it decides what its end means.
"""

from __future__ import annotations

import codecs
import ctypes  # here, not when needed: a daemon out of descriptors cannot import
import os
import signal
from pathlib import Path
from typing import Any, Callable, Protocol

from attrs import evolve, frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from aiwg.core import agents
from aiwg.core.outcomes import RunEnd
from aiwg.core.tasks import OUTPUT_TAIL_BYTES, Task
from aiwg.daemon.tasks.spawning import close_output_pipes

#: Of an agent's stdout, the start and the end are kept in memory to read its
#: result from (claude's JSON result is its last line); the rest is only in the
#: output file. Bounded, so that a flood of output costs no memory.
STDOUT_HEAD_BYTES = 64 * 1024
STDOUT_TAIL_BYTES = 1024 * 1024
#: After a run that streamed more than this, freed memory is handed back to the
#: system (glibc keeps a fragmented heap otherwise, long after a flood of output).
TRIM_AFTER_BYTES = 8 * 1024 * 1024


@frozen
class Exit:
    """How a process ended: its exit status or the signal that killed it, and
    why the daemon stopped it, if it did ("timeout", "cancel", "shutdown", …)."""

    code: int | None
    signal: int | None
    reason: str | None


class Killer(Protocol):
    """What stops a task's processes (the Reaper): its group, its marked
    processes that left the group, its cgroup."""

    killpg: Callable[[int, int], None]

    def group_alive(self, pgid: int) -> bool: ...
    def kill_marked(self, task_id: str) -> bool: ...
    def kill_cgroup(self, task_id: str) -> None: ...


def trim_heap() -> None:
    try:
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


class AgentProcess:
    """One process of a task, with its output file, timers and why it is being
    stopped. `append`: its output goes on from where the task's log is (a loop's
    processes, across iterations) rather than starting it afresh; `copy_to`: a
    second file of its own (a loop iteration's record), capped alike."""

    log = Logger()

    def __init__(self, task: Task, *, clock: Any, killer: Killer, publish: Callable[[str, dict[str, Any]], Any],
                 secrets: list[str], output_max_bytes: int, kill_grace: float, shutdown_grace: float,
                 append: bool = False, copy_to: Path | None = None, offset: int = 0,
                 on_write_failed: Callable[[str, OSError], Any] = lambda task_id, exc: None) -> None:
        self.task = task
        self._clock = clock
        self._killer = killer
        self._publish = publish
        self._limit = output_max_bytes
        self._kill_grace = kill_grace
        self._shutdown_grace = shutdown_grace
        self._append = append
        self._on_write_failed = on_write_failed
        self.copy_to = copy_to
        self.copy: Any = None
        self.copied = 0
        self.output: Any = None  # opened at the first byte: a silent agent costs no file
        self.secret_texts = tuple(secrets)
        self.redactor = agents.StreamRedactor(secrets)
        self.decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in (1, 2)}
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
        self.reason: str | None = None  # "timeout" | "cancel" | "shutdown" | …, set before exit only
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self.has_exited = False
        self._deadline: Any = None
        self._kill_call: Any = None
        self._drain_call: Any = None
        #: Fire with the Exit: when the process is gone, and when its output is all in.
        self.exited: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self.started = clock.seconds()
        if append:  # the task's log and its stream go on from where they are
            self.written = _size(task.output_path)
            self.emitted = max(offset, self.written)
            self.truncated = self.written >= output_max_bytes

    # -- start -------------------------------------------------------------

    def spawn(self, spawner: Callable[..., Any], executable: str, argv: list[str], env: dict[str, str],
              cwd: str, child_fds: dict[int, Any], **options: Any) -> int | None:
        """Start it (through `spawner`, in a session of its own); its pid, which
        leads its process group. Raises what the spawn raises."""
        self.transport = spawner(AgentProcessProtocol(self), executable, argv, env, cwd, child_fds, **options)
        # A process that exits at once may be reaped before spawnProcess returns,
        # which leaves transport.pid None: the pid it had is kept aside.
        pid = self.transport.pid if self.transport.pid is not None else getattr(self.transport, "spawned_pid", None)
        self.pgid = pid
        return pid

    def deadline(self, seconds: float, expired: Callable[["AgentProcess"], Any]) -> None:
        """Call `expired(self)` if it is still running after `seconds`."""
        if not self.has_exited:
            self._deadline = self._clock.callLater(seconds, self._deadline_due, expired)

    def _deadline_due(self, expired: Callable[["AgentProcess"], Any]) -> None:
        self._deadline = None
        expired(self)

    # -- the result ---------------------------------------------------------

    @property
    def exit(self) -> Exit:
        return Exit(self.exit_code, self.exit_signal, self.reason)

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
                      parsed=self.parsed(output), output_tail=self.output_text(),
                      output_bytes=self.written, stderr_last_line=last[-1] if last else "",
                      output_problem=self.output_problem)

    def output_text(self) -> str:
        """The end of its output (both streams), as kept in memory."""
        return bytes(self.tail).decode("utf-8", "replace")

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
        data = self.redactor.feed(fd, data)
        if data:
            self._record(fd, data)

    def _flush_carry(self) -> None:
        """The agent is gone: what was held back for redaction goes out now."""
        for fd in (1, 2):
            held = self.redactor.flush(fd)
            if held:
                self._record(fd, held)

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
        limit = self._limit
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
        self._publish(
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
        self._on_write_failed(self.task.id, exc)

    def _open_output(self) -> Any:
        mode = os.O_APPEND if self._append else os.O_TRUNC
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
            self.log.warn("task {task_id}: cannot write {path}: {error}", task_id=self.task.id,
                          path=str(self.copy_to), error=str(exc))
            self.copy_to = None

    def _close_output(self) -> None:
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
            self._killer.killpg(self.pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, reason: str, grace: float) -> None:
        """TERM the group now, KILL it after `grace` seconds. Once the agent has
        exited its outcome stands: stopping only clears out what it left behind."""
        if self.reason is None and not self.has_exited:
            self.reason = reason
        self.signal_group(signal.SIGTERM)
        if self._kill_call is None or not self._kill_call.active():
            self._kill_call = self._clock.callLater(grace, self.kill_now)

    def kill_now(self) -> None:
        self.signal_group(signal.SIGKILL)
        self._killer.kill_marked(self.task.id)
        if self.reason is not None:
            # The daemon stops this run (timeout, cancel, stop): all of the task goes.
            # Not for what a run that ended left behind: in a loop the task's next
            # process already runs in the same cgroup (the task's end clears it).
            self._killer.kill_cgroup(self.task.id)

    def _cancel_timers(self) -> None:
        for call in (self._deadline, self._kill_call, self._drain_call):
            if call is not None and call.active():
                call.cancel()
        self._deadline = self._kill_call = self._drain_call = None

    # -- its end -------------------------------------------------------------

    def process_exited(self, reason: Any) -> None:
        """The process is gone: its slot is free. Whatever it left running in its
        group is an orphan now: TERM, KILL after the grace; a descendant that left
        the group but kept our pipes open would hold the output open forever, so
        after the grace it is killed and the pipes closed."""
        self.has_exited = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        if isinstance(reason, ProcessTerminated):
            self.exit_code, self.exit_signal = reason.exitCode, reason.signal
        elif isinstance(reason, ProcessDone):
            self.exit_code = 0
        grace = self._shutdown_grace if self.reason == "shutdown" else self._kill_grace
        if self.pgid is not None and self._killer.group_alive(self.pgid):
            self.signal_group(signal.SIGTERM)
            if self._kill_call is None or not self._kill_call.active():
                self._kill_call = self._clock.callLater(grace, self.kill_now)
        self._drain_call = self._clock.callLater(grace + 1, self._drain, grace)
        self.exited.callback(self.exit)

    def _drain(self, grace: float) -> None:
        self._drain_call = None
        if self.ended.called:
            return
        self.log.warn("task {task_id}: output still open {grace}s after the agent exited; "
                      "killing what holds it and closing the pipes", task_id=self.task.id, grace=grace)
        self.kill_now()
        close_output_pipes(self.transport)

    def process_ended(self) -> None:
        """Its output is all in: the last of it written, the group cleared."""
        if not self.has_exited:  # ended without a word of its exit (should not happen): it is gone now
            self.process_exited(None)
        self._flush_carry()
        if self.pgid is not None and self._killer.group_alive(self.pgid):
            self.kill_now()  # the pipes closed, but something of the task still runs
        self._cancel_timers()
        self._close_output()
        self.ended.callback(self.exit)


class AgentProcessProtocol(ProcessProtocol):
    def __init__(self, process: AgentProcess) -> None:
        self.process = process

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.process.received(childFD, data)

    def processExited(self, reason: Any) -> None:
        self.process.process_exited(reason.value)

    def processEnded(self, reason: Any) -> None:
        self.process.process_ended()


def _size(path: str | None) -> int:
    try:
        return os.stat(path).st_size if path else 0
    except OSError:
        return 0
