"""A stand-in for the `claude` CLI, installed first on PATH by the tests.

It records how it was run (argv, cwd, env, process group, whether stdin is
/dev/null) to $FAKE_CLAUDE_RECORDS/<pid>.json, then obeys directives found in
the prompt (after `--`, or the argument after -p):

  @sleep:S        sleep S seconds (in small steps, so signals land promptly)
  @until:NAME     before anything else, wait (30 s at most) for <records>/NAME to exist
  @exit:N         exit with status N
  @ignore-term    ignore SIGTERM (only SIGKILL stops it)
  @grandchild     start a grandchild that writes its pid to <records>/<pid>.grandchild and sleeps
  @print:N        print N lines of filler output
  @stderr:TEXT    write TEXT to stderr
  @result:TEXT    the result text (default: "done: <prompt>")
  @error          report is_error in the JSON result
  @session:ID     report this session id (default: "sess-<pid>")
  @cost:X         report total_cost_usd X (default 0.01)
  @env:NAME       print the value of environment variable NAME
  @env-json:NAME  print that value JSON-escaped, on stdout and on stderr
  @result-env:NAME  the result text is that value (JSON-escaped in the JSON reply)
  @orphan         leave a grandchild that ignores SIGTERM and closed its stdio (<pid>.orphan)
  @escape         leave a grandchild that called setsid and closed its stdio (<pid>.escaped)
  @escape-holding leave a grandchild that called setsid but keeps stdout open (<pid>.holder)
  @unicode:N      print N copies of "é" (two bytes each) and a newline
  @write:F=TEXT   write TEXT and a newline to file F (relative to its cwd), replacing it
  @append:F=TEXT  add TEXT and a newline to the end of file F (both before any sleep)
  @vanish         escape completely: fork twice, setsid, close every descriptor, and exec
                  `sleep 600` with an empty environment (no AIWG_TASK_ID); <pid>.vanished

With `--output-format json` it prints one JSON result object like claude's. With
`--resume ID` the result says which session it resumed ("resumed ID: …") and, like
claude, reports a new session id for the continued conversation.
"""

import json
import os
import signal
import sys
import time


def main() -> int:
    argv = sys.argv[1:]
    records = os.environ.get("FAKE_CLAUDE_RECORDS", "/tmp")
    prompt = ""
    joined = [a.split("=", 1)[1] for a in argv if a.startswith(("--message=", "--prompt="))]
    if joined:  # aider's and gemini's documented templates give it as an option's value
        prompt = joined[0]
    elif "--" in argv:  # what ends the options, as for the real CLI's parser
        index = argv.index("--")
        prompt = " ".join(argv[index + 1:])
        argv = argv[:index]
    elif "-p" in argv:
        index = argv.index("-p")
        if index + 1 < len(argv):
            prompt = argv[index + 1]
    try:
        stdin_target = os.readlink("/proc/self/fd/0")
    except OSError:
        stdin_target = None
    resumed = None
    if "--resume" in argv and argv.index("--resume") + 1 < len(argv):
        resumed = argv[argv.index("--resume") + 1]
    record = {
        "resumed": resumed,
        "argv": sys.argv,
        "prompt": prompt,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "stdin": stdin_target,
        "started": time.time(),
    }
    path = os.path.join(records, f"{os.getpid()}.json")
    with open(path, "w") as handle:
        json.dump(record, handle)

    parent = os.getpid()
    words = prompt.split()
    directives = {}
    for word in words:
        if word.startswith("@"):
            name, _, value = word[1:].partition(":")
            directives[name] = value
    if "until" in directives:
        deadline = time.time() + 30
        while not os.path.exists(os.path.join(records, directives["until"])) and time.time() < deadline:
            time.sleep(0.02)
    for kind, mode in (("write", "w"), ("append", "a")):
        if kind in directives:
            name, _, text = directives[kind].partition("=")
            os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
            with open(name, mode) as handle:
                handle.write(text + "\n")
    if "ignore-term" in directives:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "grandchild" in directives:
        child = os.fork()
        if child == 0:
            with open(os.path.join(records, f"{os.getppid()}.grandchild"), "w") as handle:
                handle.write(str(os.getpid()))
            signal.signal(signal.SIGTERM, signal.SIG_IGN) if "ignore-term" in directives else None
            time.sleep(600)
            os._exit(0)
    for kind, suffix in (("orphan", "orphan"), ("escape", "escaped"), ("escape-holding", "holder")):
        if kind not in directives:
            continue
        sys.stdout.flush()
        child = os.fork()
        if child == 0:
            if kind in ("escape", "escape-holding"):
                os.setsid()
            if kind == "orphan":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if kind != "escape-holding":
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
            with open(os.path.join(records, f"{os.getppid()}.{suffix}"), "w") as handle:
                handle.write(str(os.getpid()))
            time.sleep(600)
            os._exit(0)
        deadline = time.time() + 5
        while not os.path.exists(os.path.join(records, f"{os.getpid()}.{suffix}")) and time.time() < deadline:
            time.sleep(0.01)
    if "vanish" in directives:
        sys.stdout.flush()
        middle = os.fork()
        if middle == 0:
            os.setsid()
            if os.fork() == 0:
                marker = os.path.join(records, f"{parent}.vanished")
                with open(marker + ".part", "w") as handle:
                    handle.write(str(os.getpid()))
                os.rename(marker + ".part", marker)
                os.closerange(0, 1024)
                os.execve("/bin/sleep", ["sleep", "600"], {})
            os._exit(0)
        os.waitpid(middle, 0)
        deadline = time.time() + 5
        while not os.path.exists(os.path.join(records, f"{parent}.vanished")) and time.time() < deadline:
            time.sleep(0.01)
    if "unicode" in directives:
        sys.stdout.write("é" * int(directives["unicode"]) + "\n")
    for _ in range(int(directives.get("print", "0") or 0)):
        sys.stdout.write("filler output line " + "x" * 60 + "\n")
    if "env" in directives:
        print(os.environ.get(directives["env"], ""))
    if "env-json" in directives:
        escaped = json.dumps(os.environ.get(directives["env-json"], ""))
        print(escaped)
        sys.stderr.write(escaped + "\n")
    if "result-env" in directives:
        directives["result"] = "the value is " + os.environ.get(directives["result-env"], "")
    if "stderr" in directives:
        sys.stderr.write(directives["stderr"] + "\n")
    sys.stdout.flush()
    deadline = time.time() + float(directives.get("sleep", "0") or 0)
    while time.time() < deadline:
        time.sleep(0.02)
    if "--output-format" in argv and argv[argv.index("--output-format") + 1] == "json":
        result = {
            "type": "result",
            "subtype": "error_during_execution" if "error" in directives else "success",
            "is_error": "error" in directives,
            "result": (f"resumed {resumed}: " if resumed else "") + (directives.get("result") or f"done: {prompt}"),
            "session_id": directives.get("session") or f"sess-{os.getpid()}",
            "total_cost_usd": float(directives.get("cost") or 0.01),
            "num_turns": 1,
        }
        print(json.dumps(result))
    else:
        print(directives.get("result") or f"done: {prompt}")
    sys.stdout.flush()
    record["ended"] = time.time()
    with open(path, "w") as handle:
        json.dump(record, handle)
    return int(directives.get("exit", "0") or 0)


if __name__ == "__main__":
    sys.exit(main())
