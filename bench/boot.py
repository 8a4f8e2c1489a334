#!/usr/bin/env python3
"""Boot-to-ready and agent round trip, median of several boots (prints numbers).

    .venv/bin/python bench/boot.py [--runs 5] [--kernel RELEASE|PATH] [--accel auto|kvm|tcg]
                                   [--cmdline "extra kernel args"]

Host-side phases: QEMU start -> agent listening (console line) -> SSH up -> agent
answered. Guest-side phases come from the kernel log timestamps: kernel start ->
init -> virtme-ng-init starts the agent (udev settle included).
"""

import argparse
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
AGENT_READY = r"OVH-AGENT-READY \d+ \S+ uptime (\d+\.\d+)"


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
            finally:
                vm.stop()
        rows.append(row)
        print(f"run {i + 1}: ready {row['ready']:.1f} s, round trip {row['rt_ms']:.2f} ms", flush=True)
    med = {k: statistics.median(r[k] for r in rows if k in r) for k in rows[0]}
    print(f"\nkernel {kernel.release}, accel {acc.name} ({acc.reason}), {opts.runs} boots, medians:")
    print(f"  boot-to-ready        {med['ready']:6.1f} s   (QEMU start -> agent answered over SSH)")
    print(f"    agent listening    {med['agent_listening']:6.1f} s")
    print(f"    SSH up             {med['ssh'] - med['agent_listening']:6.1f} s after that")
    print(f"    first answer       {med['ready'] - med['ssh']:6.1f} s after that")
    for name in [*GUEST_MARKS, "agent_ready"]:
        if name in med:
            print(f"  guest clock: {name:12s} at {med[name]:5.1f} s")
    print(f"  agent round trip     {med['rt_ms']:6.2f} ms median, {med['rt95_ms']:.2f} ms p95")


if __name__ == "__main__":
    main()
