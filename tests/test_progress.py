"""Progress before the first case (the overlay module's build) goes through the logging
module and pytest's terminal as pytest users expect: shown by default, kept out by -q,
once (not twice) under live logging."""

import pytest
from test_report import OLD, bzimage

pytest_plugins = ["pytester"]

FAKE_BUILD = '''
from overlay_harness.host import modbuild


def fake_build(src, kernel, out_dir, jobs=2, log=print, workdir=None):
    """Reports its start as the real build does, then stops the run (no compiler here)."""
    log(f"building overlay.ko from {src} against the fake headers")
    raise modbuild.ModuleError("the fake build stops here")


modbuild.build = fake_build
'''

LINE = "building overlay.ko from"


@pytest.fixture
def run(pytester):
    pytester.makeconftest(FAKE_BUILD)
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    src = pytester.mkdir("overlayfs")
    image = bzimage(pytester.path / f"vmlinuz-{OLD}", OLD)

    def run(*extra):
        result = pytester.runpytest_subprocess(
            "-p", "overlay_harness.plugin", "--accel", "tcg", f"--kernel={image}",
            f"--overlay-src={src}", f"--results-dir={pytester.path / 'results'}",
            "-p", "no:cacheprovider", *extra)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
        assert "the fake build stops here" in result.stderr.str()
        return result.stdout.str() + result.stderr.str()
    return run


def test_the_module_build_is_announced_by_default(run):
    assert run().count(LINE) == 1


def test_quiet_keeps_the_module_build_line_out(run):
    assert LINE not in run("-q")


def test_live_logging_shows_the_build_line_once(run):
    assert run("--log-cli-level=INFO").count(LINE) == 1
