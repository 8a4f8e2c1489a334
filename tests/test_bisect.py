"""overlay_harness.bisect's answers to git bisect run, with a stand-in for vng and for the case run."""

import io
import os
import stat
import sys

import pytest

from overlay_harness import bisect


def rec(case, outcome, message="", infra_error=None):
    r = {"case": case, "nodeid": case, "kernel": "k", "outcome": outcome, "message": message}
    return dict(r, infra_error=infra_error) if infra_error else r


BOOT = rec(bisect.BOOT_CASE, "passed")


@pytest.mark.parametrize("results, status, expected", [
    ([BOOT, rec("cases/a.py::t", "passed"), rec("cases/a.py::u", "xfailed")], 0, bisect.GOOD),
    ([BOOT, rec("cases/a.py::t", "failed", "AssertionError: assert 0 == 5")], 1, bisect.BAD),
    ([BOOT, rec("cases/a.py::t", "error", "HarnessError: mount failed")], 1, bisect.BAD),
    ([rec(bisect.BOOT_CASE, "error", "BootError: no guest agent after 180 s", "boot"),
      rec("cases/a.py::t", "error", "BootError: no guest agent after 180 s", "boot")], 1, bisect.SKIP),
    # the words of a message decide nothing: only the infra_error field does
    ([BOOT, rec("cases/a.py::t", "error", "GuestLost: the VM did not boot")], 1, bisect.BAD),
    ([BOOT, rec("cases/a.py::t", "error", "the guest agent is unusable", "lost")], 1, bisect.SKIP),
    ([rec(bisect.BOOT_CASE, "failed", "assert '6.1.0' == '6.13.0-rc1-virtme'")], 1, bisect.SKIP),
    ([BOOT, rec("cases/a.py::t", "skipped", "kernel lacks dm-flakey (CONFIG_DM_FLAKEY)")], 0, bisect.SKIP),
    # -k deselected the boot case: a boot failure shows as errors of the chosen cases.
    ([rec("cases/a.py::t", "error", "vng exited with 1 before the guest agent started", "boot")], 1,
     bisect.SKIP),
    ([], 5, bisect.ABORT),
    ([], 2, bisect.ABORT),
])
def test_verdict(results, status, expected):
    code, why = bisect.verdict({"results": results}, status)
    assert code == expected, why


def test_no_summary_at_all_is_a_skip():
    assert bisect.verdict(None, 1)[0] == bisect.SKIP


def test_a_one_kernel_run_stopped_by_a_boot_failure_is_a_skip():
    why = "6.13.0-rc1-virtme: the VM did not boot: no guest agent"
    assert bisect.verdict({"results": [], "boot_failure": why}, 3) == (bisect.SKIP, why)
    assert bisect.verdict(None, 3)[0] == bisect.ABORT  # INTERNALERROR: no summary at all


def fake_vng(tmp_path, build_exit, make_image):
    script = tmp_path / "vng"
    script.write_text("#!/bin/sh\n"
                      f"echo \"$@\" >> {tmp_path}/vng.calls\n"
                      'case " $* " in *" --build "*) '
                      + ("mkdir -p arch/x86/boot && echo image > arch/x86/boot/bzImage; "
                         if make_image else "")
                      + f"exit {build_exit};; esac\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.fixture
def tree(tmp_path):
    t = tmp_path / "linux"
    t.mkdir()
    (t / "Makefile").write_text("# kernel\n")
    return t


def test_a_commit_that_does_not_build_is_skipped(tmp_path, tree, monkeypatch):
    monkeypatch.setattr(bisect, "vng_command", lambda: fake_vng(tmp_path, 2, False))
    monkeypatch.setattr(bisect, "run_cases", lambda *a: pytest.fail("no cases without a kernel"))
    assert bisect.main(["--tree", str(tree), "--results-dir", str(tmp_path / "r")]) == bisect.SKIP
    calls = (tmp_path / "vng.calls").read_text().splitlines()
    assert calls[0] == f"--kconfig --config {bisect.kernel_mod.FRAGMENT}"
    assert calls[1].startswith("--build --config ")


def test_a_built_kernel_is_tested_and_judged(tmp_path, tree, monkeypatch):
    monkeypatch.setattr(bisect, "vng_command", lambda: fake_vng(tmp_path, 0, True))
    seen = {}

    def fake_run(tree_arg, pytest_args, results_dir):
        seen.update(tree=tree_arg, args=pytest_args, results=results_dir)
        return 1, {"results": [BOOT, rec("cases/test_volatile.py::t[ext4]", "failed", "assert 0 == 5")]}

    monkeypatch.setattr(bisect, "run_cases", fake_run)
    code = bisect.main(["--tree", str(tree), "--results-dir", str(tmp_path / "r"), "--keep-config",
                        "--", "cases/test_volatile.py", "-k", "ext4"])
    assert code == bisect.BAD
    assert seen["tree"] == tree and seen["args"] == ["cases/test_volatile.py", "-k", "ext4"]
    assert os.path.isdir(seen["results"]) and str(seen["results"]).startswith(str(tmp_path / "r"))
    # --keep-config with no .config yet still configures once.
    assert (tmp_path / "vng.calls").read_text().splitlines()[0].startswith("--kconfig")


def test_not_a_kernel_tree_aborts(tmp_path):
    assert bisect.main(["--tree", str(tmp_path), "--no-build"]) == bisect.ABORT


def built_tree(tmp_path):
    """A kernel tree as vng --build leaves it, enough for --kernel (nothing boots under --co)."""
    from test_report import bzimage
    t = tmp_path / "linux"
    (t / "arch/x86/boot").mkdir(parents=True)
    (t / "Makefile").write_text("VERSION = 6\n")
    bzimage(t / "arch/x86/boot/bzImage", "6.13.0-rc1-virtme")
    return t


def test_a_selection_without_a_path_runs_the_harness_cases(tmp_path, monkeypatch):
    """`bisect -- -k volatile` runs the suite's volatile cases (the review: pytest collected
    only the appended boot case, which -k deselected: exit 5, and bisect's 128 stopped
    `git bisect run`). With --co, pytest lists them and the step is no abort."""
    tree = built_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTEST_ADDOPTS", "--co -q --accel=tcg")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    code = bisect.main(["--tree", str(tree), "--no-build", "--", "-k", "volatile"])
    listed = sys.stdout.getvalue()
    assert "cases/test_volatile.py::" in listed
    assert code == bisect.SKIP  # --co ran no case: nothing to judge, and no abort
    assert [p.name for p in (tmp_path / "results" / "bisect").iterdir()]  # here, where it ran


def test_from_an_installed_package_cases_are_the_users(tmp_path, monkeypatch):
    """From a wheel (no cases/ beside the package): paths are the current directory's, the
    results go there, and a selection without a case file is one clear abort."""
    monkeypatch.setattr(bisect, "ROOT", tmp_path / "site-packages")
    user = tmp_path / "work"
    (user / "mine").mkdir(parents=True)
    (user / "mine" / "test_x.py").write_text("def test_x():\n    pass\n")
    monkeypatch.chdir(user)
    tree = built_tree(tmp_path)
    assert bisect.main(["--tree", str(tree), "--no-build", "--", "-k", "volatile"]) == bisect.ABORT
    mine = ["mine/test_x.py", "-k", "x"]
    assert bisect.selection(mine, bisect.suite_dir()) == mine
    calls = tmp_path / "calls"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\npwd > {calls}\necho "$@" >> {calls}\n')
    python.chmod(0o755)
    status, summary = bisect.run_cases(tree, ["mine/test_x.py"], user, python=str(python))
    cwd, args = calls.read_text().splitlines()
    assert (cwd, status, summary) == (str(user), 0, None)
    assert args.endswith("mine/test_x.py") and bisect.BOOT_CASE not in args
