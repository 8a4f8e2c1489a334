"""Merge summary.json files (one kernel each, as CI's jobs produce them) into one case x
kernel table; exit 1 on regressions.

    python -m overlay_harness.report SUMMARY.json... [--markdown | --by-case] [--html FILE]

The parts of a sharded run (--shard I/N on several machines) and runs of other machines,
checked to be one run (results/merge.py) and written as one summary.json, report.html,
table.md, kcidb.json (KCIDB v5.3) and durations.json; exit 2 on a conflict (each on a
line of its own), 1 on regressions:

    python -m overlay_harness.report merge DIR... [--out DIR] [--markdown] [--origin NAME]
"""

import argparse
import json
import sys
from pathlib import Path

from .results import kcidb
from .results import merge as merge_mod
from .results.model import Results
from .results.render import (
    by_case_markdown,
    html_page,
    markdown_table,
    regression_line,
    text_table,
    timing_by_kernel,
)


def merged_timing(paths, summaries):
    """The times per kernel of every summary's timing.json (beside it), or None."""
    per_kernel = {}
    for path, summary in zip(paths, summaries, strict=True):
        timing = path.with_name("timing.json")
        if timing.is_file():
            labels = [k["label"] for k in summary["kernels"]]
            per_kernel.update(timing_by_kernel(json.loads(timing.read_text()), labels))
    return {"kernels": per_kernel} if per_kernel else None


def merge_main(argv):
    ap = argparse.ArgumentParser(
        prog="python -m overlay_harness.report merge",
        description="Merge the summary.json of a run's shards (and of runs on other machines) "
                    "into one summary.json, report.html, table.md, kcidb.json and durations.json.")
    ap.add_argument("dirs", nargs="+", type=Path,
                    help="run directories, folders holding them (CI artifacts), or summary.json files; "
                         "the baseline kernel's first")
    ap.add_argument("--out", type=Path, default=Path("merged"), help="where the merged files go (./merged)")
    ap.add_argument("--markdown", action="store_true", help="print the Markdown table (CI job summary)")
    ap.add_argument("--origin", default=kcidb.ORIGIN, help=f"KCIDB origin of kcidb.json ({kcidb.ORIGIN})")
    args = ap.parse_args(argv)
    try:
        kcidb.check_origin(args.origin)
        loaded = merge_mod.load(merge_mod.find_summaries(args.dirs))
        merged, res, timing, per_part = merge_mod.merge(loaded)
        out = merge_mod.write(args.out, merged, res, timing, per_part, origin=args.origin)
    except (merge_mod.MergeError, ValueError) as e:
        for line in getattr(e, "conflicts", [str(e)]):
            print(f"report merge: {line}", file=sys.stderr)
        return 2
    for part in merged["merged_from"]:
        shard = part["shard"]
        wall = f", {part['wall_s']:.0f} s wall" if part["wall_s"] is not None else ""
        name = f"shard {shard['index']}/{shard['count']}" if shard else "run"
        print(f"{name} "
              f"{part['run_id']} on {', '.join(part['kernels'])}: {part['cases']} results{wall}",
              file=sys.stderr)
    if args.markdown:
        print(markdown_table(res), end="")
    else:
        print("\n".join(text_table(res)[0]))
    print(f"merged {len(loaded)} summaries into {out}/ (summary.json, report.html, table.md, "
          "kcidb.json, durations.json)", file=sys.stderr)
    regs = res.regressions()
    for c, k, o in regs:
        print(regression_line(res, c, k, o), file=sys.stderr)
    return 1 if regs else 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    ap = argparse.ArgumentParser(
        prog="python -m overlay_harness.report",
        description="Merge summary.json files (in kernel order: the first is the baseline) "
                    "into one case x kernel table. The shards of a run: `merge DIR...` "
                    "(python -m overlay_harness.report merge --help).")
    ap.add_argument("summaries", nargs="+", type=Path)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (CI job summary)")
    ap.add_argument("--by-case", action="store_true",
                    help="print a Markdown table with one row per case function (as in the README)")
    ap.add_argument("--html", type=Path, help="write an HTML page here")
    args = ap.parse_args(argv)
    loaded = [json.loads(p.read_text()) for p in args.summaries]
    res = Results.from_summaries(loaded)
    if args.by_case:
        print(by_case_markdown(res), end="")
    elif args.markdown:
        print(markdown_table(res), end="")
    else:
        lines, _ = text_table(res)
        print("\n".join(lines))
    if args.html:
        meta = {"run_id": "merged: " + ", ".join(s.get("run_id", "?") for s in loaded),
                "kernels": [k for s in loaded for k in s["kernels"]]}
        args.html.write_text(html_page(res, meta, merged_timing(args.summaries, loaded)))
    regs = res.regressions()
    for c, k, o in regs:
        print(regression_line(res, c, k, o), file=sys.stderr)
    return 1 if regs else 0


if __name__ == "__main__":
    sys.exit(main())
