"""Run a command (vng) so that it cannot outlive the process that started us.

    python -m overlay_harness.reaper --parent PID --pgid-file F --log L -- vng ...

The command's stdout and stderr go through a pipe that we append to the log
file: QEMU reopens /proc/self/fd/1 and /proc/self/fd/2 for its chardevs, and
on a regular file each reopen truncates it and writes at its own offset,
overwriting the other's lines. A pipe keeps one ordered stream.

The command runs in a process group of its own. When our parent dies (even by
SIGKILL: the kernel sends us SIGTERM through PR_SET_PDEATHSIG, and we also
poll getppid), or when we get SIGTERM/SIGINT/SIGHUP, the whole group (vng,
virtme-run, QEMU) gets SIGTERM, then SIGKILL. Our exit status is the command's.
"""

import argparse
import ctypes
import os
import select
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def kill_group(child, grace=3.0):
    """SIGTERM the child's process group, then SIGKILL whatever is left after `grace` s."""
    pgid = child.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        child.poll()  # reap the leader: a zombie still counts as a member of the group
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--pgid-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    opts = ap.parse_args(argv)
    cmd = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    stop = []

    def on_signal(signum, _frame):
        stop.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != opts.parent:  # the parent died before prctl took effect
        return 1

    log = open(opts.log, "ab", buffering=0)
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    with open(opts.pgid_file, "w") as f:
        f.write(f"{child.pid}\n")
    out = child.stdout.fileno()
    killed = False
    while True:
        if not killed and (stop or os.getppid() != opts.parent):
            kill_group(child)
            killed = True
        ready, _, _ = select.select([out], [], [], 0.2)
        if ready:
            data = os.read(out, 65536)
            if not data:  # every writer is gone
                break
            log.write(data)
    child.wait()
    # Whatever the command left in its group goes too.
    kill_group(child, grace=1.0)
    log.close()
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
