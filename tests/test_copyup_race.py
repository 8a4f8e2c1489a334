"""overlay_harness/in_guest/copyup_race.py, run locally on plain directories (no VM, no overlay).

With "merged" the same directory as "lower" nothing can differ, so the script reports a
clean run; with a "merged" file of zeros it must report the bad data, which shows that
its check can fail.
"""

import json
import subprocess
import sys

from overlay_harness.in_guest import script

SCRIPT = script("copyup_race.py")


def run(merged, lower, upper, *names, seed=1):
    out = subprocess.run([sys.executable, "-I", str(SCRIPT), "--merged", str(merged),
                          "--lower", str(lower), "--upper", str(upper), "--seed", str(seed),
                          "--seconds", "20", "--readers", "2", *names],
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_clean_run_reports_nothing(tmp_path):
    for i, name in enumerate(("a", "b")):
        (tmp_path / name).write_bytes(bytes([i + 1]) * 70000)
    res = run(tmp_path, tmp_path, tmp_path, "a", "b")
    assert (res["rounds"], res["files"], res["seed"]) == (2, 2, 1)
    assert res["reads"] >= 2
    assert res["bad_data"] == res["bad_blocks"] == res["errors"] == res["not_copied_up"] == []


def test_zeros_in_the_merged_file_are_reported(tmp_path):
    lower, merged = tmp_path / "lower", tmp_path / "merged"
    lower.mkdir()
    merged.mkdir()
    (lower / "a").write_bytes(b"\x07" * 70000)
    (merged / "a").write_bytes(b"\x07" * 4096 + bytes(70000 - 4096))
    res = run(merged, lower, merged, "a")
    assert res["bad_data"], res
    assert res["bad_data"][0]["offset"] == 4096
    assert res["bad_data"][0]["zeros"] is True


def test_same_seed_same_order(tmp_path):
    names = [f"f{i}" for i in range(6)]
    for name in names:
        (tmp_path / name).write_bytes(b"x" * 5000)
    first = run(tmp_path, tmp_path, tmp_path, *names, seed=9)
    second = run(tmp_path, tmp_path, tmp_path, *names, seed=9)
    assert first["rounds"] == second["rounds"] == len(names)
    assert first["order"] == second["order"]
    assert sorted(first["order"]) == names
    assert run(tmp_path, tmp_path, tmp_path, *names, seed=10)["order"] != first["order"]
