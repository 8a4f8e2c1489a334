#!/usr/bin/env python3
"""From an edited fs/overlayfs to a verdict (prints numbers): the module route beside the
full-kernel route.

    .venv/bin/python bench/patch_loop.py                     # -k volatile on the default kernel
    .venv/bin/python bench/patch_loop.py --runs 3 --edit mutants/001-....patch -- -k volatile
    .venv/bin/python bench/patch_loop.py --tree ~/src/linux  # also one full-kernel bisect step

Module route: a copy of the kernel's own fs/overlayfs (Debian's linux-source, fetched into
the cache) gets the edit (a patch, or by default a comment added to super.c, so the build
is real), then one `pytest --overlay-src DIR -n 2 ARGS` builds overlay.ko against the
kernel's headers, boots the kernel, loads the module and runs the cases. The figures come
from that run: module build (summary.json), boots (timing.json; two VMs boot side by
side), the cases, and the wall time from the start of pytest to its verdict.

Full-kernel route (--tree): `python -m harness.bisect` on a kernel tree, which configures,
builds the whole kernel and runs the same cases.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from overlay_harness.host import fetch, modbuild  # noqa: E402
from overlay_harness.host import kernel as kernel_mod  # noqa: E402


def edited_copy(pristine, scratch, patch):
    """The kernel's fs/overlayfs with the edit: `patch`, or a comment added to super.c."""
    src = modbuild.patched_copy(pristine, scratch / "tree", patch)
    if not patch:
        with open(src / "super.c", "a") as f:
            f.write(f"/* patch loop benchmark edit {time.time()} */\n")
    return src


def module_route(src, kernel_arg, pytest_args, results):
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
            f"--overlay-src={src}", f"--results-dir={results}", *pytest_args]
    if kernel_arg:
        argv.append(f"--kernel={kernel_arg}")
    start = time.monotonic()
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    run_dir = max(results.glob("run-*"), key=lambda d: d.stat().st_mtime)
    summary = json.loads((run_dir / "summary.json").read_text())
    timing = json.loads((run_dir / "timing.json").read_text())
    module = summary["kernels"][0]["overlay_module"]
    return {
        "wall": wall, "build": module["build_s"], "boot_max": max(timing["boots_s"]),
        "boots": len(timing["boots_s"]), "cases": len(summary["results"]),
        "case_time": sum(sum(v) for v in timing["phases_s"].values()),
        "verdict": (p.stdout.strip().splitlines() or ["?"])[-1], "rc": p.returncode,
    }


def full_kernel_route(tree, pytest_args):
    argv = [sys.executable, "-m", "overlay_harness.bisect", "--jobs", "2", *pytest_args]
    start = time.monotonic()
    p = subprocess.run(argv, cwd=tree)
    return time.monotonic() - start, p.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", default=None, help="kernel under test (default: the default kernel)")
    ap.add_argument("--edit", default=None, help="a patch to apply as the edit (-p1, kernel-tree paths)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tree", default=None, help="also time one full-kernel bisect step on this tree")
    ap.add_argument("pytest_args", nargs="*", help="after --: the cases (default: -k volatile)")
    args = ap.parse_args()
    pytest_args = args.pytest_args or ["-k", "volatile"]
    kernel = kernel_mod.resolve(args.kernel)
    pristine = fetch.fetch_source(kernel.release, members=["fs/overlayfs"]) / "fs" / "overlayfs"
    out = ROOT / "results" / "patch-loop" / time.strftime("%Y%m%d-%H%M%S")
    rows = []
    for i in range(args.runs):
        src = edited_copy(pristine, out / "scratch", args.edit)
        r = module_route(src, args.kernel, pytest_args, out / f"run{i}")
        rows.append(r)
        print(f"run {i + 1}: edit -> verdict {r['wall']:.1f} s (module build {r['build']:.1f} s, "
              f"slowest of {r['boots']} boots {r['boot_max']:.1f} s, {r['cases']} cases "
              f"{r['case_time']:.1f} s of VM time); {r['verdict']}", flush=True)
    walls = sorted(r["wall"] for r in rows)
    print(f"\nmodule route on {kernel.release}, {' '.join(pytest_args)}: edit -> verdict "
          f"min {walls[0]:.1f} s, median {statistics.median(walls):.1f} s, max {walls[-1]:.1f} s "
          f"over {len(rows)} run(s); module build median "
          f"{statistics.median(r['build'] for r in rows):.1f} s")
    if args.tree:
        wall, rc = full_kernel_route(Path(args.tree).expanduser(), pytest_args)
        print(f"full-kernel route on {args.tree}: one harness.bisect step {wall:.0f} s (exit {rc})")
    else:
        print("full-kernel route: not run (--tree TREE times one harness.bisect step: configure, "
              "build the whole kernel, boot, the same cases)")
    shutil.rmtree(out / "scratch", ignore_errors=True)


if __name__ == "__main__":
    main()
