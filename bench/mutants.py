#!/usr/bin/env python3
"""Which regressions does the suite catch? Mutation testing of fs/overlayfs (prints a table).

    .venv/bin/python bench/mutants.py                      # every mutant, every case, default kernel
    .venv/bin/python bench/mutants.py -m 003 -m 017 -- -k volatile
    .venv/bin/python bench/mutants.py --kernel 6.1 --stock results/run-X/summary.json

Each patch in mutants/ (a small regression of fs/overlayfs with a header naming the
documented behaviour it breaks) is applied to a pristine copy of the kernel's own
fs/overlayfs (Debian's linux-source of that kernel, fetched into the cache), built
against the kernel's headers and loaded in the guest instead of the stock module
(pytest --overlay-src). A mutant is killed when some case's outcome differs from mutant
zero's, the unmodified source built the same way; mutant zero itself must give exactly
the stock module's outcomes, or the run stops. One suite run per mutant: not part of CI.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from overlay_harness.host import fetch, modbuild  # noqa: E402
from overlay_harness.host import kernel as kernel_mod  # noqa: E402
from overlay_harness.library.devices import FILESYSTEMS  # noqa: E402

FILESYSTEM_IDS = set(FILESYSTEMS)

SEED_AREAS = {"volatile", "errseq", "syncfs", "shared_upper", "metacopy", "lower_changes"}
# --by-area: the cases a mutant of each area is run against (pytest -m): its own marker and
# the areas whose cases walk the same code.
AREA_CASES = {
    "volatile": "volatile or syncfs", "errseq": "errseq or syncfs or volatile",
    "syncfs": "syncfs or volatile or errseq", "shared_upper": "shared_upper or volatile",
    "metacopy": "metacopy", "lower_changes": "lower_changes",
    "whiteout": "whiteout or readdir", "readdir": "readdir or whiteout", "rename": "rename",
    "copyup_metadata": "copyup_metadata", "inode_numbers": "inode_numbers",
    "hardlinks_index": "hardlinks_index",
    "file_operations": "file_operations", "file_handles": "file_handles", "refusals": "refusals",
}


def header(patch):
    """{key: value} of the lines before the diff."""
    fields = {}
    for line in patch.read_text().splitlines():
        if line.startswith(("--- ", "diff ", "Index: ")):
            break
        key, sep, value = line.partition(":")
        if sep and re.fullmatch(r"[A-Z][A-Za-z ]+", key):
            fields[key.strip().lower()] = value.strip()
    return fields


def outcomes(summary_path):
    """{case id (nodeid with the kernel parameter dropped): outcome} of one run."""
    data = json.loads(Path(summary_path).read_text())
    return {r["case"]: r["outcome"] for r in data["results"]}


def run_pytest(args, results_dir, log):
    """One run of the suite; its summary.json path and wall time."""
    results_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--results-dir={results_dir}", *args]
    start = time.monotonic()
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    found = sorted(results_dir.glob("*/summary.json"), key=lambda f: f.stat().st_mtime)
    if not found:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"mutants: pytest {' '.join(args)} wrote no summary.json "
                         f"(exit {p.returncode}):\n{tail}")
    log(f"    {(p.stdout.strip().splitlines() or ['?'])[-1]} ({wall:.0f} s)")
    return found[-1], wall


def killers(base, got):
    """Cases whose outcome differs from mutant zero's: [(case, zero's, mutant's)]."""
    return [(c, base[c], got.get(c, "not run")) for c in base if got.get(c, "not run") != base[c]]


def variant(case):
    """A case run without its upper filesystem: test_x[ext4-upperdir] -> test_x[upperdir],
    so the [ext4] and [xfs] runs of one case function count once."""
    base, sep, params = case.partition("[")
    if not sep:
        return case
    rest = [p for p in params.rstrip("]").split("-") if p not in FILESYSTEM_IDS]
    return f"{base}[{'-'.join(rest)}]" if rest else base


def distinct(k):
    """How many killing case runs differ by more than their upper filesystem, and how many
    case functions they belong to."""
    return len({variant(c) for c, _a, _b in k}), len({c.partition("[")[0] for c, _a, _b in k})


def table(rows, zero_wall):
    """The matrix mutant x outcome as markdown, with the kill ratio, the distinct killing
    variants and case functions, and the time."""
    lines = ["| mutant | area | breaks | verdict | killing case runs | distinct variants / functions "
             "| time |", "|---|---|---|---|---|---|---|"]
    for name, meta, verdict, k, wall, note in rows:
        shown = ", ".join(f"`{c}`" for c, _a, _b in k[:3]) + (f" +{len(k) - 3}" if len(k) > 3 else "")
        variants, functions = distinct(k)
        lines.append(f"| {name} | {meta.get('area', '?')} | {meta.get('breaks', '')} | {verdict} | "
                     f"{len(k)}{': ' + shown if k else ''}{note and ' ' + note[:80]} | "
                     f"{variants} / {functions} | {wall:.0f} s |")
    judged = [r for r in rows if r[2].startswith(("killed", "survived"))]
    killed = [r for r in judged if r[2].startswith("killed")]
    seed = [r for r in judged if r[1].get("area") in SEED_AREAS]
    seed_twice = [r for r in seed if distinct(r[3])[0] >= 2]
    ratio = 100 * len(killed) / max(1, len(judged))
    total = sum(r[4] for r in rows) + (zero_wall or 0)
    zero = f"mutant zero {zero_wall:.0f} s" if zero_wall is not None else "mutant zero from an earlier run"
    lines += ["", f"killed {len(killed)} of {len(judged)} mutants ({ratio:.0f} %); seed areas: "
              f"{sum(1 for r in seed if r[3])} of {len(seed)} killed, {len(seed_twice)} by two or more "
              f"case runs that differ by more than the upper filesystem; "
              f"{sum(1 for r in killed if distinct(r[3])[0] >= 2)} of {len(killed)} killed mutants so; "
              f"{zero}, all runs {total:.0f} s"]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", default=None, help="the kernel under test (default: the default kernel)")
    ap.add_argument("--mutants", default=str(ROOT / "mutants"), help="directory of *.patch")
    ap.add_argument("-m", "--mutant", action="append", default=[],
                    help="only mutants whose file name starts with this (repeatable)")
    ap.add_argument("-n", "--workers", default="2", help="pytest-xdist workers per run (default 2)")
    ap.add_argument("--stock", default=None,
                    help="summary.json of a run of the same cases with the stock module (else run one)")
    ap.add_argument("--zero", default=None,
                    help="summary.json of an earlier mutant zero on the same kernel and cases (else run "
                         "one); checked against the stock results just the same")
    ap.add_argument("--out", default=str(ROOT / "results" / "mutants"), help="where runs and the table go")
    ap.add_argument("--by-area", action="store_true",
                    help="run each mutant only against the cases of its area (AREA_CASES): faster, "
                         "and the table says so")
    ap.add_argument("pytest_args", nargs="*", help="after --: which cases (default: all)")
    args = ap.parse_args()
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    kernel = kernel_mod.resolve(args.kernel)
    pristine = fetch.fetch_source(kernel.release, members=["fs/overlayfs"], log=log) / "fs" / "overlayfs"
    patches = sorted(Path(args.mutants).glob("*.patch"))
    if args.mutant:
        patches = [p for p in patches if any(p.name.startswith(m) for m in args.mutant)]
    if not patches:
        raise SystemExit(f"mutants: no patch in {args.mutants} matches {args.mutant or '*'}")
    if args.by_area:
        unknown = [p.name for p in patches if header(p).get("area") not in AREA_CASES]
        if unknown:
            raise SystemExit(f"mutants: --by-area knows no cases for the Area: of {', '.join(unknown)} "
                             f"(known: {', '.join(AREA_CASES)})")
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    scratch = out / "scratch"
    common = ["-n", args.workers, f"--kernel={args.kernel}" if args.kernel else None, *args.pytest_args]
    common = [a for a in common if a]
    log(f"kernel {kernel.release}; source {pristine}; {len(patches)} mutants; results in {out}")

    if args.stock:
        stock = outcomes(args.stock)
    else:
        log("stock module:")
        stock = outcomes(run_pytest(common, out / "stock", log)[0])
    if args.zero:
        log(f"mutant zero: {args.zero}")
        zero, zero_wall = outcomes(args.zero), None
    else:
        log("mutant zero (the unmodified source, built and substituted):")
        zero_dir = modbuild.patched_copy(pristine, scratch / "tree")
        zero_summary, zero_wall = run_pytest(common + [f"--overlay-src={zero_dir}"], out / "zero", log)
        zero = outcomes(zero_summary)
    differ = killers(stock, zero)
    if differ or set(stock) != set(zero):
        for c, a, b in differ:
            log(f"  {c}: stock {a}, mutant zero {b}")
        raise SystemExit("mutants: mutant zero does not give the stock module's results: stopping")
    log(f"  same {len(zero)} outcomes as the stock module")

    rows = []
    for patch in patches:
        meta = header(patch)
        name = meta.get("mutant", patch.stem)
        log(f"{name} ({meta.get('area', '?')}):")
        try:
            src = modbuild.patched_copy(pristine, scratch / "tree", patch)
        except modbuild.ModuleError as e:
            rows.append((name, meta, "not applied", [], 0.0, str(e)))
            log(f"  {e}")
            continue
        selection = AREA_CASES[meta["area"]] if args.by_area else None
        try:
            narrow = ["-m", selection] if selection else []
            summary, wall = run_pytest(common + [f"--overlay-src={src}", *narrow], out / patch.stem, log)
        except SystemExit as e:   # no summary: the module did not build, or pytest broke
            rows.append((name, meta, "no verdict", [], 0.0, str(e)))
            log(f"  {e}")
            continue
        got = outcomes(summary)
        k = killers({c: o for c, o in zero.items() if c in got}, got)
        verdict = "killed" if k else "survived"
        if k and all(new == "error" for _c, _o, new in k):
            verdict = "killed (errors only)"
        note = f"(of {len(got)} case runs: -m {selection})" if selection else ""
        rows.append((name, meta, verdict, k, wall, note))
        (out / "table.md").write_text(table(rows, zero_wall) + "\n")   # so far: an interrupted run keeps it
        example = f", e.g. {k[0][0]} ({k[0][1]} -> {k[0][2]})" if k else ""
        log(f"  {verdict}: {len(k)} case runs{example}")

    print("\n" + table(rows, zero_wall))
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
