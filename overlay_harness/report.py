"""Merge summary.json files (one kernel each, as CI's jobs produce them) into one case x
kernel table; exit 1 on regressions.

    python -m overlay_harness.report SUMMARY.json... [--markdown | --by-case] [--html FILE]
"""

import argparse
import json
import sys
from pathlib import Path

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


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m overlay_harness.report",
        description="Merge summary.json files (in kernel order: the first is the baseline) "
                    "into one case x kernel table.")
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
