"""A patch series, patch by patch: which patch changed which case.

    python -m overlay_harness.series PATCH... [-- PYTEST_ARGS]
    python -m overlay_harness.series series.mbx --kernel 6.1 -n 2 -- -k volatile --upper-fs ext4

The series (git format-patch files, one b4 mbox, or diffs, in order; host/series.py) is
tested cumulatively: patch 1, then 1-2, ... each step one `pytest --overlay-patch ...`
run with the same arguments, against the same baseline (the source without the series,
run once and then cached: plugin/series.py). The module builds are incremental (one
work directory per kernel release), so a step recompiles only what its patch changed.
The output is a table, patch x the cases it changed, naming for each case the first
patch that changed its outcome (and any later one that changed it again); per-patch.md
and per-patch.json hold it, beside each step's results. Exit status 1 when the whole
series regresses against the baseline, 0 when it does not, 2 when the series cannot be
tested (a patch that does not apply or touches files outside fs/overlayfs: named).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .host import series as series_mod
from .results.model import change


def steps_of(series):
    """The cumulative steps: [[patch 1], [patch 1, patch 2], ...] (their files)."""
    return [[p.file for p in series.patches[:i + 1]] for i in range(len(series.patches))]


def run_step(files, args, results, log):
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--results-dir={results}",
            *[f"--overlay-patch={f}" for f in files], *args]
    start = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    found = sorted(Path(results).glob("run-*/summary.json"), key=lambda f: f.stat().st_mtime)
    if p.returncode in (2, 3, 4) or not found:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"series: pytest with patches 1-{len(files)} gave no verdict "
                         f"(exit {p.returncode}):\n{tail}")
    log(f"    {(p.stdout.strip().splitlines() or ['?'])[-1]} ({wall:.0f} s)")
    return json.loads(found[-1].read_text()), p.returncode, wall


def changes(baseline, steps):
    """{(case, kernel): {"baseline", "steps": [outcome per step], "events": [{patch, from, to,
    change}]}} of every case whose outcome changed at some step (steps: the summaries)."""
    outcomes = [{(r["case"], r["kernel"]): r["outcome"] for r in s["results"]} for s in steps]
    keys = list(dict.fromkeys(k for o in outcomes for k in o))
    found = {}
    for key in keys:
        before, events = baseline.get(key), []
        row = [o.get(key) for o in outcomes]
        for i, now in enumerate(row):
            if now is not None and now != before:
                events.append({"patch": i + 1, "from": before, "to": now, "change": str(change(before, now))})
            before = now if now is not None else before
        if events:
            found[key] = {"baseline": baseline.get(key), "steps": row, "events": events}
    return found


def table(series, steps, found):
    """Markdown: patch x the cases it changed; then case x step, with the first patch that
    changed each case."""
    lines = ["| patch | subject | regressions against the baseline (cumulative) | cases it changed |",
             "|---|---|---|---|"]
    for i, (p, s) in enumerate(zip(series.patches, steps, strict=True)):
        mine = [(key, e) for key, v in found.items() for e in v["events"] if e["patch"] == i + 1]
        shown = "; ".join(f"`{c}` {e['from'] or 'not run'} → {e['to']} ({e['change']})"
                          for (c, _k), e in mine)
        regs = len((s.get("against_baseline") or {}).get("regressions", []))
        lines.append(f"| {i + 1} | {p.subject} | {regs} | {shown or 'none'} |")
    heads = " | ".join(f"1-{i + 1}" if i else "1" for i in range(len(steps)))
    lines += ["", f"| case | kernel | baseline | {heads} | first changed by |",
              "|---|---|---|" + "---|" * len(steps) + "---|"]
    for (case, kernel), v in found.items():
        first = v["events"][0]
        later = "".join(f", then patch {e['patch']} ({e['change']})" for e in v["events"][1:])
        lines.append(f"| `{case}` | {kernel} | {v['baseline'] or 'not run'} | "
                     + " | ".join(o or "-" for o in v["steps"])
                     + f" | patch {first['patch']} ({first['change']}){later} |")
    if not found:
        lines.append("| (no case changed at any step) |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m overlay_harness.series",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("patches", nargs="+",
                    help="the series: format-patch files, an mbox, or diffs, in order")
    ap.add_argument("--kernel", action="append", default=[],
                    help="the kernel(s) under test (pytest --kernel)")
    ap.add_argument("--overlay-src", default=None,
                    help="the base to patch (default: the kernel's own source)")
    ap.add_argument("-n", "--workers", default="2", help="pytest-xdist workers per step (default 2)")
    ap.add_argument("--out", default=None, help="where the steps' results and the table go "
                    "(default results/series/<time>)")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = ap.parse_known_args(argv[:cut])
    pytest_args = extra + argv[cut + 1:]
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    out = Path(args.out or Path("results") / "series" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    try:
        series = series_mod.read(args.patches, out / "patches")
        series_mod.check_paths(series)
    except series_mod.SeriesError as e:
        print(f"series: {e}", file=sys.stderr)
        return 2
    common = [f"--kernel={k}" for k in args.kernel] + (
        [f"--overlay-src={args.overlay_src}"] if args.overlay_src else [])
    common += ["-n", args.workers, *pytest_args]
    log(f"series: {len(series.patches)} patches (patchset hash {series.patchset_hash[:16]}), "
        f"cases: {' '.join(pytest_args) or 'all'}; results in {out}")
    summaries, rows, start = [], [], time.monotonic()
    for i, files in enumerate(steps_of(series)):
        log(f"  patches 1-{i + 1}: {series.patches[i].subject}")
        summary, rc, wall = run_step(files, common, out / "steps", log)
        summaries.append(summary)
        build = summary.get("module_build") or {}
        rows.append({"patch": i + 1, "subject": series.patches[i].subject, "exit_status": rc,
                     "wall_s": round(wall, 1), "module_build_s": build.get("duration"),
                     "summary": str(Path(summary["run_dir"]) / "summary.json"),
                     "check": summary.get("check"),
                     "regressions_against_baseline": len(summary["against_baseline"]["regressions"])})
    base_meta = summaries[0].get("baseline") or {}
    baseline = {(r["case"], r["kernel"]): r["outcome"]
                for r in json.loads(Path(base_meta["summary"]).read_text())["results"]}
    found = changes(baseline, summaries)
    text = table(series, summaries, found)
    total = time.monotonic() - start
    record = {"series": {"patchset_hash": series.patchset_hash, "message_id": series.message_id,
                         "patches": [p.to_json() for p in series.patches]},
              "baseline": base_meta, "steps": rows, "wall_s": round(total, 1),
              "cases": [{"case": c, "kernel": k, **v} for (c, k), v in found.items()]}
    (out / "per-patch.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "per-patch.md").write_text(text + "\n")
    print("\n" + text)
    print(f"\nseries: {len(rows)} steps in {total:.0f} s (baseline "
          f"{'cached' if base_meta.get('cached') else 'run in step 1'}); {out / 'per-patch.md'}")
    final = summaries[-1]["against_baseline"]["regressions"]
    return 1 if final else 0


if __name__ == "__main__":
    sys.exit(main())
