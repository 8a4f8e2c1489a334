"""The plugin as another repository gets it (no VM): passive until a test uses its fixtures
or an option of its group is given, ini settings under the command line, --require-accel,
reruns of harness errors only, the quarantine file, and GitHub annotations. The test runs
use the real `kernel` fixture on a fake bzImage with --accel tcg, so nothing boots."""

import datetime
import json
from pathlib import Path

import pytest
from test_report import bzimage

from overlay_harness.host import kernel as kernel_mod

pytest_plugins = ["pytester"]

PLUGINS = ["-p", "overlay_harness.plugin", "-p", "overlay_harness.results.recorder", "-p", "no:cacheprovider"]


@pytest.fixture
def no_boot_kernel(tmp_path, monkeypatch):
    """An empty /boot: resolving the default kernel would be a usage error."""
    empty = tmp_path / "boot"
    empty.mkdir()
    monkeypatch.setattr(kernel_mod, "BOOT_DIR", empty)


@pytest.fixture
def image(pytester):
    return bzimage(pytester.path / "vmlinuz-6.9.0-test", "6.9.0-test")


def test_passive_without_its_fixtures_or_options(pytester, no_boot_kernel):
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    (pytester.path / "quarantine.toml").write_text("[tool]\nsomething = 'else'\n")  # not ours to read
    result = pytester.runpytest(*PLUGINS)
    assert result.ret == 0
    out = result.stdout.str()
    assert "kernel:" not in out and "accel:" not in out and "preflight" not in out
    assert not (pytester.path / "results").exists()


def test_a_test_that_uses_a_fixture_makes_it_active(pytester, no_boot_kernel):
    """The same run with a test that asks for `kernel`: the default kernel is resolved
    (none under /boot here: one usage error, before any test runs)."""
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n\ndef test_k(kernel):\n    pass\n")
    result = pytester.runpytest(*PLUGINS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "no kernel under" in result.stderr.str()


def test_a_fixture_of_the_same_name_is_not_the_harness(pytester, no_boot_kernel):
    pytester.makepyfile(test_own="import pytest\n\n@pytest.fixture\ndef kernel():\n    return 1\n\n"
                                 "def test_k(kernel):\n    assert kernel == 1\n")
    result = pytester.runpytest(*PLUGINS)
    assert result.ret == 0
    assert "kernel:" not in result.stdout.str()


KERNEL_TEST = "def test_k(kernel):\n    print('RELEASE', kernel.release)\n"


def test_settings_from_pyproject_and_the_command_line_wins(pytester, image):
    other = bzimage(pytester.path / "vmlinuz-6.10.0-other", "6.10.0-other")
    pytester.makepyprojecttoml(f"""
[tool.pytest.ini_options]
overlay_harness_kernel = ["{image}"]
overlay_harness_accel = "tcg"
overlay_harness_results_dir = "out"
""")
    pytester.makepyfile(test_k=KERNEL_TEST)
    result = pytester.runpytest(*PLUGINS, "-s")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["kernel: 6.9.0-test *", "accel: tcg (requested with --accel tcg)",
                                 "*RELEASE 6.9.0-test*"])
    assert list((pytester.path / "out").glob("*/summary.json"))
    result = pytester.runpytest(*PLUGINS, "-s", f"--kernel={other}")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["kernel: 6.10.0-other *", "*RELEASE 6.10.0-other*"])


def test_a_bad_ini_setting_is_one_clear_error(pytester, image):
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\noverlay_harness_accel = \"fast\"\n")
    pytester.makepyfile(test_k=KERNEL_TEST)
    result = pytester.runpytest(*PLUGINS, f"--kernel={image}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "overlay_harness_accel = 'fast'" in result.stderr.str()


def test_require_accel_fails_a_run_that_would_fall_back(pytester, image):
    pytester.makepyfile(test_k=KERNEL_TEST)
    result = pytester.runpytest(*PLUGINS, f"--kernel={image}", "--accel", "tcg", "--require-accel", "kvm")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--require-accel kvm: this run would use TCG (requested with --accel tcg)" in result.stderr.str()
    result = pytester.runpytest(*PLUGINS, f"--kernel={image}", "--accel", "tcg", "--require-accel", "tcg")
    assert result.ret == 0


FLAKY = """
from pathlib import Path
from overlay_harness import GuestLost

def attempt(name):
    f = Path(__file__).with_name(name + ".count")
    n = int(f.read_text()) + 1 if f.exists() else 1
    f.write_text(str(n))
    return n

def test_vm_lost_once(kernel):
    if attempt("lost") == 1:
        raise GuestLost("fake: the VM went away")

def test_wrong_errno(kernel):
    attempt("assert")
    assert 5 == 0, "EIO expected"

def test_not_harness():
    attempt("plain")
    raise GuestLost("fake, in a test without the harness's fixtures")

def test_splat(kernel):
    attempt("splat")  # passes; the conftest fails it as the kernel-log check would
"""

# Fails test_splat's call without an exception, as plugin/evidence.py does for a splat; a
# conftest's wrapper runs after every plugin's, the worst order for the rerun decision.
SPLAT = """
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if item.name == "test_splat" and rep.when == "call":
        rep.outcome = "failed"
        rep.longrepr = "kernel splat during the case: WARNING: fake"
"""


def test_reruns_repeat_harness_errors_never_assertions(pytester, image):
    pytest.importorskip("pytest_rerunfailures")
    pytester.makepyfile(test_flaky=FLAKY)
    pytester.makeconftest(SPLAT)
    result = pytester.runpytest(*PLUGINS, f"--kernel={image}", "--accel", "tcg", "--reruns", "2",
                                f"--results-dir={pytester.path / 'results'}")
    names = ("lost", "assert", "plain", "splat")
    counts = {n: int((pytester.path / f"{n}.count").read_text()) for n in names}
    assert counts == {"lost": 2, "assert": 1, "plain": 3, "splat": 1}, counts  # plain: rerunfailures' rule
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 1 and outcomes["failed"] == 3 and outcomes["rerun"] == 3
    summary = json.loads(next((pytester.path / "results").glob("*/summary.json")).read_text())
    rec = {r["case"].split("::")[1]: r for r in summary["results"]}
    assert rec["test_vm_lost_once"]["outcome"] == "passed" and rec["test_vm_lost_once"]["reruns"] == 1
    assert rec["test_wrong_errno"]["outcome"] == "failed" and "reruns" not in rec["test_wrong_errno"]


QUARANTINED = """
def test_flaky(kernel):
    assert False, "sometimes"

def test_fine(kernel):
    pass
"""


def quarantine_file(path, expires, case="test_q.py::test_flaky", extra=""):
    path.write_text(f'[[quarantine]]\ncase = "{case}"\nreason = "fails one run in twenty"\n'
                    f'link = "https://example.org/1"\nexpires = {expires.isoformat()}\n{extra}')


def test_a_quarantined_failure_is_reported_apart_and_passes_the_run(pytester, image):
    pytester.makepyfile(test_q=QUARANTINED)
    quarantine_file(pytester.path / "quarantine.toml", datetime.date.today() + datetime.timedelta(days=30))
    result = pytester.runpytest(*PLUGINS, f"--kernel={image}", "--accel", "tcg",
                                f"--results-dir={pytester.path / 'results'}")
    assert result.ret == 0
    out = result.stdout.str()
    counts = result.parseoutcomes()   # warnings may sit between them, when run after other tests
    assert (counts.get("passed"), counts.get("quarantined")) == (1, 1)
    assert "QUARANTINED test_q.py::test_flaky: fails one run in twenty (https://example.org/1" in out
    summary = json.loads(next((pytester.path / "results").glob("*/summary.json")).read_text())
    assert {r["case"]: r["outcome"] for r in summary["results"]} == {
        "test_q.py::test_flaky": "quarantined", "test_q.py::test_fine": "passed"}


def test_a_quarantine_on_other_kernels_does_not_apply(pytester, image):
    pytester.makepyfile(test_q=QUARANTINED)
    quarantine_file(pytester.path / "quarantine.toml", datetime.date.today() + datetime.timedelta(days=30),
                    extra='since = "6.12"\n')
    result = pytester.runpytest(*PLUGINS, f"--kernel={image}", "--accel", "tcg")
    assert result.ret == 1
    assert "1 failed, 1 passed" in result.stdout.str()


def test_an_expired_quarantine_fails_the_run(pytester, image):
    pytester.makepyfile(test_q=QUARANTINED)
    quarantine_file(pytester.path / "q.toml", datetime.date.today() - datetime.timedelta(days=1),
                    case="test_q.py::test_fine")
    result = pytester.runpytest(*PLUGINS, f"--kernel={image}", "--accel", "tcg",
                                f"--quarantine={pytester.path / 'q.toml'}", "-k", "fine")
    assert result.ret == 1
    assert "EXPIRED quarantine of test_q.py::test_fine: fails one run in twenty" in result.stdout.str()


@pytest.mark.parametrize(("body", "message"), [
    ('[[quarantine]]\ncase = "t.py::t"\nreason = "r"\nexpires = 2030-01-01\n', "missing link"),
    ('[[quarantine]]\ncase = "t.py::t"\nreason = "r"\nlink = "l"\nexpires = "soon"\n',
     "expires must be a date"),
    ('[[quarantine]]\ncase = "t.py::t"\nreason = "r"\nlink = "l"\nexpires = 2030-01-01\nowner = "x"\n',
     "unknown keys owner"),
])
def test_a_bad_quarantine_file_is_one_usage_error(pytester, image, body, message):
    (pytester.path / "quarantine.toml").write_text(body)
    pytester.makepyfile(test_k=KERNEL_TEST)
    result = pytester.runpytest(*PLUGINS, f"--kernel={image}", "--accel", "tcg")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_failures_become_github_annotations(pytester, image, monkeypatch):
    pytester.makepyfile(test_q=QUARANTINED)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = pytester.runpytest(*PLUGINS, f"--kernel={image}", "--accel", "tcg",
                                f"--results-dir={pytester.path / 'results'}")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "::error file=test_q.py,line=1,title=failed (call)%3A test_q.py%3A%3Atest_flaky on 6.9.0-test::"
        "AssertionError: sometimes*"])
    assert "::error" not in result.stdout.str().split("test_flaky on")[-1]  # nothing for test_fine
    monkeypatch.delenv("GITHUB_ACTIONS")
    assert "::error" not in pytester.runpytest(*PLUGINS, f"--kernel={image}", "--accel", "tcg").stdout.str()


def test_under_xdist_a_passive_controller_prints_what_its_workers_found(pytester, monkeypatch):
    """No option given: the controller collects nothing and stays passive; the worker whose
    test used `kernel` resolved it, and its header lines are printed at the end."""
    pytest.importorskip("xdist")
    if not kernel_mod.installed():
        pytest.skip("no kernel under /boot to be the default")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))  # this checkout
    pytester.makepyfile(test_k=KERNEL_TEST)
    result = pytester.runpytest_subprocess(*PLUGINS, "-n", "1")
    assert result.ret == 0
    out = result.stdout.str()
    head, _, tail = out.partition("=== overlay-harness ===")
    assert "kernel:" not in head
    assert f"kernel: {kernel_mod.installed()[0].release} " in tail


def test_a_path_given_to_an_option_as_a_separate_word_is_one_usage_error(pytester, tmp_path_factory):
    """`--results-dir /elsewhere`: pytest would take /elsewhere for a test path when it picks
    its root directory (before the plugin's options exist), lose the project's testpaths and
    collect the failing test outside them. The plugin stops before any collection; the
    one-word form runs the project's tests only."""
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\ntestpaths = ["checks"]\n')
    pytester.mkdir("checks")
    (pytester.path / "checks" / "test_in.py").write_text("def test_in():\n    pass\n")
    pytester.makepyfile(test_outside="def test_outside():\n    assert False\n")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = pytester.runpytest(*PLUGINS, "--results-dir", str(elsewhere))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"write --results-dir={elsewhere} (one word)" in result.stderr.str()
    assert "collected" not in result.stdout.str()
    result = pytester.runpytest(*PLUGINS, f"--results-dir={elsewhere}")
    result.assert_outcomes(passed=1)
