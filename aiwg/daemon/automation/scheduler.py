# tests: tests/daemon/test_scheduler.py, tests/e2e/test_automation.py
"""The scheduler: `schedule.jobs`, each armed as one CronTimer.

A job's action is the built-in `health-check` or the name of an entry in
`actions`, which is submitted as a task (source `schedule:<job>`). Every fire
publishes `schedule:fired`; a fire that came too late is skipped, logged and
published as `schedule:skipped`.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import Service
from twisted.logger import Logger

from aiwg.core import cron
from aiwg.core.config import BUILTIN_ACTIONS, Config
from aiwg.daemon.automation.crontimer import CronTimer
from aiwg.core.timefmt import iso_utc

Submit = Callable[..., Any]  # submit(spec: dict, source: str, metadata: dict) -> task


class Job:
    def __init__(self, name: str, spec: dict[str, Any], zone_name: str | None) -> None:
        self.name = name
        self.cron = spec["cron"]
        self.action = spec["action"]
        self.enabled = bool(spec.get("enabled", True))
        self.zone_name = zone_name
        self.timer: CronTimer | None = None
        self.last_error: str | None = None
        self.last_task: str | None = None


class Scheduler(Service):
    name = "scheduler"
    log = Logger()

    def __init__(self, *, reactor: Any, bus: Any, config: Config,
                 submit: Submit, health_check: Callable[[], Any]) -> None:
        self._reactor = reactor
        self._bus = bus
        self._submit = submit
        self._health_check = health_check
        self._config = config
        self.jobs: dict[str, Job] = {}
        self._history: dict[str, tuple[float | None, int, int]] = {}  # name → last fire, fires, skips

    @property
    def enabled(self) -> bool:
        return bool(self._config.data["schedule"].get("enabled"))

    def startService(self) -> None:
        Service.startService(self)
        self._arm_all()

    def stopService(self) -> None:
        Service.stopService(self)
        self._disarm_all()

    def _arm_all(self) -> None:
        schedule = self._config.data["schedule"]
        self.jobs = {}
        if not schedule.get("enabled"):
            return
        default_zone = schedule.get("timezone")
        grace = float(schedule.get("misfire_grace_seconds", cron.DEFAULT_MISFIRE_GRACE_SECONDS))
        for spec in schedule.get("jobs") or []:
            name = spec.get("name") or spec.get("id")
            job = Job(name, spec, spec.get("timezone") or default_zone)
            self.jobs[name] = job
            if not job.enabled:
                continue
            job.timer = CronTimer(
                reactor=self._reactor, name=name, expression=job.cron, zone=cron.zone(job.zone_name),
                grace=grace,
                on_fire=lambda scheduled, now, job=job: self._fire(job, scheduled, now),
                on_skip=lambda scheduled, now, job=job: self._skipped(job, scheduled, now),
            )
            last, fires, skips = self._history.get(name, (None, 0, 0))
            job.timer.last_fire, job.timer.fires, job.timer.skips = last, fires, skips
            job.timer.start()
        armed = [j for j in self.jobs.values() if j.timer is not None]
        self.log.info(
            "scheduler armed {count} job(s){detail}",
            count=len(armed),
            detail="".join(f"; {j.name} next at {iso_utc(j.timer.next_fire)}" for j in armed if j.timer and j.timer.next_fire),
        )

    def _disarm_all(self) -> None:
        for job in self.jobs.values():
            if job.timer is not None:
                self._history[job.name] = (job.timer.last_fire, job.timer.fires, job.timer.skips)
                job.timer.stop()
                job.timer = None

    def _fire(self, job: Job, scheduled: float, now: float) -> None:
        self.log.info("schedule {name}: firing ({action})", name=job.name, action=job.action)
        self._bus.publish("schedule:fired", {
            "job": job.name, "action": job.action, "cron": job.cron,
            "scheduled": iso_utc(scheduled), "lateSeconds": round(max(0.0, now - scheduled), 3),
        }, source="schedule")
        self.run_action(job)

    def run_action(self, job: Job) -> Any:
        """Do what the job says; a failure is logged and kept in the job's status."""
        try:
            if job.action in BUILTIN_ACTIONS:
                result = self._health_check()
            else:
                spec = self._config.data["actions"][job.action]
                task = self._submit(spec, f"schedule:{job.name}", {"schedule": job.name, "action": job.action})
                job.last_task = task.id
                result = task
            job.last_error = None
            return result
        except Exception as exc:
            job.last_error = str(exc) or type(exc).__name__
            self.log.error("schedule {name}: action {action} failed: {error}",
                           name=job.name, action=job.action, error=job.last_error)
            return None

    def _skipped(self, job: Job, scheduled: float, now: float) -> None:
        self._bus.publish("schedule:skipped", {
            "job": job.name, "action": job.action, "scheduled": iso_utc(scheduled),
            "lateSeconds": round(now - scheduled, 3),
        }, source="schedule")

    # -- reload and status ----------------------------------------------------

    def apply_config(self, config: Config) -> None:
        before = (self._config.data["schedule"], self._config.data["actions"])
        self._config = config
        if (config.data["schedule"], config.data["actions"]) == before or not self.running:
            return
        self._disarm_all()
        self._arm_all()

    def job_list(self) -> list[dict[str, Any]]:
        out = []
        for job in self.jobs.values():
            timer = job.timer
            last, fires, skips = (timer.last_fire, timer.fires, timer.skips) if timer else self._history.get(job.name, (None, 0, 0))
            out.append({
                "name": job.name,
                "cron": job.cron,
                "action": job.action,
                "enabled": job.enabled,
                "timezone": job.zone_name or "local",
                "nextFire": iso_utc(timer.next_fire) if timer and timer.next_fire else None,
                "lastFire": iso_utc(last) if last else None,
                "fires": fires,
                "skips": skips,
                "lastError": job.last_error,
                "lastTaskId": job.last_task,
            })
        return out

    def health_issues(self) -> list[str]:
        return [f"schedule {j.name}: last run failed: {j.last_error}" for j in self.jobs.values() if j.last_error]

    def status(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False}
        jobs = self.job_list()
        return {
            "enabled": True,
            "jobs": len(jobs),
            "last_fires": {j["name"]: j["lastFire"] for j in jobs if j["lastFire"]},
            "next_fires": {j["name"]: j["nextFire"] for j in jobs if j["nextFire"]},
        }
