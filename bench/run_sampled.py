#!/usr/bin/env python3
"""Runs a command and measures CPU use while it runs.

    run_sampled.py --report FILE [--watch NAME=PID ...] [--interval SECS] -- COMMAND ARGS...

The command inherits stdin, stdout and stderr; this script exits with its exit status. When the
command ends, FILE gets one line per process, "NAME AVG_PCT MAX_PCT":

- "client": the command itself, from its resource usage (wait4), so exact; MAX_PCT is "-".
- each watched process: AVG_PCT from its utime+stime before and after the command, MAX_PCT the
  busiest sampling interval. 100 means one core fully busy; on 2 cores the most is 200.

A watched process that has exited reports "-".
"""

import argparse
import os
import signal
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def ticks(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--report", required=True)
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PID")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    watched = []
    for item in args.watch:
        name, _, pid = item.partition("=")
        watched.append((name, int(pid)))

    first = {pid: ticks(pid) for _, pid in watched}
    last = dict(first)
    peak = {pid: 0.0 for _, pid in watched}
    start = time.monotonic()
    mark = start
    child = subprocess.Popen(command)
    # Forward Ctrl-C / SIGTERM to the child, then let the normal path report.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    status = None
    rusage = None
    while status is None:
        # Poll the child often (so the end is seen within ~20 ms), sample every --interval.
        time.sleep(0.02)
        pid, wstatus, ru = os.wait4(child.pid, os.WNOHANG)
        now = time.monotonic()
        if pid or now - mark >= args.interval:
            for _, wpid in watched:
                t = ticks(wpid)
                if t is not None and last[wpid] is not None and now - mark >= args.interval:
                    peak[wpid] = max(peak[wpid], (t - last[wpid]) / HZ / (now - mark) * 100)
                last[wpid] = t
            mark = now
        if pid:
            status = os.waitstatus_to_exitcode(wstatus)
            rusage = ru
    elapsed = time.monotonic() - start
    lines = [
        "client %.0f -" % ((rusage.ru_utime + rusage.ru_stime) / elapsed * 100 if elapsed > 0 else 0)
    ]
    for name, wpid in watched:
        if first[wpid] is None or last[wpid] is None:
            lines.append(f"{name} - -")
        else:
            avg = (last[wpid] - first[wpid]) / HZ / elapsed * 100
            lines.append("%s %.0f %.0f" % (name, avg, max(peak[wpid], avg)))
    with open(args.report, "w") as f:
        f.write("\n".join(lines) + "\n")
    sys.exit(status if status >= 0 else 128 - status)


if __name__ == "__main__":
    main()
