"""Chat soak: the daemon's memory over 10,000 chat turns, beside its own starting RSS.

    .venv/bin/python bench/chat.py [--turns N] [--json]

The agent is a tiny shell script that answers at once with a claude-like JSON
result carrying a new session id, so every follow-up turn resumes a session and
the daemon records the latest one. Turns go to 100 conversations in rotation
(100 turns each, so each reaches chat.max_turns), with at most 8 in flight; the daemon's RSS (VmRSS) is sampled
after start, after a 200-turn warm-up, and every 1,000 turns. Target (from the
project's issue): the RSS at the end within 10 MB of the starting value.
Only a Unix socket and local processes are used.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import rss_mib  # noqa: E402
from tasks import AGENT_ENV, Daemon  # noqa: E402

AGENT = """#!/bin/sh
printf '{"type":"result","subtype":"success","is_error":false,"result":"ok %s","session_id":"s-%s","total_cost_usd":0,"num_turns":1}\\n' "$$" "$$"
"""
IN_FLIGHT = 8
CONVERSATIONS = 100


def soak(turns: int) -> dict:
    script_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"aiwg-chat-agent-{os.getpid()}"
    script_dir.mkdir(exist_ok=True)
    agent = script_dir / "agent"
    agent.write_text(AGENT)
    agent.chmod(agent.stat().st_mode | stat.S_IXUSR)
    daemon = Daemon({
        "daemon": {"max_parallel_actions": 4},
        "agent": {"command": [str(agent), "-p", "{prompt}"], "output": "claude-json"},
    }, env=AGENT_ENV)
    samples: list[tuple[int, float]] = []
    try:
        daemon.start()
        pid = daemon.pid()
        samples.append((0, rss_mib(pid)))
        with daemon.client() as events, daemon.client() as client:
            events.subscribe(["task:completed", "task:failed", "task:cancelled", "task:timeout"])
            events.timeout = 60
            conversations: list[str | None] = [None] * CONVERSATIONS
            waiting: set[str] = set()
            done = failed = 0
            started = time.perf_counter()
            for turn in range(turns):
                slot = turn % CONVERSATIONS
                params = {"message": f"turn {turn}: how is it going?"}
                if conversations[slot]:
                    params["conversation"] = conversations[slot]
                reply = client.request("chat.send", params)
                conversations[slot] = reply["conversation"]
                waiting.add(reply["taskId"])
                while len(waiting) >= IN_FLIGHT or (turn == turns - 1 and waiting):
                    for event in events.events(timeout=60):
                        payload = event.get("payload") or {}
                        if payload.get("taskId") in waiting:
                            waiting.discard(payload["taskId"])
                            done += 1
                            failed += event["topic"] != "task:completed"
                            break
                    else:
                        raise RuntimeError(f"no turn ended within 60 s ({len(waiting)} in flight)")
                if turn + 1 == 200 or (turn + 1) % 1000 == 0:
                    samples.append((turn + 1, rss_mib(pid)))
            elapsed = time.perf_counter() - started
            status = client.call("daemon.status")["subsystems"].get("chat", {})
            resumed = client.call("chat.history", conversation=conversations[0])
        return {"turns": turns, "failed": failed, "seconds": elapsed, "turns_per_s": turns / elapsed,
                "rss_mb": samples, "start_mb": samples[0][1], "end_mb": samples[-1][1],
                "growth_mb": samples[-1][1] - samples[0][1], "conversations": status.get("conversations"),
                "first_conversation_turns": len(resumed["history"]), "session": resumed["sessionId"]}
    finally:
        daemon.cleanup()
        agent.unlink(missing_ok=True)
        script_dir.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = soak(args.turns)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"chat soak: {result['turns']} turns in {result['seconds']:.1f} s "
          f"({result['turns_per_s']:.0f}/s), {result['failed']} failed")
    for turn, mb in result["rss_mb"]:
        print(f"  after {turn:>6} turns: RSS {mb:6.1f} MB")
    ok = result["growth_mb"] <= 10
    print(f"RSS growth {result['growth_mb']:+.1f} MB over the starting {result['start_mb']:.1f} MB "
          f"({result['end_mb'] / result['start_mb']:.2f}×): {'PASS' if ok else 'FAIL'} (target ≤ 10 MB)")
    print(f"open conversations {result['conversations']}; the first kept {result['first_conversation_turns']} "
          f"turns and resumes session {result['session']}")


if __name__ == "__main__":
    main()
