"""Several machines, without a VM: --shard I/N (the split: stable, balanced, each case once;
its usage errors), `report merge` (the parts back together, and each conflict named), and
the KCIDB v5.3 document (checked with kcidb-io's own schema)."""

import json
import random
from pathlib import Path

import pytest
from test_report import CASES, CONFTEST, NEW, OLD, bzimage

from overlay_harness import report
from overlay_harness.results import kcidb, merge, shard

pytest_plugins = ["pytester"]

PLUGINS = ["-p", "overlay_harness.plugin", "-p", "overlay_harness.results.recorder",
           "-p", "no:cacheprovider", "--accel", "tcg", "-o", "xfail_strict=true"]


# --- the split -----------------------------------------------------------------------

def spread(parts, durations):
    totals = [sum(durations[c] for c in p) for p in parts]
    return max(totals) - min(totals), totals


def test_every_case_once_and_the_same_parts_in_any_order():
    rng = random.Random(25)
    durations = {f"cases/test_{i % 7}.py::test_{i}[ext4]": round(rng.uniform(0.5, 40), 2) for i in range(112)}
    for n in (1, 2, 3, 5, 8):
        parts = shard.split(durations, n)
        assert len(parts) == n
        ids = [c for p in parts for c in p]
        assert sorted(ids) == sorted(durations) and len(ids) == len(set(ids))
        shuffled = dict(rng.sample(list(durations.items()), len(durations)))
        assert shard.split(shuffled, n) == parts   # the collection order does not matter


def test_balanced_within_the_longest_case_and_ten_percent():
    """Given durations, the parts' totals differ by less than the longest case; with many
    cases, by less than 10 % of a part."""
    rng = random.Random(4)
    for n in (2, 3, 4):
        durations = {f"t{i}": round(rng.lognormvariate(2, 1), 2) for i in range(100)}
        longest = max(durations.values())
        gap, totals = spread(shard.split(durations, n), durations)
        assert gap <= longest, (gap, longest)
        assert gap <= 0.1 * max(totals), (gap, totals)
    # Longest first matters: in the order given, filling each part up to its share in turn
    # (a contiguous split) would put both 9 s cases into one part.
    durations = {"a": 9, "b": 9, "c": 1, "d": 1, "e": 1, "f": 1}
    gap, _ = spread(shard.split(durations, 2), durations)
    assert gap == 0


def test_without_durations_an_even_deterministic_split():
    ids = {f"t{i:02}": 1.0 for i in range(10)}
    parts = shard.split(ids, 3)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert parts == shard.split(dict(reversed(list(ids.items()))), 3)


def test_the_boot_and_the_first_preparation_are_no_case_time():
    """The set-ups of a run of `-m volatile --upper-fs=ext4` (2026-12-04): the first case
    waited for the boot (19.3 s) and the guest's first preparation after it."""
    recs = [{"case": "first", "outcome": "passed", "setup": 24.56, "duration": 0.48, "teardown": 0.12,
             "boot": 19.29},
            *({"case": f"c{i}", "outcome": "passed", "setup": s, "duration": 0.2, "teardown": 0.1}
              for i, s in enumerate((0.67, 0.51, 0.47, 0.54, 0.61))),
            {"case": "skipped", "outcome": "skipped", "setup": 0.0, "duration": 0.0, "teardown": 0.0},
            {"case": "never", "outcome": None}]
    got = {r["case"]: (seconds, boot) for r, seconds, boot in merge.case_seconds(recs)}
    assert "never" not in got
    median = 0.54   # the (upper) median set-up of those that waited for no boot, the skipped one among them
    assert got["first"] == (pytest.approx(median + 0.48 + 0.12), pytest.approx(24.56 - median))
    assert got["c0"] == (pytest.approx(0.97), 0.0)


@pytest.mark.parametrize("text", ["3/2", "0/2", "1/0", "2", "a/b", "1/2/3", ""])
def test_bad_shard_values(text):
    with pytest.raises(ValueError, match=r"--shard"):
        shard.parse_shard(text)


def test_shard_parses():
    assert shard.parse_shard("2/5") == (2, 5) and shard.parse_shard(" 1/1 ") == (1, 1)


# --- runs of fake cases (the real kernel fixture on fake bzImages: nothing boots) -----

@pytest.fixture
def fake(pytester):
    pytester.makepyfile(test_cases=CASES)
    pytester.makeconftest(CONFTEST)
    images = {rel: bzimage(pytester.path / f"vmlinuz-{rel}", rel) for rel in (OLD, NEW)}

    def run(*args, kernel=OLD, results="results"):
        before = set((pytester.path / results).glob("*/summary.json"))
        result = pytester.runpytest_subprocess(*PLUGINS, f"--kernel={images[kernel]}",
                                               f"--results-dir={pytester.path / results}", *args)
        new = sorted(set((pytester.path / results).glob("*/summary.json")) - before)
        return result, (new[-1] if new else None)
    return run


def outcomes(summary):
    return {(r["case"], r["kernel"]): r["outcome"] for r in summary["results"]}


def test_a_bad_shard_is_one_usage_error_before_anything_runs(fake):
    result, summary = fake("--shard=3/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.str().splitlines() if line.strip()]
    assert errors == ["ERROR: --shard 3/2: N must be at least 1 and I between 1 and N"]
    assert summary is None


def test_two_shards_merged_equal_the_whole_run(fake, pytester, tmp_path, capsys):
    result, whole = fake()
    assert result.ret == 0
    whole = json.loads(whole.read_text())
    assert whole["shard"] is None and whole["selection"]["count"] == 6
    assert whole["harness"]["version"]
    # The whole run's durations are in the results dir now: the parts are split by them.
    parts = []
    for i in (1, 2):
        result, path = fake(f"--shard={i}/2")
        assert result.ret == 0
        result.stdout.fnmatch_lines([f"overlay-harness: shard {i}/2: * of 6 cases, estimated *"
                                     "(durations: 1 whole run in *)"])
        parts.append(path)
    data = [json.loads(p.read_text()) for p in parts]
    assert [d["shard"]["index"] for d in data] == [1, 2]
    assert {d["selection"]["digest"] for d in data} == {whole["selection"]["digest"]}
    ran = [set(outcomes(d)) for d in data]
    assert ran[0] and ran[1] and not ran[0] & ran[1]
    assert (parts[0].parent / "kcidb.json").is_file()

    out = tmp_path / "merged"
    status = report.main(["merge", str(parts[0].parent), str(parts[1].parent), f"--out={out}"])
    assert status == 0, capsys.readouterr().err
    merged = json.loads((out / "summary.json").read_text())
    assert outcomes(merged) == outcomes(whole)
    assert [p["shard"]["index"] for p in merged["merged_from"]] == [1, 2]
    assert set(json.loads((out / "durations.json").read_text())) == {c for c, _ in outcomes(whole)}
    kcidb_io = pytest.importorskip("kcidb_io")
    doc = json.loads((out / "kcidb.json").read_text())
    kcidb_io.schema.V5_3.validate_exactly(doc)
    assert len(doc["tests"]) == 5   # test_no_kernel uses no kernel: not a harness case


def test_two_kernels_their_parametrisations_split_and_merged(fake, pytester, tmp_path, capsys):
    """With two kernels every case runs on each: the (case, kernel) items are split; the
    merged parts give the whole run's table and regressions."""
    other = f"--kernel={pytester.path / f'vmlinuz-{NEW}'}"
    result, whole = fake(other)
    assert result.ret == 1   # test_report's suite: two regressions on NEW
    whole = json.loads(whole.read_text())
    assert whole["selection"]["count"] == 11   # 5 kernel cases x 2 kernels, and test_no_kernel
    parts = [fake(f"--shard={i}/2", other)[1] for i in (1, 2)]
    ids = [json.loads(p.read_text())["shard"]["ids"] for p in parts]
    assert sorted(ids[0] + ids[1]) == whole["selection"]["ids"] and not set(ids[0]) & set(ids[1])
    assert report.main(["merge", *(str(p.parent) for p in parts), f"--out={tmp_path / 'm'}"]) == 1
    assert "REGRESSION test_cases.py::test_fs[xfs]: passed on 6.1.0-9-amd64" in capsys.readouterr().err
    merged = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert outcomes(merged) == outcomes(whole)
    def key(r):
        return r["case"], r["kernel"]
    assert sorted(merged["regressions"], key=key) == sorted(whole["regressions"], key=key)
    assert [k["label"] for k in merged["kernels"]] == [OLD, NEW]


def test_a_committed_durations_file_splits_every_machine_alike(fake, pytester):
    durations = pytester.path / "durations.json"
    durations.write_text(json.dumps({"test_cases.py::test_same": 50, "test_cases.py::test_fs[ext4]": 1,
                                     "test_cases.py::test_fs[xfs]": 2, "test_cases.py::test_no_kernel": 3}))
    got = []
    for i in (1, 2):
        result, path = fake(f"--shard={i}/2", f"--shard-durations={durations}")
        assert result.ret == 0
        got.append(json.loads(path.read_text())["shard"])
    assert got[0]["ids"] == ["test_cases.py::test_same"]   # 50 s alone: the rest is shorter
    assert got[0]["durations"] == got[1]["durations"] == str(durations)
    result, _ = fake("--shard=1/2", f"--shard-durations={pytester.path / 'nosuch.json'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "--shard-durations=" in result.stderr.str()


def test_the_source_of_a_kernel_image_built_elsewhere_reaches_kcidb(fake, pytester):
    """upstream.yml's build job leaves git.json beside the image it hands the shards."""
    git = {"url": "https://git.kernel.org/pub/scm/linux/kernel/git/vfs/vfs.git", "branch": "vfs.all",
           "commit": "f" * 40, "describe": "v7.3-rc1-5-gffff"}
    (pytester.path / "git.json").write_text(json.dumps(git))
    result, path = fake("-k", "test_same")
    assert result.ret == 0
    assert json.loads(path.read_text())["kernels"][0]["git"] == git
    doc = json.loads(path.with_name("kcidb.json").read_text())   # every run writes one
    pytest.importorskip("kcidb_io").schema.V5_3.validate_exactly(doc)
    (checkout,) = doc["checkouts"]
    assert checkout["git_commit_hash"] == "f" * 40 and checkout["git_repository_branch"] == "vfs.all"
    assert checkout["git_repository_url"] == git["url"] and checkout["git_commit_name"] == git["describe"]


def test_under_xdist_every_worker_splits_alike(fake):
    pytest.importorskip("xdist")
    fake()
    result, path = fake("--shard=2/2", "-n", "2")
    assert result.ret == 0, result.stdout.str()
    data = json.loads(path.read_text())
    assert data["shard"]["index"] == 2 and data["selection"]["count"] == 6
    ids = set(data["shard"]["ids"])
    assert ids and {r["nodeid"] for r in data["results"]} == ids - {"test_cases.py::test_no_kernel"}
    result.stdout.fnmatch_lines([f"2 workers [{len(ids)} items]"])   # both workers: the same part


# --- report merge's conflicts ----------------------------------------------------------

def summary(run_id, part=None, kernel="6.1", outcomes_=None, selection="sel", version="0.1.0",
            durations="d", commit="c" * 40):
    recs = [{"case": c, "kernel": kernel, "nodeid": c, "outcome": o, "duration": 1.0, "setup": 0.5,
             "teardown": 0.1} for c, o in (outcomes_ or {}).items()]
    return {"run_id": run_id, "started": "2026-12-04T01:00:00", "finished": "2026-12-04T01:05:00",
            "exit_status": 0, "kernels": [{"label": kernel, "release": kernel}], "results": recs,
            "harness": {"version": version, "commit": commit},
            "selection": {"args": ["cases"], "keyword": "", "markexpr": "volatile", "upper_fs": "ext4",
                          "count": 2, "digest": selection, "ids": ["a", "b"]},
            "shard": None if part is None else {"index": part[0], "count": part[1], "durations": "x",
                                                "durations_digest": durations}}


def write(tmp_path, *summaries):
    dirs = []
    for s in summaries:
        d = tmp_path / s["run_id"]
        d.mkdir()
        (d / "summary.json").write_text(json.dumps(s))
        dirs.append(str(d))
    return dirs


def merge_errors(tmp_path, capsys, *summaries):
    status = report.main(["merge", *write(tmp_path, *summaries), f"--out={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert status == 2 and not (tmp_path / "out").exists()
    return [line.removeprefix("report merge: ") for line in err.splitlines()]


def test_merge_same_case_two_outcomes(tmp_path, capsys):
    errors = merge_errors(tmp_path, capsys, summary("r1", (1, 2), outcomes_={"a": "passed"}),
                          summary("r2", (2, 2), outcomes_={"a": "failed", "b": "passed"}))
    assert errors == [f"a on 6.1: passed in {tmp_path / 'r1'}; failed in {tmp_path / 'r2'}"]


def test_merge_shards_of_different_selections(tmp_path, capsys):
    errors = merge_errors(tmp_path, capsys, summary("r1", (1, 2), outcomes_={"a": "passed"}),
                          summary("r2", (2, 2), outcomes_={"b": "passed"}, selection="other"))
    assert len(errors) == 1 and errors[0].startswith("shards of 2 on 6.1: different selections: ")
    assert f"1/2 in {tmp_path / 'r1'}" in errors[0] and "-m 'volatile'" in errors[0]


def test_merge_different_harness_versions(tmp_path, capsys):
    errors = merge_errors(tmp_path, capsys, summary("r1", (1, 2), outcomes_={"a": "passed"}),
                          summary("r2", (2, 2), outcomes_={"b": "passed"}, commit="d" * 40))
    assert errors == [f"different harness versions: 0.1.0 (commit cccccccccccc) in {tmp_path / 'r1'}; "
                      f"0.1.0 (commit dddddddddddd) in {tmp_path / 'r2'}"]


def test_merge_a_missing_shard(tmp_path, capsys):
    errors = merge_errors(tmp_path, capsys, summary("r1", (1, 3), outcomes_={"a": "passed"}),
                          summary("r3", (3, 3), outcomes_={"b": "passed"}))
    assert errors == [f"shards of 3 on 6.1: shard 2/3 missing (found 1/3 in {tmp_path / 'r1'}, "
                      f"3/3 in {tmp_path / 'r3'})"]


def test_merge_parts_split_by_different_durations(tmp_path, capsys):
    errors = merge_errors(tmp_path, capsys, summary("r1", (1, 2), outcomes_={"a": "passed"}),
                          summary("r2", (2, 2), outcomes_={"b": "passed"}, durations="other"))
    assert len(errors) == 1 and "split with different durations" in errors[0]


def test_merge_several_conflicts_each_on_its_line(tmp_path, capsys):
    errors = merge_errors(tmp_path, capsys, summary("r1", (1, 3), outcomes_={"a": "passed"}, version="0.2"),
                          summary("r2", (2, 3), outcomes_={"a": "error"}))
    assert len(errors) == 3
    assert errors[0].startswith("different harness versions") and "3/3 missing" in errors[1]
    assert errors[2].startswith("a on 6.1: passed in")


def test_merge_kernels_of_a_matrix_and_a_run_of_another_machine(tmp_path, capsys):
    """kernel x shard: each kernel's parts complete; a whole run of a third kernel beside them."""
    dirs = write(tmp_path, summary("a1", (1, 2), "6.1", {"a": "passed"}),
                 summary("a2", (2, 2), "6.1", {"b": "passed"}),
                 summary("b1", (1, 2), "7.3", {"a": "passed"}), summary("b2", (2, 2), "7.3", {"b": "failed"}),
                 summary("c", None, "6.12", {"a": "passed", "b": "passed"}))
    status = report.main(["merge", *dirs, f"--out={tmp_path / 'out'}", "--markdown"])
    out = capsys.readouterr()
    assert status == 1   # b passed on the baseline 6.1, failed on 7.3
    assert "REGRESSION b: passed on 6.1, failed on 7.3" in out.err
    assert "| case | `6.1` | `7.3` | `6.12` |" in out.out
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Totals per kernel" in page and "Where the time went, per shard" not in page  # no timing.json


def test_merge_shows_where_the_time_went_per_shard(tmp_path, capsys):
    dirs = write(tmp_path, summary("a1", (1, 2), "6.1", {"a": "passed"}),
                 summary("a2", (2, 2), "6.1", {"b": "failed"}))
    for d, boot in zip(dirs, (31.5, 29.0), strict=True):
        (Path(d) / "timing.json").write_text(json.dumps({
            "boots_s": [boot], "phases_s": {"setup": [0.5], "call": [4.0], "teardown": [0.2]},
            "kernels": {"6.1": {"boots_s": [boot], "phases_s": {"setup": [0.5], "call": [4.0],
                                                                   "teardown": [0.2]}}}}))
    assert report.main(["merge", *dirs, f"--out={tmp_path / 'out'}"]) == 0
    capsys.readouterr()
    page = (tmp_path / "out" / "report.html").read_text()
    section = page[page.index("Where the time went, per shard"):]
    assert "shard 1/2 on 6.1 (a1): 300 s wall" in section and "boots 31.5 s" in section
    assert "shard 2/2 on 6.1 (a2)" in section and "boots 29.0 s" in section
    # regressions first: the failed case's evidence comes before the tables
    assert page.index("<code>b</code> on <code>6.1</code>") < page.index("<h2>Case × kernel</h2>")


# --- KCIDB ------------------------------------------------------------------------------

SERIES = {"patchset_hash": "a" * 64, "message_id": "<20261204.1@example.org>",
          "patches": [{"subject": "[PATCH 1/2] ovl: keep the volatile error",
                       "message_id": "<p1@example.org>", "file": "series/0001-ovl.patch", "sha256": "b" * 64},
                      {"subject": "[PATCH 2/2] ovl: tidy", "message_id": None,
                       "file": "/tmp/series/0002-ovl.patch", "sha256": "c" * 64}],
          "source_digest": "d" * 64}
MODULE_BUILD = {"valid": True, "duration": 41.5, "start_time": "2026-12-04T01:00:00",
                "log_path": "overlay-module/build.log"}


def synthetic():
    recs = [("cases/test_volatile.py::test_a[ext4]", "passed", {}),
            ("cases/test_volatile.py::test_b[xfs]", "failed", {"message": "assert -5 == 0"}),
            ("cases/test_volatile.py::test_c", "error", {"infra_error": "lost", "message": "GuestLost"}),
            ("cases/test_volatile.py::test_d", "error", {"message": "fixture broke"}),
            ("cases/test_new.py::TestX::test_e[6.1-ext4-a/b c]", "skipped", {"message": "needs 6.8"}),
            ("cases/test_known.py::test_f", "xfailed", {"reason": "known kernel issue: fsync forgets"}),
            ("cases/test_known.py::test_g", "xpassed", {"reason": "known kernel issue: fsync forgets"}),
            ("cases/test_q.py::test_h", "quarantined", {"quarantine": "flaky under TCG"}),
            ("cases/test_q.py::test_i", None, {})]
    return {"run_id": "run-20261204-010000-42", "run_dir": "/tmp/run-x", "started": "2026-12-04T01:00:00",
            "finished": "2026-12-04T01:09:00", "accel": {"name": "tcg", "reason": "no KVM"},
            "kernels": [{"label": "6.1.0-57-amd64", "release": "6.1.0-57-amd64", "image": "/boot/v",
                         "config": "/boot/config-6.1.0-57-amd64", "git": None,
                         "package": {"package": "linux-image-6.1.0-57-amd64", "version": "6.1.158-1"},
                         "overlay_module": {"path": "/r/overlay.ko", "ident": "x", "source": "/src",
                                            "expected_taint": "EO", "build_s": 40.0}},
                        {"label": "/src/linux", "release": "7.3.0-rc1", "tree": "/src/linux",
                         "git": {"url": "https://git.kernel.org/pub/scm/linux/kernel/git/vfs/vfs.git",
                                 "branch": "vfs.all", "commit": "e" * 40, "describe": "v7.3-rc1-12-geeee"}}],
            "results": [{"case": c, "kernel": k, "nodeid": c, "outcome": o, "duration": 2.0, "setup": 1.0,
                         "teardown": 0.5, **extra}
                        for k in ("6.1.0-57-amd64", "/src/linux") for c, o, extra in recs],
            "series": SERIES, "module_build": MODULE_BUILD}


def test_kcidb_document_of_a_synthetic_summary_is_valid_v5_3():
    kcidb_io = pytest.importorskip("kcidb_io")
    assert (kcidb_io.schema.LATEST.major, kcidb_io.schema.LATEST.minor) >= (5, 3)
    doc = kcidb.document(synthetic())
    kcidb_io.schema.V5_3.validate_exactly(doc)
    assert doc["version"] == {"major": 5, "minor": 3}
    tests = {(t["misc"]["case"], t["misc"]["kernel"]): t for t in doc["tests"]}
    status = {c: t["status"] for (c, k), t in tests.items() if k == "6.1.0-57-amd64"}
    assert status == {
        "cases/test_volatile.py::test_a[ext4]": "PASS", "cases/test_volatile.py::test_b[xfs]": "FAIL",
        "cases/test_volatile.py::test_c": "MISS", "cases/test_volatile.py::test_d": "ERROR",
        "cases/test_new.py::TestX::test_e[6.1-ext4-a/b c]": "SKIP", "cases/test_known.py::test_f": "FAIL",
        "cases/test_known.py::test_g": "PASS", "cases/test_q.py::test_h": "FAIL",
        "cases/test_q.py::test_i": "MISS"}
    t = tests[("cases/test_new.py::TestX::test_e[6.1-ext4-a/b c]", "6.1.0-57-amd64")]
    assert t["path"] == "overlay_harness.cases.test_new.TestX.test_e.6_1-ext4-a_b_c"
    assert t["environment"]["comment"] == "6.1.0-57-amd64" and t["duration"] == 3.5
    vfs_test = tests[("cases/test_volatile.py::test_b[xfs]", "/src/linux")]
    assert vfs_test["environment"]["comment"] == "7.3.0-rc1"
    assert len({t["id"] for t in doc["tests"]}) == 18
    # the series on every checkout; the module build as each kernel's build
    for c in doc["checkouts"]:
        assert c["patchset_hash"] == "a" * 64 and c["message_id"] == "<20261204.1@example.org>"
        assert [f["name"] for f in c["patchset_files"]] == ["0001-ovl.patch", "0002-ovl.patch"]
        assert c["patchset_files"][0]["url"] == "file:///tmp/run-x/series/0001-ovl.patch"
    vfs = next(c for c in doc["checkouts"] if c.get("git_commit_hash"))
    assert vfs["git_repository_branch"] == "vfs.all" and vfs["git_repository_url"].endswith("vfs.git")
    builds = {b["misc"]["kernel"]: b for b in doc["builds"]}
    assert builds["6.1.0-57-amd64"]["status"] == "PASS" and builds["6.1.0-57-amd64"]["duration"] == 40.0
    assert builds["/src/linux"]["duration"] == 41.5
    assert builds["6.1.0-57-amd64"]["log_url"] == "file:///tmp/run-x/overlay-module/build.log"
    assert {t["build_id"] for t in doc["tests"]} == {b["id"] for b in doc["builds"]}
    # one known issue; present where it xfailed, absent where it xpassed
    (issue,) = doc["issues"]
    assert issue["comment"] == "known kernel issue: fsync forgets"
    present = {(i["test_id"], i["present"]) for i in doc["incidents"]}
    assert len(present) == 4
    for kernel in ("6.1.0-57-amd64", "/src/linux"):
        assert (tests[("cases/test_known.py::test_f", kernel)]["id"], True) in present
        assert (tests[("cases/test_known.py::test_g", kernel)]["id"], False) in present


def test_kcidb_without_series_and_the_schema_catches_a_bad_one():
    kcidb_io = pytest.importorskip("kcidb_io")
    s = synthetic()
    del s["series"], s["module_build"]
    doc = kcidb.document(s)
    kcidb_io.schema.V5_3.validate_exactly(doc)
    assert not any("patchset_hash" in c for c in doc["checkouts"])
    assert not any("status" in b for b in doc["builds"])
    bad = dict(synthetic(), series=dict(SERIES, patchset_hash="not-a-sha256"))
    assert not kcidb_io.schema.V5_3.is_valid_exactly(kcidb.document(bad))  # so the checks above can fail
    with pytest.raises(ValueError, match="origin"):
        kcidb.document(s, origin="Not An Origin")


def test_a_build_trees_git_checkout_without_the_token_its_remote_carries(tmp_path):
    import subprocess

    from overlay_harness.results.recorder import _git_of
    tree = tmp_path / "linux"
    git = ["git", "-C", str(tree), "-c", "user.email=a@example.org", "-c", "user.name=a"]
    subprocess.run(["git", "init", "-q", "-b", "vfs.all", str(tree)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run([*git, "remote", "add", "origin", "https://user:secret@example.org/vfs.git"], check=True)
    found = _git_of(tree)
    assert found["url"] == "https://example.org/vfs.git" and found["branch"] == "vfs.all"
    assert len(found["commit"]) == 40 and found["describe"] == found["commit"][:7]
    assert _git_of(tmp_path) is None   # not a git checkout
