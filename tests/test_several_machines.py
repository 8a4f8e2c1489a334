"""--shard on real VMs: the default kernel's `-m volatile --upper-fs=ext4` selection run
whole, then as 2 shards one after the other (split by the whole run's durations in the same
results directory), merged with `report merge`: the merged outcomes equal the whole run's,
case by case, and the parts share the cases between them. Boots the default kernel 3 times."""

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SELECTION = ["cases", "-m", "volatile", "--upper-fs=ext4"]
pytestmark = pytest.mark.vm


def run(results, *args):
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                        f"--results-dir={results}", *SELECTION, *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    runs = sorted(results.glob("run-*/summary.json"), key=lambda p: p.stat().st_mtime)
    return p.returncode, p.stdout + p.stderr, runs[-1]


def outcomes(summary):
    return {(r["case"], r["kernel"]): r["outcome"] for r in summary["results"]}


def wall(summary):
    a, b = (datetime.datetime.fromisoformat(summary[k]) for k in ("started", "finished"))
    return (b - a).total_seconds()


def test_two_shards_one_after_the_other_merge_to_the_whole_run(tmp_path):
    results = tmp_path / "results"
    rc, out, path = run(results)
    assert rc == 0, out[-4000:]
    whole = json.loads(path.read_text())
    assert len(whole["results"]) == whole["selection"]["count"] >= 10
    parts = []
    for i in (1, 2):
        rc, out, path = run(results, f"--shard={i}/2")
        assert rc == 0, out[-4000:]
        assert f"overlay-harness: shard {i}/2: " in out and "durations: 1 whole run in" in out
        parts.append(path)
    data = [json.loads(p.read_text()) for p in parts]
    assert all(d["results"] for d in data)
    p = subprocess.run([sys.executable, "-m", "overlay_harness.report", "merge",
                        *(str(x.parent) for x in parts), f"--out={tmp_path / 'merged'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    merged = json.loads((tmp_path / "merged" / "summary.json").read_text())
    assert outcomes(merged) == outcomes(whole)
    assert (tmp_path / "merged" / "kcidb.json").is_file()
    estimated = data[0]["shard"]["estimated_s"]
    print(f"whole run {wall(whole):.1f} s; shard 1/2 {wall(data[0]):.1f} s, shard 2/2 {wall(data[1]):.1f} s "
          f"(estimated {estimated[0]:.1f} s and {estimated[1]:.1f} s of cases; "
          f"{len(data[0]['results'])} and {len(data[1]['results'])} cases)")
