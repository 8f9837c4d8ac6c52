"""Tasks, run: the durable store, the supervisor and its slots, agent processes,
loops, approvals, and the reaping of what agents leave behind."""
