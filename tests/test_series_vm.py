"""A patch series end to end on the default kernel, patch by patch: three patches made
with git format-patch onto the kernel's own fs/overlayfs (Debian's linux-source in the
cache): a harmless one, one that makes syncfs of a volatile overlay return 0 after an
upper writeback error (mutants/011's hunk), one that puts the error back. `python -m
overlay_harness.series` runs the baseline (cached) and the three cumulative steps; its
table must name patch 2 as the one that broke the volatile syncfs case and patch 3 as
the one that fixed it, and nothing else may change. Boots real kernels (one VM per step
and one for a baseline not cached yet); downloads linux-source on first use."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from series_data import break_syncfs, fix_syncfs, harmless, make_series

from overlay_harness.host import fetch
from overlay_harness.host import kernel as kernel_mod

ROOT = Path(__file__).resolve().parent.parent
CASE = "cases/test_volatile.py::test_volatile_sync_calls_return_error_every_time[ext4]"
# The case patch 2 breaks, and one beside it that no patch of the series touches: it must
# stay unchanged (no volatile error, syncfs returns 0 before and after the hunk).
SELECTION = ["cases/test_volatile.py", "-k", "sync_calls_return_error or sync_calls_do_not_reach",
             "--upper-fs", "ext4"]
pytestmark = pytest.mark.vm


def test_the_per_patch_table_names_the_patch_that_broke_and_the_one_that_fixed(tmp_path):
    kernel = kernel_mod.resolve(None)
    base = fetch.fetch_source(kernel.release, members=["fs/overlayfs"]) / "fs" / "overlayfs"
    _patches, _cover, mbox = make_series(base, tmp_path / "w", [harmless, break_syncfs, fix_syncfs])
    p = subprocess.run([sys.executable, "-m", "overlay_harness.series", str(mbox), "-n", "1",
                        "--out", str(tmp_path / "out"), "--", *SELECTION,
                        f"--junitxml={tmp_path / 'junit.xml'}"],   # each step writes it: the last stays
                       cwd=ROOT, capture_output=True, text=True, timeout=1500)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]   # the whole series regresses nothing
    record = json.loads((tmp_path / "out" / "per-patch.json").read_text())
    assert [s["regressions_against_baseline"] for s in record["steps"]] == [0, 1, 0], out[-4000:]
    changed = {c["case"]: c for c in record["cases"]}
    assert set(changed) == {CASE}, out[-4000:]   # the harmless patch and the control changed nothing
    assert len(json.loads(Path(record["steps"][0]["summary"]).read_text())["results"]) == 2
    events = changed[CASE]["events"]
    assert [(e["patch"], e["from"], e["to"], e["change"]) for e in events] == [
        (2, "passed", "failed", "regressed"), (3, "failed", "passed", "fixed")]
    assert "patch 2 (regressed), then patch 3 (fixed)" in out
    step2 = json.loads(Path(record["steps"][1]["summary"]).read_text())
    assert step2["check"]["state"] == "fail"
    assert [r["case"] for r in step2["against_baseline"]["regressions"]] == [CASE]
    assert step2["series"]["patchset_hash"] and len(step2["series"]["patches"]) == 2
    assert step2["module_build"]["valid"] and step2["module_build"]["duration"] > 0
    assert "regression against the baseline" in Path(step2["run_dir"], "report.html").read_text()
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    (suite_props,) = [s.find("properties") for s in junit.iter("testsuite")]   # the suite's own
    suite = {p.get("name"): p.get("value") for p in suite_props if p.get("name").endswith("_baseline")}
    # the last step (1-3) against the baseline: the case is back where it was, so unchanged
    assert suite == {"regressions_against_baseline": "0", "fixed_against_baseline": "0",
                     "unchanged_against_baseline": "2"}
    case = next(t for t in junit.iter("testcase")
                if t.get("name").startswith("test_volatile_sync_calls_return"))
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["against_baseline"] == "unchanged" and props["baseline_outcome"] == "passed"
