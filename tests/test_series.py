"""A patch series without a VM: reading format-patch files and b4 mboxes (From lines,
Message-ID, the cover letter skipped), KCIDB's patchset hash, a patch outside
fs/overlayfs and a patch that does not apply (each one usage error before any boot,
naming the patch and the file), the outcome changes against a baseline, the check
result, and the per-patch table."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from series_data import git, make_series

from overlay_harness import series as series_tool
from overlay_harness.host import series
from overlay_harness.plugin.series import selection_args
from overlay_harness.results.model import Change, Outcome, Results, change
from overlay_harness.results.recorder import exit_against_baseline
from overlay_harness.results.render import check_result, html_page

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not shutil.which("git"), reason="needs git")

SUPER_C = "".join(f"/* line {i} */\nstatic int ovl_f{i}(void) {{ return {i}; }}\n" for i in range(40))


@pytest.fixture
def base(tmp_path):
    """A small fs/overlayfs: what modbuild takes for one (super.c, Makefile, overlayfs.h)."""
    d = tmp_path / "base" / "fs" / "overlayfs"
    d.mkdir(parents=True)
    (d / "super.c").write_text(SUPER_C)
    (d / "Makefile").write_text("obj-m += overlay.o\noverlay-objs := super.o\n")
    (d / "overlayfs.h").write_text("#define OVL 1\n")
    return d


def edit(old, new, subject, path="fs/overlayfs/super.c"):
    def apply(tree):
        f = tree / path
        f.parent.mkdir(parents=True, exist_ok=True)
        text = f.read_text() if f.exists() else ""
        f.write_text(text.replace(old, new, 1) if old else text + new)
        return subject
    return apply


def three(base, tmp_path, body_from_line=False):
    subject = "ovl: first"
    first = edit("return 3;", "return -3;", subject)
    if body_from_line:   # a commit message line that starts with "From " is no mbox separator
        def first(tree, _e=first):
            _e(tree)
            return "ovl: first\n\nFrom the documentation: fsync returns the error"
    return make_series(base, tmp_path / "w", [
        first, edit("return 20;", "return 22;", "ovl: second"),
        edit("return -3;", "return 3;", "ovl: third reverts the first")])


def test_a_b4_mbox_splits_into_its_patches_and_skips_the_cover_letter(base, tmp_path):
    patches, cover, mbox = three(base, tmp_path, body_from_line=True)
    s = series.read([mbox], tmp_path / "out")
    assert [p.subject for p in s.patches] == [
        "[PATCH 1/3] ovl: first", "[PATCH 2/3] ovl: second", "[PATCH 3/3] ovl: third reverts the first"]
    cover_id = next(ln.split(":", 1)[1].strip() for ln in cover.read_text().splitlines()
                    if ln.lower().startswith("message-id:"))
    ids = [next(ln.split(":", 1)[1].strip() for ln in p.read_text().splitlines()
                if ln.lower().startswith("message-id:")) for p in patches]
    assert s.message_id == cover_id and [p.message_id for p in s.patches] == ids
    assert s.cover == "[PATCH 0/3] ovl: a test series"
    assert all(p.files == ["fs/overlayfs/super.c"] for p in s.patches)
    assert all(p.file.read_bytes().startswith(b"From git@z ") for p in s.patches)
    assert "From the documentation" in s.patches[0].file.read_text()   # kept in its patch


def test_format_patch_files_in_order_read_like_the_mbox(base, tmp_path):
    patches, _cover, mbox = three(base, tmp_path)
    s = series.read(patches, tmp_path / "out")
    m = series.read([mbox], tmp_path / "out2")
    assert [p.subject for p in s.patches] == [p.subject for p in m.patches]
    assert [p.sha256 for p in s.patches] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in patches]
    assert s.message_id == s.patches[0].message_id   # no cover letter given: the first patch's


def test_the_patchset_hash_is_kcidbs(base, tmp_path):
    """KCIDB: "sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64"."""
    _patches, _cover, mbox = three(base, tmp_path)
    s = series.read([mbox], tmp_path / "out")
    shell = subprocess.run("sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64", shell=True,
                           cwd=tmp_path / "out", capture_output=True, text=True, check=True).stdout.strip()
    assert s.patchset_hash == shell
    assert series.patchset_hash([]) == ""


def test_a_plain_diff_is_one_patch(tmp_path):
    s = series.read([ROOT / "mutants" / "011-syncfs-volatile-error-returns-zero.patch"], tmp_path / "o")
    (p,) = s.patches
    assert p.subject == "011-syncfs-volatile-error-returns-zero.patch" and p.message_id is None
    assert p.files == ["fs/overlayfs/super.c"]


def test_the_series_applies_in_order(base, tmp_path):
    patches, _cover, mbox = three(base, tmp_path)
    s = series.read([mbox], tmp_path / "out")
    src = series.apply(s, base, tmp_path / "tree")
    text = (src / "super.c").read_text()
    assert "return 22;" in text and "return 3;" in text and "return -3;" not in text
    two = series.apply(series.read(patches[:1], tmp_path / "o1"), base, tmp_path / "t1")
    assert "return -3;" in (two / "super.c").read_text()
    assert series.source_digest(two) != series.source_digest(base)
    (base / "super.o").write_bytes(b"\x7fELF")   # build outputs are not source
    assert series.source_digest(base) == series.source_digest(
        series.apply(series.Series([], None, None), base, tmp_path / "t0"))


def test_a_patch_outside_fs_overlayfs_names_it_and_offers_the_kernel_route(base, tmp_path):
    patches, _cover, _mbox = make_series(base, tmp_path / "w", [
        edit("return 1;", "return 11;", "ovl: fine"),
        edit("", "int x;\n", "vfs: also touch fs/namei.c", path="fs/namei.c")])
    s = series.read(patches, tmp_path / "out")
    with pytest.raises(series.SeriesError) as e:
        series.check_paths(s)
    msg = str(e.value)
    assert "patch 2/2" in msg and "vfs: also touch fs/namei.c" in msg and str(patches[1]) in msg
    assert "fs/namei.c, outside fs/overlayfs" in msg and "--kernel=TREE" in msg


def test_a_patch_that_does_not_apply_names_it_and_the_file(base, tmp_path):
    patches, _cover, _mbox = three(base, tmp_path)
    (base / "super.c").write_text(SUPER_C.replace("return 20;", "return 200;"))   # patch 2's context
    s = series.read(patches, tmp_path / "out")
    with pytest.raises(series.SeriesError) as e:
        series.apply(s, base, tmp_path / "tree")
    msg = str(e.value)
    assert "patch 2/3" in msg and "ovl: second" in msg and "does not apply" in msg
    assert "fs/overlayfs/super.c" in msg


def test_an_mbox_with_only_a_cover_letter_is_an_error(base, tmp_path):
    _patches, cover, _mbox = three(base, tmp_path)
    with pytest.raises(series.SeriesError, match="no patch in it"):
        series.read([cover], tmp_path / "out")


def run_pytest(tmp_path, *args):
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                        f"--results-dir={tmp_path / 'results'}", *args, "cases/test_volatile.py"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr


def test_pytest_stops_before_any_boot_on_a_patch_outside_fs_overlayfs(base, tmp_path):
    patches, _cover, _mbox = make_series(base, tmp_path / "w", [
        edit("", "int x;\n", "vfs: touch fs/namei.c", path="fs/namei.c")])
    rc, out = run_pytest(tmp_path, f"--overlay-src={base}", f"--overlay-patch={patches[0]}")
    assert rc == 4, out[-3000:]
    assert "fs/namei.c, outside fs/overlayfs" in out and "--kernel=TREE" in out
    assert not list((tmp_path / "results").glob("run-*/*/console.log"))


def test_outcomes_against_a_baseline():
    P, F, E, X, XP, S = (Outcome.PASSED, Outcome.FAILED, Outcome.ERROR, Outcome.XFAILED,
                         Outcome.XPASSED, Outcome.SKIPPED)
    assert {change(P, F), change(P, E), change(P, X)} == {Change.REGRESSED}
    assert {change(F, P), change(E, P), change(X, XP)} == {Change.FIXED}
    assert change(P, P) is Change.UNCHANGED and change(F, F) is Change.UNCHANGED
    assert change(P, S) is Change.CHANGED and change(None, P) is Change.NEW
    res = Results(["k"])
    for case, o in (("a", P), ("b", F), ("c", F), ("d", P)):
        res.cases.append(case)
        res.rows[(case, "k")] = {"case": case, "kernel": "k", "outcome": o}
    assert res.against_baseline() == []   # no baseline, nothing compared
    res.baseline = {("a", "k"): P, ("b", "k"): P, ("c", "k"): F}
    got = {x["case"]: x["change"] for x in res.against_baseline()}
    assert got == {"a": Change.UNCHANGED, "b": Change.REGRESSED, "c": Change.UNCHANGED, "d": Change.NEW}
    assert [x["case"] for x in res.baseline_regressions()] == ["b"]


def test_the_check_result_follows_the_regressions_against_the_baseline(tmp_path):
    summary = {"kernels": [{"release": "6.1.0-57-amd64"}], "regressions": [],
               "results": [{"outcome": "passed"}, {"outcome": "failed"}],
               "against_baseline": {"regressions": [], "fixed": [], "changed": [], "new": [],
                                    "unchanged": 2}}
    ok = check_result(summary, tmp_path / "report.html")
    assert ok["state"] == "success" and ok["context"] == "overlay-harness"
    assert ok["target_url"] == (tmp_path / "report.html").as_uri()
    assert ok["description"].startswith("0 regressions against the baseline, 0 fixed, 2 unchanged")
    summary["against_baseline"]["regressions"] = [{"case": "x"}]
    assert check_result(summary, tmp_path / "r.html")["state"] == "fail"
    summary["against_baseline"]["regressions"] = []
    summary["results"].append({"outcome": "error"})
    assert check_result(summary, tmp_path / "r.html")["state"] == "warning"


def test_the_baselines_key_leaves_out_what_does_not_choose_cases():
    run, key = selection_args(["-n", "2", "-q", "--overlay-patch=a.patch", "--overlay-patch", "b.patch",
                               "--results-dir=/tmp/r", "-k", "volatile", "--upper-fs", "ext4", "-rA"])
    assert key == ["-k", "volatile", "--upper-fs", "ext4"]
    assert run == ["-n", "2", "-k", "volatile", "--upper-fs", "ext4"]


def test_the_per_patch_table_names_the_first_patch_that_changed_a_case():
    def summary(outcomes, regs=0):
        return {"results": [{"case": c, "kernel": "k", "outcome": o} for c, o in outcomes.items()],
                "against_baseline": {"regressions": [{}] * regs}}
    baseline = {("a", "k"): "passed", ("b", "k"): "passed"}
    steps = [summary({"a": "passed", "b": "passed"}), summary({"a": "failed", "b": "passed"}, 1),
             summary({"a": "passed", "b": "passed"})]
    found = series_tool.changes(baseline, steps)
    assert list(found) == [("a", "k")]
    events = found[("a", "k")]["events"]
    assert [(e["patch"], e["change"]) for e in events] == [(2, "regressed"), (3, "fixed")]
    s = series.Series([series.Patch(Path("x"), Path("x"), f"p{i}", None, "0" * 64) for i in (1, 2, 3)],
                      None, None)
    text = series_tool.table(s, steps, found)
    assert "| 2 | p2 | 1 | `a` passed → failed (regressed) |" in text
    assert "patch 2 (regressed), then patch 3 (fixed)" in text


def test_the_tool_refuses_a_series_it_cannot_test(base, tmp_path, capsys):
    patches, _cover, _mbox = make_series(base, tmp_path / "w", [
        edit("", "int x;\n", "vfs: touch fs/namei.c", path="fs/namei.c")])
    assert series_tool.main([str(patches[0]), "--out", str(tmp_path / "o")]) == 2
    assert "outside fs/overlayfs" in capsys.readouterr().err


def test_make_series_makes_git_format_patch_files(base, tmp_path):
    patches, cover, _mbox = three(base, tmp_path)
    assert cover.name == "0000-cover-letter.patch" and len(patches) == 3
    assert git(tmp_path / "w" / "linux", "log", "--format=%s", "-1").strip() == "ovl: third reverts the first"
    assert "--- a/fs/overlayfs/super.c" in patches[0].read_text()


def test_the_exit_status_follows_the_regressions_against_the_baseline():
    ok, failed = pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED
    assert exit_against_baseline(failed, [], []) == ok        # failures the baseline shares
    assert exit_against_baseline(ok, [], [{"case": "a"}]) == failed
    assert exit_against_baseline(ok, [("a", "k2", "failed")], []) == failed   # between kernels still
    assert exit_against_baseline(pytest.ExitCode.INTERRUPTED, [], []) == pytest.ExitCode.INTERRUPTED


def test_report_html_says_regressions_against_the_baseline():
    res = Results(["k"])
    res.cases.append("a")
    res.rows[("a", "k")] = {"case": "a", "kernel": "k", "outcome": Outcome.FAILED, "duration": 0.1}
    meta = {"run_id": "r", "exit_status": 1, "baseline": {"cached": True, "summary": "/c/summary.json"},
            "series": {"patchset_hash": "ab" * 32, "patches": [{"subject": "[PATCH 1/1] ovl: x",
                                                                 "sha256": "cd" * 32}]},
            "against_baseline": {"regressions": [{"case": "a", "kernel": "k", "baseline": "passed",
                                                  "outcome": "failed"}],
                                 "fixed": [], "changed": [], "new": [], "unchanged": 0}}
    page = html_page(res, meta)
    assert "<b>1 regression against the baseline</b>" in page
    assert "Regressions against the baseline: 1" in page and "[PATCH 1/1] ovl: x" in page
    assert "against the baseline" not in html_page(res, {"run_id": "r"})


def test_an_incremental_build_copies_only_the_files_that_changed(base, tmp_path):
    from overlay_harness.host import modbuild
    work = tmp_path / "work"
    modbuild._sync(base, work)
    (work / "super.o").write_bytes(b"object")   # what make left there
    for f in work.iterdir():
        os.utime(f, (1_000_000, 1_000_000))
    (base / "overlayfs.h").write_text("#define OVL 2\n")
    (base / "Makefile").unlink()
    modbuild._sync(base, work)
    assert (work / "super.c").stat().st_mtime == 1_000_000      # unchanged: make leaves super.o be
    assert (work / "overlayfs.h").stat().st_mtime > 1_000_000   # changed: what includes it rebuilds
    assert (work / "overlayfs.h").read_text() == "#define OVL 2\n"
    assert not (work / "Makefile").exists() and (work / "super.o").read_bytes() == b"object"
