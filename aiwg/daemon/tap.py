# tests: tests/e2e/test_lifecycle.py, tests/test_packaging.py
"""`twistd aiwg`: the plugin's options, and makeService, which builds the whole daemon.

Reading makeService top to bottom shows every service and the order they
start in (the reverse of the order they stop in).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.python import usage

from aiwg.configfile import load_config
from aiwg.daemon.logs import startup_errors_observer
from aiwg.errors import AiwgError, ConfigError
from aiwg.paths import ProjectPaths


class Options(usage.Options):
    synopsis = "[--project DIR] [--config FILE] [--log-stdout]"
    longdesc = (
        "Run the aiwg daemon for one project: JSON-RPC on .aiwg/daemon/daemon.sock, "
        "state in .aiwg/daemon/. Usually started with `aiwg daemon start`."
    )
    optParameters = [
        ["project", "p", None, "Project root (default: $AIWG_PROJECT or the current directory)."],
        ["config", "c", None, "Configuration file (default: <project>/.aiwg/daemon.json)."],
    ]
    optFlags = [
        ["log-stdout", None, "Log to stdout instead of .aiwg/daemon/daemon.log (foreground use)."],
    ]

    def postOptions(self) -> None:
        paths = ProjectPaths.for_project(self["project"])
        if not paths.root.is_dir():
            raise usage.UsageError(f"--project {paths.root}: not a directory")
        try:
            self.config = load_config(paths, self["config"])
        except ConfigError as exc:
            raise usage.UsageError(str(exc)) from None
        self.paths = paths
        runner = getattr(self, "parent", None)  # twistd's or twist's own options, when run by one
        if runner is not None:
            self._fit_runner(runner)

    def _fit_runner(self, runner: Any) -> None:
        """`twistd aiwg` by itself: the daemon writes its own pid file (.aiwg/daemon.pid)
        and log, so twistd's default twistd.pid and twistd.log in the current
        directory, and its copy of every log line, are not wanted. Whatever the user
        asked of twistd or twist (--pidfile, --logfile, --logger, --syslog,
        --log-file) stands; in the foreground (`-n`, or `twist`) the daemon's log goes
        to stdout, once."""
        if "nodaemon" in runner:  # twistd
            if runner["pidfile"] == "twistd.pid":  # its default
                runner["pidfile"] = ""
            if not (runner["logfile"] or runner["logger"] or runner.get("syslog")):
                runner["logger"] = "aiwg.daemon.logs.startup_errors_observer"
                if runner["nodaemon"]:
                    self["log-stdout"] = True
        elif runner.get("logFile") is sys.stdout:  # twist, logging to stdout (its default)
            runner["fileLogObserverFactory"] = lambda stream: startup_errors_observer()
            self["log-stdout"] = True


def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from aiwg.daemon.automation.engine import AutomationEngine
    from aiwg.daemon.bus import EventBus
    from aiwg.daemon.tasks.cgroups import open_task_cgroups
    from aiwg.daemon.messaging.chat import ChatService
    from aiwg.daemon.eventlog import EventLog
    from aiwg.daemon.heartbeat import Heartbeat
    from aiwg.daemon.ipc.server import IpcFactory, IpcServer
    from aiwg.daemon.lock import InstanceLock
    from aiwg.daemon.selfrepair import SelfRepair
    from aiwg.daemon.statefile import BackgroundWriter
    from aiwg.daemon.messaging.hub import MessagingService
    from aiwg.daemon.ipc.methods import build_method_table
    from aiwg.daemon.root import DaemonService
    from aiwg.daemon.sdnotify import SystemdNotifier
    from aiwg.daemon.automation.scheduler import Scheduler
    from aiwg.daemon.tasks.store import StoreService
    from aiwg.daemon.tasks.actions import TaskActions
    from aiwg.daemon.tasks.supervisor import Supervisor, SupervisorSettings
    from aiwg.daemon.watch.watcher import FileWatcher

    paths: ProjectPaths = options.paths
    config = options.config
    # First: what systemd put in the environment is read and taken out of it, so
    # that no agent inherits NOTIFY_SOCKET.
    notifier = SystemdNotifier.from_environ(reactor, os.environ)
    socket_path = paths.bind_socket()
    bus = EventBus(reactor=reactor)
    store = StoreService(
        db_path=paths.tasks_db, tasks_json=paths.daemon_dir / "tasks.json", clock=reactor
    )
    # Proved here, before twistd forks (a forked daemon keeps its cgroup).
    containment = config.data["daemon"].get("process_containment", "auto")
    cgroups, no_cgroups = open_task_cgroups(paths.root) if containment != "process-group" else (None, "configured")
    if containment == "cgroup" and cgroups is None:
        raise AiwgError(f"daemon.process_containment is \"cgroup\", but task cgroups do not work here: {no_cgroups}")
    supervisor = Supervisor(
        reactor=reactor,
        store=lambda: store.store,
        bus=bus,
        project_root=paths.root,
        actions_dir=paths.actions_dir,
        settings=SupervisorSettings.from_config(config),
        cgroups=cgroups,
        containment_note=no_cgroups,
    )
    # The lock and the heartbeat call back into the root, which holds them: the
    # callbacks look the root up when they run, after it is built just below.
    lock = InstanceLock(paths, reactor, on_project_gone=lambda: root.request_stop("the project directory was deleted"))
    heartbeat = Heartbeat(
        reactor=reactor,
        heartbeat_file=paths.heartbeat_file,
        state_file=paths.state_file,
        interval=config.daemon.heartbeat_interval_seconds,
        heartbeat=lambda: root.heartbeat_record(),
        state=lambda: root.state_record(),
        beat=lambda: repair.beat(),
        writer=BackgroundWriter(),
    )
    root = DaemonService(
        reactor=reactor,
        paths=paths,
        config=config,
        explicit_config=options["config"],
        bus=bus,
        socket_path=socket_path,
        log_to_stdout=bool(options["log-stdout"]),
        supervisor=supervisor,
        lock=lock,
        heartbeat=heartbeat,
        notifier=notifier,
    )
    actions = TaskActions(supervisor)
    automation = AutomationEngine(
        reactor=reactor, bus=bus, config=config, submit=actions.submit,
        task_depth=actions.depth, state_file=paths.daemon_dir / "automation.json",
        run_command=actions.run_command, task_state=actions.state, unfinished_loop=actions.unfinished_loop,
    )
    scheduler = Scheduler(
        reactor=reactor, bus=bus, config=config, submit=actions.submit,
        health_check=root.run_health_check,
    )
    watcher = FileWatcher(reactor=reactor, root=paths.root, bus=bus, config=config)
    chat = ChatService(reactor=reactor, bus=bus, config=config, supervisor=lambda: supervisor,
                       state_file=paths.daemon_dir / "conversations.json")
    messaging = MessagingService(
        reactor=reactor, bus=bus, config=config, project=paths.root.name, environ=os.environ,
        daemon_status=root.status, supervisor=lambda: supervisor, chat=lambda: chat,
        state_dir=paths.daemon_dir,
    )
    methods = build_method_table(root, bus=bus, supervisor=supervisor, actions=actions, chat=chat,
                                 automation=automation, scheduler=scheduler, messaging=messaging)

    # Start order. Stop order is the reverse: IPC stays up while workers drain.
    lock.setServiceParent(root)
    notifier.setServiceParent(root)  # the watchdog's pings go on while the rest drains
    EventLog(bus=bus, directory=paths.events_dir, settings=config.daemon.events).setServiceParent(root)
    store.setServiceParent(root)  # closes after the final state write, which reads it
    heartbeat.setServiceParent(root)
    ipc = IpcServer(
        reactor=reactor,
        socket_path=socket_path,
        pointer_file=None if socket_path == paths.default_socket else paths.socket_pointer,
        factory=IpcFactory(methods, config.daemon.ipc.max_line_bytes, clock=reactor.seconds),
    )
    ipc.setServiceParent(root)
    # Puts back the lock, pid file and socket when they are deleted (inotify, else each heartbeat).
    repair = SelfRepair(
        reactor=reactor,
        directories=list(dict.fromkeys([paths.daemon_dir, paths.aiwg_dir, paths.root, socket_path.parent])),
        files=[paths.lock_file, paths.pid_file, socket_path]
        + ([] if socket_path == paths.default_socket else [paths.socket_pointer]),
        checks=[lock.check, ipc.check_socket],  # the lock's first: it notices a deleted project
        gone=lambda: lock.gone,
    )
    repair.setServiceParent(root)
    # Stops after the supervisor: the outcomes of the tasks a stop ends are still notified.
    messaging.setServiceParent(root)
    supervisor.setServiceParent(root)  # stops before IPC: clients watch the drain
    # Sources of work last: they start once tasks can run and stop first.
    chat.setServiceParent(root)
    automation.setServiceParent(root)
    scheduler.setServiceParent(root)
    watcher.setServiceParent(root)
    return root
