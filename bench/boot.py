#!/usr/bin/env python3
"""Boot-to-ready and agent round trip, median of several boots (prints numbers).

    .venv/bin/python bench/boot.py [--runs 5] [--kernel RELEASE|PATH] [--accel auto|kvm|tcg]
                                   [--cmdline "extra kernel args"]

Host-side phases: QEMU start -> agent listening (console line) -> agent answered
over its virtio-serial port. Guest-side phases come from the kernel log timestamps: kernel start ->
init -> virtme-ng-init starts the agent (udev settle included).
"""

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay_harness.host import accel as accel_mod
from overlay_harness.host import kernel as kernel_mod
from overlay_harness.host.vm import VM
from overlay_harness.library.guest import Guest

GUEST_MARKS = {
    "init": r"Run /init as init process",
    "udev_settle": r"virtme-ng-init: waiting for udev to settle",
    "agent_start": r"virtme-ng-init: starting script",
}
AGENT_READY = r"OVH-AGENT-READY \S+ \S+ uptime (\d+\.\d+)"


def guest_phases(console):
    out = {}
    for name, pattern in GUEST_MARKS.items():
        m = re.search(r"\[\s*(\d+\.\d+)\] " + pattern, console)
        if m:
            out[name] = float(m.group(1))
    m = re.search(AGENT_READY, console)
    if m:
        out["agent_ready"] = float(m.group(1))
    return out


# What one unit of guest work costs, measured inside the guest (python3 -I -S): pure
# emulated CPU, a syscall, a stat and a 1 MiB read on the host's root (9p) and on a
# tmpfs, fork+exit, exec of /bin/true, a python start-up, and faulting in fresh pages.
COST_PROBE = r"""
import json, os, subprocess, sys, time
def per(n, fn):
    t = time.perf_counter(); fn(n); return (time.perf_counter() - t) / n * 1e6
def reads(path, n):
    for _ in range(n):
        with open(path, "rb") as f:
            f.read(1 << 20)
def forks(n):
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
big = sys.executable if os.path.getsize(sys.executable) > (1 << 20) else "/usr/bin/qemu-system-x86_64"
with open("/run/ovh-cost", "wb") as f:
    f.write(os.urandom(1 << 20))
out = {
    "cpu_loop_us": per(200000, lambda n: sum(i * i for i in range(n))),
    "syscall_us": per(20000, lambda n: [os.getppid() for _ in range(n)]),
    "stat_9p_us": per(2000, lambda n: [os.stat("/usr/bin/python3") for _ in range(n)]),
    "stat_tmpfs_us": per(2000, lambda n: [os.stat("/run/ovh-cost") for _ in range(n)]),
    "read_1MiB_9p_us": per(10, lambda n: reads(big, n)),
    "read_1MiB_tmpfs_us": per(10, lambda n: reads("/run/ovh-cost", n)),
    "fork_exit_us": per(50, forks),
    "exec_true_us": per(10, lambda n: [subprocess.run(["/bin/true"]) for _ in range(n)]),
    "python_start_us": per(3, lambda n: [subprocess.run([sys.executable, "-c", "pass"]) for _ in range(n)]),
    "fault_4KiB_us": per(20000, lambda n: bytearray(n * 4096) and None),
}
os.unlink("/run/ovh-cost")
print(json.dumps(out))
"""


def guest_costs(guest):
    res = guest.run(["/usr/bin/python3", "-I", "-S", "-c", COST_PROBE], timeout=600)
    return json.loads(res.stdout)


def round_trips(guest, n=500):
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        guest.agent.request("ping")
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000, sorted(samples)[int(n * 0.95)] * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--kernel")
    ap.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"])
    ap.add_argument("--cmdline", default=None, help="extra kernel command line (default: the harness's)")
    ap.add_argument("--memory", default="2G")
    ap.add_argument("--costs", action="store_true",
                    help="also what a syscall, a 9p stat/read, a fork, an exec... cost in the guest")
    opts = ap.parse_args()
    kernel = kernel_mod.resolve(opts.kernel)
    acc = accel_mod.resolve(opts.accel, kernel)
    cmdline = opts.cmdline.split() if opts.cmdline is not None else None
    rows = []
    for i in range(opts.runs):
        with tempfile.TemporaryDirectory(prefix="ovh-bench-") as tmp:
            vm = VM(kernel, acc, Path(tmp), memory=opts.memory, name=f"ovh-bench-{i}", cmdline=cmdline)
            try:
                vm.start()
                rt, rt95 = round_trips(Guest(vm.agent))
                row = dict(vm.timings, rt_ms=rt, rt95_ms=rt95, **guest_phases(vm.console_log.read_text()))
                if opts.costs:
                    row.update(guest_costs(Guest(vm.agent)))
            finally:
                vm.stop()
        rows.append(row)
        print(f"run {i + 1}: ready {row['ready']:.1f} s, round trip {row['rt_ms']:.2f} ms", flush=True)
    med = {k: statistics.median(r[k] for r in rows if k in r) for k in rows[0]}
    print(f"\nkernel {kernel.release}, accel {acc.name} ({acc.reason}), {opts.runs} boots, medians:")
    print(f"  boot-to-ready        {med['ready']:6.1f} s   (QEMU start -> agent answered)")
    print(f"    agent listening    {med['agent_listening']:6.1f} s")
    print(f"    first answer       {med['ready'] - med['agent_listening']:6.1f} s after that")
    for name in [*GUEST_MARKS, "agent_ready"]:
        if name in med:
            print(f"  guest clock: {name:12s} at {med[name]:5.1f} s")
    print(f"  agent round trip     {med['rt_ms']:6.2f} ms median, {med['rt95_ms']:.2f} ms p95")
    for name in (k for k in med if k.endswith("_us")):
        print(f"  in the guest: {name[:-3]:18s} {med[name]:10.1f} us")


if __name__ == "__main__":
    main()
