"""Finding the harness's own processes on the host (for the harness's tests)."""

import os
import time


def processes_matching(*needles):
    """PIDs of processes whose command line contains every one of `needles`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if cmd and all(n.encode() in cmd for n in needles):
            found.append(int(pid))
    return found


def qemu_processes(name):
    """QEMU processes of the VM called `name`."""
    return [p for p in processes_matching("qemu-system-x86_64", f"-name {name} ")
            if p != os.getpid()]


def wait_for(predicate, timeout=10.0, interval=0.1):
    """Poll `predicate` until it is true (True) or `timeout` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
