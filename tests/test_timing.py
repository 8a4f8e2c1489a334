"""Where the time went, and the boot line, with a fake VM (no QEMU): the plugin's own
boot path (fixtures._boot) says which kernel boots under which accelerator and its time
to ready; -q keeps it quiet; under pytest-xdist the controller prints what the workers
booted; timing.json keeps boots and phases per kernel."""

import json
import re

import pytest
from test_report import NEW, OLD, bzimage

pytest_plugins = ["pytester"]

CASES = '''
import time
import pytest
from overlay_harness.plugin import fixtures
from overlay_harness.plugin.session import state_of


class FakeVM:
    """Boots in a blink and reports a time to ready, like host/vm.py's VM."""

    def __init__(self, kernel, accel):
        self.kernel, self.accel, self.name, self.proc, self.timings = kernel, accel, "fake", None, {}

    def start(self):
        time.sleep(0.1)
        self.timings["ready"] = 12.34 if self.kernel.release.startswith("6.1.") else 23.45


@pytest.fixture
def booted(kernel, request, monkeypatch):
    state = state_of(request.config)
    monkeypatch.setattr(fixtures, "prepare_guest", lambda vm, coverage=False: None)
    vm = FakeVM(kernel, state.accel)
    fixtures._boot(vm, state)
    request.node.user_properties += [("vm_boot_s", vm.timings["ready"]),  # as `guest` does
                                     ("vm_accel", vm.accel.name)]
    return vm


def test_one(booted):
    time.sleep(0.05)


def test_two(booted):
    pass
'''


@pytest.fixture
def run(pytester):
    pytester.makepyfile(test_boots=CASES)
    images = [bzimage(pytester.path / f"vmlinuz-{r}", r) for r in (OLD, NEW)]

    def run(*extra, kernels=1, subprocess=False):
        args = ["-p", "overlay_harness.plugin", "-p", "overlay_harness.results.recorder", "--accel", "tcg",
                f"--results-dir={pytester.path / 'results'}", "-p", "no:cacheprovider", *extra]
        for image in images[:kernels]:
            args += [f"--kernel={image}"]
        result = (pytester.runpytest_subprocess if subprocess else pytester.runpytest)(*args)
        timings = sorted((pytester.path / "results").glob("*/timing.json"))
        return result, json.loads(timings[-1].read_text()) if timings else None
    return run


def test_the_terminal_says_what_boots_and_when_it_is_ready(run):
    result, _ = run()
    assert result.ret == 0
    lines = [line for line in result.stdout.lines if "booting" in line]
    assert lines == [f"booting {OLD} (tcg) ... ready in 12.3 s"] * 2, result.stdout.str()


def test_quiet_keeps_the_boot_line_out(run):
    result, _ = run("-q")
    assert result.ret == 0
    assert "booting" not in result.stdout.str()


def test_under_xdist_the_controller_prints_what_the_workers_booted(run):
    pytest.importorskip("xdist")
    result, _ = run("-n", "2", subprocess=True)
    assert result.ret == 0
    lines = [line for line in result.stdout.lines if "booting" in line]
    assert len(lines) == 2, result.stdout.str()
    assert all(re.fullmatch(rf"\[gw[01]\] booting {re.escape(OLD)} \(tcg\) \.\.\. ready in 12\.3 s", line)
               for line in lines), lines


def test_timing_json_keeps_boots_and_phases_per_kernel(run):
    result, timing = run(kernels=2)
    assert result.ret == 0
    assert sorted(timing["boots_s"]) == [12.34, 12.34, 23.45, 23.45]
    per = timing["kernels"]
    assert set(per) == {OLD, NEW}
    assert per[OLD]["boots_s"] == [12.34, 12.34] and per[NEW]["boots_s"] == [23.45, 23.45]
    for kernel in (OLD, NEW):
        phases = per[kernel]["phases_s"]
        assert [len(phases[p]) for p in ("setup", "call", "teardown")] == [2, 2, 2]
        assert max(phases["call"]) >= 0.05  # test_one's body
        # a boot is counted as a boot, not as set-up (the fake boot itself takes 0.1 s)
        assert all(s < 1.0 for s in phases["setup"])


def test_live_logging_shows_the_boots_instead_of_the_terminal_line(run):
    """--log-cli-level=INFO: the boot is two records of the overlay_harness.boot logger, not
    also the terminal line."""
    result, _ = run("--log-cli-level=INFO")
    assert result.ret == 0
    out = result.stdout.str()
    assert re.search(rf"INFO +overlay_harness\.boot:\S+ booting {re.escape(OLD)} \(tcg\) \.\.\.\n", out), out
    assert re.search(rf"INFO +overlay_harness\.boot:\S+ {re.escape(OLD)}: ready in 12\.3 s", out), out
    assert f"booting {OLD} (tcg) ... ready in" not in out


def test_a_cases_captured_log_has_the_boot_it_waited_for(run):
    """With --log-level=INFO (pytest keeps WARNING and worse by default)."""
    result, _ = run("-rP", "--log-level=INFO")
    assert result.ret == 0
    out = result.stdout.str()
    setup_logs = out.split("Captured log setup")[1:]
    assert len(setup_logs) == 2, out
    assert all(f"{OLD}: ready in 12.3 s" in part.split("\n\n")[0] for part in setup_logs), out
