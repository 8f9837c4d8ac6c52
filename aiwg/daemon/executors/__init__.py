"""Where tasks run: the local executor (the supervisor's own processes) and the
remote ones (remote.RemoteExecutor, through a broker to `aiwg worker`s)."""
