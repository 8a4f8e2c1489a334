#!/usr/bin/env python3
"""A 5-patch series against `-k volatile`, verdict per patch (prints the table and times).

    .venv/bin/python bench/series.py                       # default kernel, -k volatile
    .venv/bin/python bench/series.py -- -k volatile --upper-fs ext4

The series is made with git format-patch onto the kernel's own fs/overlayfs (Debian's
linux-source in the cache) as one b4-style mbox: 1 a comment in super.c; 2 syncfs of a
volatile overlay returns 0 after an upper error (mutants/011's hunk); 3 puts the error
back; 4 a comment in file.c; 5 fsync of a volatile overlay reaches the upper file
(mutants/001's hunk). Then `python -m overlay_harness.series` tests it cumulatively, the
baseline cached after its first run: run this twice to see both figures. Expected: patch 2
regresses the volatile syncfs cases, patch 3 fixes them, patch 5 regresses
test_volatile_sync_calls_do_not_reach_the_upper; 1 and 4 change nothing.
"""

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from series_data import (  # noqa: E402
    break_syncfs,
    comment_in_file_c,
    fix_syncfs,
    harmless,
    make_series,
    volatile_fsync_reaches_upper,
)

from overlay_harness import series as series_tool  # noqa: E402
from overlay_harness.host import fetch  # noqa: E402
from overlay_harness.host import kernel as kernel_mod  # noqa: E402


def main():
    argv = sys.argv[1:]
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else ["-k", "volatile"]
    kernel = kernel_mod.resolve(None)
    base = fetch.fetch_source(kernel.release, members=["fs/overlayfs"]) / "fs" / "overlayfs"
    out = ROOT / "results" / "bench-series" / time.strftime("%Y%m%d-%H%M%S")
    _patches, _cover, mbox = make_series(base, out / "make", [
        harmless, break_syncfs, fix_syncfs, comment_in_file_c, volatile_fsync_reaches_upper],
        cover_subject="ovl: a five-patch benchmark series")
    start = time.monotonic()
    rc = series_tool.main([str(mbox), "-n", "2", "--out", str(out / "series"), "--", *pytest_args])
    print(f"bench: 5 patches, {' '.join(pytest_args)}, on {kernel.release}: {time.monotonic() - start:.0f} s "
          f"from mbox to the per-patch table (exit {rc})")


if __name__ == "__main__":
    main()
