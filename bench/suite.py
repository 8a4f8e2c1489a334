#!/usr/bin/env python3
"""Whole-suite speed (prints numbers): the suite with 1 and 2 workers, where each
case's time goes, and the same scenarios run the obvious way, one `vng --exec`
boot per scenario, for the ratio.

    .venv/bin/python bench/suite.py [--sample 6] [--workers 1 2] [pytest args...]

The obvious way is measured on a sample of the suite's own cases: each case's
reproducer (its exact syscall sequence, written by --save-reproducers) runs in a
fresh `vng --run KERNEL --disable-kvm --force-9p --exec 'python3 repro.py'`; the
mean per scenario times the number of cases estimates that suite's wall time.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def run_suite(workers, extra):
    args = PYTEST + ["--save-reproducers"] + (["-n", str(workers)] if workers > 1 else []) + extra
    start = time.monotonic()
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    tail = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr[-300:]
    m = re.search(r"results: (\S+)/summary\.json", p.stdout)
    run_dir = Path(m.group(1)) if m else None
    return wall, tail, run_dir, p.returncode


def median(values):
    return statistics.median(values) if values else 0.0


def obvious_way(repros, kernel_arg):
    from overlay_harness.host.vng import vng_command, vng_env
    vng = vng_command()
    env = vng_env(vng)
    times = []
    for repro in repros:
        start = time.monotonic()
        p = subprocess.run([vng, "--run", kernel_arg, "--disable-kvm", "--force-9p", "--memory", "2G",
                            "--exec", f"/usr/bin/python3 {repro}"], cwd=ROOT, capture_output=True,
                           timeout=600, stdin=subprocess.DEVNULL, env=env)
        times.append(time.monotonic() - start)
        # the reproducer prints one line per call: a clean exit after them is a scenario run
        calls = sum(1 for line in p.stdout.decode(errors="replace").splitlines() if " -> " in line)
        print(f"  one boot for {repro.name}: {times[-1]:.1f} s (exit {p.returncode}, {calls} calls)",
              flush=True)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, default=6, help="scenarios to run the obvious way")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    opts, extra = ap.parse_known_args()
    sys.path.insert(0, str(ROOT))
    from overlay_harness.host import kernel as kernel_mod
    kernel = kernel_mod.resolve(next((a.split("=", 1)[1] for a in extra if a.startswith("--kernel=")), None))

    results = {}
    for workers in opts.workers:
        print(f"suite with {workers} worker(s) ...", flush=True)
        results[workers] = run_suite(workers, extra)
        print(f"  {results[workers][1]}  ({results[workers][0]:.0f} s)", flush=True)

    wall1, _tail, run_dir, _rc = results[opts.workers[0]]
    timing = json.loads((run_dir / "timing.json").read_text())
    phases = timing["phases_s"]
    n_cases = len(phases["call"])
    overhead = [s + t for s, t in zip(phases["setup"], phases["teardown"], strict=True)]
    repros = sorted((run_dir / "reproducers").glob("*.py"))
    step = max(1, len(repros) // max(1, opts.sample))
    sample = repros[::step][:opts.sample]
    print(f"the obvious way, {len(sample)} of {len(repros)} scenarios ...", flush=True)
    naive = obvious_way(sample, kernel.run_arg)

    naive_suite = statistics.mean(naive) * n_cases
    accel = json.loads((run_dir / "summary.json").read_text()).get("accel") or {}
    print(f"\nkernel {kernel.release}, harness accel {accel.get('name', '?')} "
          f"({accel.get('reason', '')}), the obvious way under TCG; {n_cases} cases")
    for workers, (wall, tail, _d, rc) in results.items():
        print(f"  full suite, {workers} worker(s): {wall / 60:5.1f} min  ({tail}; exit {rc})")
    print(f"  VM boots: {len(timing['boots_s'])}, median {median(timing['boots_s']):.1f} s to ready")
    print(f"  per-case overhead (set-up + teardown, boots excluded): median {median(overhead):.2f} s, "
          f"body median {median(phases['call']):.2f} s")
    print(f"  one vng --exec boot per scenario: mean {statistics.mean(naive):.1f} s -> "
          f"{naive_suite / 60:.1f} min for {n_cases} cases")
    print(f"  ratio (obvious way / this harness, {opts.workers[0]} worker): {naive_suite / wall1:.1f}x")
    if len(results) > 1:
        best = min(r[0] for r in results.values())
        print(f"  ratio (obvious way / this harness, best): {naive_suite / best:.1f}x")


if __name__ == "__main__":
    main()
