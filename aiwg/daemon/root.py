# tests: tests/daemon/test_root.py, tests/e2e/test_lifecycle.py
"""DaemonService: the root of the service tree.

It starts children in order, and if one fails it undoes what the others did
(pid file, socket) before the error reaches twistd's status pipe, so a failed
start leaves nothing behind. It stops them one at a time in reverse order —
intake first, then the workers drain, then IPC, then the final state write,
then the lock — logging any child that fails instead of swallowing it. It fans
a reload out as check-then-apply: every child must accept the new
configuration before any child applies it.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Protocol

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger, globalLogPublisher

from aiwg import __version__, compat, instance, registry
from aiwg.configfile import exposure, load_config
from aiwg.core.config import Config
from aiwg.daemon.bus import EventBus
from aiwg.core.timefmt import iso_utc
from aiwg.daemon.logs import OncePerEvent, RotatingFileObserver, own_log_started, stream_observer
from aiwg.daemon.tasks.spawning import CLOEXEC_FROM
from aiwg.errors import CONFIG_INVALID, ConfigError, RpcError
from aiwg.paths import ProjectPaths

#: Below this much free space under .aiwg/ the daemon reports itself degraded.
LOW_DISK_BYTES = 100 * 1024 * 1024


class DaemonService(MultiService):
    log = Logger()

    def __init__(
        self,
        *,
        reactor: Any,
        paths: ProjectPaths,
        config: Config,
        explicit_config: str | None,
        bus: EventBus,
        socket_path: Path,
        log_to_stdout: bool = False,
        supervisor: Any = None,
        lock: Service | None = None,
        heartbeat: Any = None,
        notifier: Any = None,
    ) -> None:
        """`lock`: the child that takes the project's lock (the log starts once it
        has); `heartbeat`: the child that writes state.json; `supervisor`: the task
        supervisor, for the health check and state.json (None: a tree without)."""
        MultiService.__init__(self)
        self._lock = lock
        self._heartbeat = heartbeat
        self._notifier = notifier  # systemd's notify protocol (Type=notify units), or None
        self._reactor = reactor
        self.paths = paths
        self.config = config
        self._explicit_config = explicit_config
        self.bus = bus
        self.socket_path = socket_path
        self._log_to_stdout = log_to_stdout
        self._observer: Any = None
        self._privileged: list[Service] = []
        self._privileged_started = False
        self._stopping: Deferred | None = None
        self._old_sighup: Any = None
        self.pid = os.getpid()
        self.started_at: float | None = None
        self.phase = "starting"
        self.restart_count = 0
        self.reloads = 0
        self.supervisor = supervisor  # None in a tree without one (tests)
        self.last_health_check: dict[str, Any] | None = None

    # -- clock -------------------------------------------------------------

    def now(self) -> float:
        return self._reactor.seconds()

    def uptime(self) -> float:
        if self.started_at is None:
            return 0.0
        return max(0.0, self.now() - self.started_at)

    # -- start -------------------------------------------------------------

    def privilegedStartService(self) -> None:
        self._privileged_started = True
        self.pid = os.getpid()  # twistd may have forked since we were built
        instance.ensure_dirs(self.paths)
        Service.privilegedStartService(self)
        try:
            for child in self:
                if child is not self._lock:
                    self._begin_logging()  # only once the project's lock is ours
                child.privilegedStartService()
                self._privileged.append(child)
            self._begin_logging()
        except BaseException as exc:
            if self._observer is not None:  # a start that lost the lock leaves the log alone
                self.log.error("start failed: {error}", error=str(exc))
            self._abort_start()
            raise

    def _begin_logging(self) -> None:
        if self._observer is not None:
            return
        self._attach_logging()
        self.log.info(
            "aiwg daemon {version} starting for {project} (pid {pid})",
            version=__version__,
            project=str(self.paths.root),
            pid=self.pid,
        )
        for warning in self.config.warnings:
            self.log.warn("config {source}: {warning}", source=self.config.source, warning=warning)
        for problem in compat.check():  # checked by behaviour, before anything uses them
            self.log.warn("dependency hook not in use: {problem}", problem=problem)
        if not CLOEXEC_FROM.works():  # a slower spawn, nothing lost
            self.log.info("{problem}: each spawn closes the daemon's descriptors one by one",
                          problem=CLOEXEC_FROM.problem)
        raised = raise_descriptor_limit()
        if raised is not None:
            self.log.info("open-file limit raised from {soft} to {hard} (the hard limit)", soft=raised[0],
                          hard=raised[1])

    def startService(self) -> None:
        if not self._privileged_started:  # `twist` starts services without this step
            self.privilegedStartService()
        self.restart_count = self._previous_restart_count()
        self.started_at = self.now()
        self.phase = "running"  # the heartbeat's first write, just below, says so
        Service.startService(self)
        try:
            for child in self:
                child.startService()
        except BaseException as exc:
            self.log.error("start failed: {error}", error=str(exc))
            self._abort_start()
            raise
        self._install_sighup()
        try:
            registry.register(self.paths, self.pid, self.socket_path, self.started_at)
        except OSError as exc:  # `aiwg daemon list` will not show it; nothing else depends on it
            self.log.warn("cannot list this daemon in {dir}: {error}", dir=str(registry.registry_dir()),
                          error=exc.strerror or str(exc))
        self.bus.publish("daemon:started", {"pid": self.pid, "socket": str(self.socket_path)})
        if self._notifier is not None:  # every service has started: the socket answers
            self._notifier.ready(self._activity())
        self.log.info(
            "daemon started (pid {pid}), listening on {socket}",
            pid=self.pid,
            socket=str(self.socket_path),
        )

    def _abort_start(self) -> None:
        """Undo a partial start synchronously: the reactor will never run."""
        for child in reversed(self._privileged):
            abort = getattr(child, "abort_start", None)
            try:
                if abort is not None:
                    abort()
            except Exception:
                self.log.failure("cleaning up {name} after a failed start", name=child.name)
        self._privileged = []
        self.phase = "failed"
        self._detach_logging()

    def _previous_restart_count(self) -> int:
        """Starts that followed a daemon which did not stop cleanly (a crash or
        kill -9 leaves state.json saying running), counted over the project's life."""
        import json

        try:
            previous = json.loads(self.paths.state_file.read_text())
            count = int(previous.get("restart_count", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            return 0
        return count if previous.get("status") == "stopped" else count + 1

    # -- stop --------------------------------------------------------------

    def stopService(self) -> Deferred:
        if self._stopping is None:
            self._stopping = Deferred.fromCoroutine(self._stop())
        return self._stopping

    async def _stop(self) -> None:
        self.phase = "stopping"
        if self._notifier is not None:
            self._notifier.stopping("stopping: draining running tasks")
        self.log.info("stopping (pid {pid})", pid=self.pid)
        self.bus.publish("daemon:stopping", {"pid": self.pid})
        self._restore_sighup()
        Service.stopService(self)
        for child in reversed(list(self)):
            if child is self._heartbeat:
                self.phase = "stopped"  # the heartbeat's final write says so
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                self.log.failure("stopping {name} failed", name=child.name)
        self.phase = "stopped"
        registry.unregister(self.paths, self.pid)
        self.bus.close()
        self.log.info("daemon stopped")
        self._detach_logging()

    def request_stop(self, reason: str) -> dict[str, Any]:
        """Stop after this reply has been written."""
        self.log.info("stop requested: {reason}", reason=reason)
        self._reactor.callLater(0, self._reactor.stop)
        return {"stopping": True, "pid": self.pid}

    # -- reload ------------------------------------------------------------

    def _install_sighup(self) -> None:
        def on_sighup(signum: int, frame: Any) -> None:
            self._reactor.callFromThread(self._reload_from_signal)

        try:
            self._old_sighup = signal.signal(signal.SIGHUP, on_sighup)
        except ValueError:  # not the main thread (tests)
            self._old_sighup = None

    def _restore_sighup(self) -> None:
        if self._old_sighup is not None:
            try:
                signal.signal(signal.SIGHUP, self._old_sighup)
            except ValueError:
                pass
            self._old_sighup = None

    def _reload_from_signal(self) -> None:
        self.log.info("SIGHUP received: reloading configuration")
        try:
            self.reload()
        except RpcError:
            pass  # already logged with its reasons

    def reload(self) -> dict[str, Any]:
        """Validate the configuration file, then apply it; an invalid one changes nothing."""
        try:
            new = load_config(self.paths, self._explicit_config)  # checked whole: schema and meaning
        except ConfigError as exc:
            self.log.error("reload refused, keeping the running configuration: {reason}", reason=str(exc))
            self.bus.publish("daemon:reload_failed", {"problems": exc.problems})
            raise RpcError(CONFIG_INVALID, str(exc), {"problems": exc.problems}) from None
        changed = new.changed_sections(self.config)
        previous = self.config
        errors, applied = self._apply_everywhere(new)
        if errors:
            # All or nothing: what applied goes back to the running configuration,
            # which stays in force with its hash.
            self.log.error("reload not applied ({errors}); going back to the running configuration",
                           errors="; ".join(errors))
            undone, _ = self._apply_everywhere(previous, only=applied)
            for problem in undone:
                self.log.error("reload: could not go back to the running configuration: {problem}",
                               problem=problem)
            self.bus.publish("daemon:reload_failed", {"problems": errors})
            return {"reloaded": False, "changed": [], "warnings": list(new.warnings),
                    "config_hash": previous.digest, "errors": errors}
        for warning in new.warnings:
            self.log.warn("config {source}: {warning}", source=new.source, warning=warning)
        self.reloads += 1
        self.log.info(
            "configuration reloaded from {source}; changed: {changed}",
            source=new.source,
            changed=", ".join(changed) or "nothing",
        )
        self.bus.publish("daemon:reloaded", {"changed": changed, "config_hash": new.digest})
        return {
            "reloaded": True,
            "changed": changed,
            "warnings": list(new.warnings),
            "config_hash": new.digest,
        }

    def _apply_everywhere(self, config: Config, only: list[Any] | None = None) -> tuple[list[str], list[Any]]:
        """Apply `config` to the log and every child (or the children in `only`);
        returns the failures, named, and the children that applied it. Validated
        beforehand, so a failure is a bug: it is logged with its traceback."""
        self.config = config
        if self._observer is not None and hasattr(self._observer, "apply"):
            self._observer.apply(config.daemon.log)
        errors: list[str] = []
        applied: list[Any] = []
        for child in (only if only is not None else list(self)):
            try:
                _call(child, "apply_config", config, None)
            except Exception as exc:
                self.log.failure("reload: {name} could not apply the configuration", name=child.name)
                errors.append(f"{child.name}: {exc}")
            else:
                applied.append(child)
        return errors, applied

    # -- logging -----------------------------------------------------------

    def _attach_logging(self) -> None:
        if self._observer is not None:
            return
        settings = self.config.daemon.log
        if self._log_to_stdout:
            stream = sys.__stdout__ if sys.__stdout__ is not None else sys.stdout
            self._observer = stream_observer(stream, settings)
        else:
            self._observer = RotatingFileObserver(self.paths.log_file, settings)
        self._observer = OncePerEvent(self._observer)
        own_log_started()
        self._reactor.callLater(0, self._observer.settle)  # once the reactor runs: logging has begun
        globalLogPublisher.addObserver(self._observer)

    def _detach_logging(self) -> None:
        if self._observer is None:
            return
        globalLogPublisher.removeObserver(self._observer)
        if hasattr(self._observer, "close"):
            self._observer.close()
        self._observer = None

    # -- status ------------------------------------------------------------

    def _child_issues(self) -> list[tuple[str | None, list[str]]]:
        return [(child.name, list(_call(child, "health_issues", None, []))) for child in self]

    def _disk(self) -> tuple[int | None, str | None]:
        """Free bytes under .aiwg/daemon/, and what is wrong with that, if anything."""
        try:
            free = shutil.disk_usage(self.paths.daemon_dir).free
        except OSError as exc:
            return None, f"cannot check disk space under {self.paths.daemon_dir}: {exc}"
        if free < LOW_DISK_BYTES:
            return free, f"low disk space: {free // (1024 * 1024)} MiB free under {self.paths.daemon_dir}"
        return free, None

    def health(self, child_issues: list[tuple[str | None, list[str]]] | None = None,
               disk: tuple[int | None, str | None] | None = None) -> dict[str, Any]:
        child_issues = self._child_issues() if child_issues is None else child_issues
        _, disk_problem = self._disk() if disk is None else disk
        issues = [issue for _, found in child_issues for issue in found]
        if disk_problem:
            issues.append(disk_problem)
        issues += [f"dependency hook not in use: {problem}" for problem in compat.degraded()]
        exposed = exposure(self.config)  # looked at anew: a chmod clears it
        if exposed is not None:
            issues.append(exposed)
        return {
            "status": "degraded" if issues else "healthy",
            "last_check": iso_utc(self.now()),
            "issues": issues,
        }

    def run_health_check(self) -> dict[str, Any]:
        """The `health-check` schedule action: assess every subsystem, the queue, the
        disk under .aiwg/ and the agent binary; record it in state.json and publish
        `health:checked` (and `health:degraded` when something is wrong)."""
        child_issues, disk = self._child_issues(), self._disk()
        result = self.health(child_issues, disk)
        checks: dict[str, Any] = {"disk_free_mb": disk[0] // (1024 * 1024) if disk[0] is not None else None}
        supervisor = self.supervisor
        if supervisor is not None and getattr(supervisor, "store", None) is not None:
            summary = supervisor.summary()
            checks["queue_depth"] = summary["queued"]
            checks["running"] = summary["running"]
            checks["agent"] = supervisor.agent_check()
        checks["subsystems"] = {name: ("degraded" if found else "ok") for name, found in child_issues if name}
        result["checks"] = checks
        self.last_health_check = result
        self.log.info("health check: {status}{issues}", status=result["status"],
                      issues="".join(f"; {i}" for i in result["issues"]))
        heartbeat = self._heartbeat
        if heartbeat is not None and heartbeat.running:
            try:
                heartbeat.write()
            except OSError as exc:
                self.log.error("health check: could not write state.json: {error}", error=str(exc))
        self.bus.publish("health:checked", result)
        if result["issues"]:
            self.bus.publish("health:degraded", {"issues": result["issues"], "subsystem": "daemon"})
        return result

    def _subsystems(self) -> dict[str, Any]:
        subsystems: dict[str, Any] = {}
        for child in self:
            status = _call(child, "status", None, None)
            if status is not None:
                subsystems[child.name] = status
        subsystems["events"] = {
            "published": self.bus.published,
            "subscribers": self.bus.subscriber_count,
        }
        subsystems["compat"] = compat.status()
        for absent in ("supervisor", "file_watcher", "scheduler", "automation", "messaging"):
            subsystems.setdefault(absent, {"enabled": False})
        return subsystems

    def status(self) -> dict[str, Any]:
        """The `daemon.status` result (AIWG's fields, plus ours)."""
        health = self.health()
        subsystems = self._subsystems()
        return {
            "pid": self.pid,
            "uptime_seconds": int(self.uptime()),
            "started_at": iso_utc(self.started_at or self.now()),
            "health": health["status"],
            "health_issues": health["issues"],
            "state": self.phase,
            "version": __version__,
            "project": str(self.paths.root),
            "socket": str(self.socket_path),
            "clients": subsystems.get("ipc", {}).get("clients", 0),
            "config": {
                "path": self.config.source,
                "hash": self.config.digest,
                "warnings": list(self.config.warnings),
                "reloads": self.reloads,
            },
            "subsystems": subsystems,
        }

    def _activity(self) -> str:
        """One line for systemd's STATUS= (`systemctl status` shows it)."""
        counts = self.supervisor.stats() if getattr(self.supervisor, "store", None) else None
        tasks = f"{counts.get('running', 0)} running, {counts.get('queued', 0)} queued; " if counts else ""
        return f"{tasks}{self.health()['status']} (pid {self.pid})"

    def heartbeat_record(self) -> dict[str, Any]:
        if self._notifier is not None and self._notifier.enabled:
            self._notifier.say_status(self._activity())
        return {
            "pid": self.pid,
            "timestamp": iso_utc(self.now()),
            "uptime_seconds": int(self.uptime()),
        }

    def state_record(self) -> dict[str, Any]:
        """state.json: AIWG's fields (pid, started_at, last_heartbeat, uptime_seconds,
        restart_count, ipc, monitors, automation, health) plus ours."""
        subsystems = self._subsystems()
        return {
            "pid": self.pid,
            "status": self.phase,
            "started_at": iso_utc(self.started_at or self.now()),
            "last_heartbeat": iso_utc(self.now()),
            "uptime_seconds": int(self.uptime()),
            "restart_count": self.restart_count,
            "version": __version__,
            "project": str(self.paths.root),
            "config_hash": self.config.digest,
            "config_path": self.config.source,
            "ipc": {
                "socket": str(self.socket_path),
                "clients": subsystems.get("ipc", {}).get("clients", 0),
            },
            "monitors": {
                "file_watcher": subsystems["file_watcher"],
                "webhook": {"enabled": False},
                "scheduler": subsystems["scheduler"],
            },
            "automation": _automation_summary(subsystems["automation"]),
            "messaging": subsystems["messaging"],
            "events": subsystems["events"],
            **self._task_state(),
            "health": self.health(),
            **({"last_health_check": self.last_health_check} if self.last_health_check else {}),
        }


    def _task_state(self) -> dict[str, Any]:
        """state.json's agents and task_stats (AIWG's snake_case shape)."""
        supervisor = self.supervisor
        if supervisor is None or supervisor.store is None:
            return {}  # the store is not open (yet, or any more)
        summary = supervisor.summary()
        return {
            "agents": {
                "running": summary["running"],
                "queued": summary["queued"],
                "max_concurrency": summary["maxConcurrency"],
                "tasks": summary["tasks"],
            },
            "task_stats": supervisor.store.stats(),
        }


#: Where the hard limit is "unlimited", the soft one goes no higher than this.
MAX_DESCRIPTORS = 1 << 20


def raise_descriptor_limit() -> tuple[int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as a daemon serving many
    connections and agents should (systemd leaves it at 1024 for select()'s
    sake; this process does not use select). (old, new), or None if unchanged."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_DESCRIPTORS if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft >= target:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return None
    return soft, target


def _automation_summary(status: dict[str, Any]) -> dict[str, Any]:
    """state.json's automation entry: AIWG's {enabled, rule_count}, plus per-rule counters."""
    if "ruleCount" not in status:
        return status
    return {
        "enabled": status["enabled"],
        "rule_count": status["ruleCount"],
        "rules": {r["id"]: {"enabled": r["enabled"], "fires": r["fireCount"], "throttled": r["throttledCount"],
                            "last_fired": r["lastFired"], "last_error": r["lastError"]} for r in status["rules"]},
    }


class Reloadable(Protocol):
    """What a child service may offer the root, each method optional (a service
    without one is simply not asked): `apply_config` takes a configuration that
    load_config has checked whole, `health_issues` says what is wrong now."""

    def apply_config(self, config: Config) -> None: ...
    def health_issues(self) -> list[str]: ...


def _call(child: Any, name: str, arg: Any, default: Any) -> Any:
    """`child.name(arg)` if the child has that part of Reloadable, else `default`."""
    func = getattr(child, name, None)
    if func is None:
        return default
    return func(arg) if arg is not None else func()
