"""A VM that cannot boot stops the run with its reason, in one process and under xdist
(`-n 2`): status 3, the reason printed once, and summary.json with boot_failure (what
bisect reads to skip a commit). The VM asks for far more memory than the host has, so
preflight refuses it before QEMU starts: the test takes about a second."""

import json
from pathlib import Path

import pytest

from overlay_harness.host import kernel as kernel_mod

pytestmark = pytest.mark.vm

PLUGINS = ["-p", "overlay_harness.plugin", "-p", "overlay_harness.results.recorder", "-p", "no:cacheprovider"]
CASES = "".join(f"def test_needs_vm_{i}(vm):\n    pass\n\n" for i in range(4))


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_vm_that_cannot_boot_stops_the_run_with_its_reason(pytester, monkeypatch, workers):
    if not kernel_mod.installed():
        pytest.skip("no kernel under /boot to be the default")
    if workers:
        pytest.importorskip("xdist")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))  # this checkout
    pytester.makepyfile(test_cannot_boot=CASES)
    results = pytester.path / "results"
    result = pytester.runpytest_subprocess(*PLUGINS, *workers, "--vm-memory=1T", "--accel=tcg",
                                           f"--results-dir={results}", timeout=120)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 3, out
    assert "INTERNALERROR" not in out
    reason = "the VM did not boot: this machine cannot run the VM yet: the VM asks for 1T of memory"
    assert out.count(reason) == 1, out
    assert "(use --vm-memory)" in out
    summaries = list(results.glob("*/summary.json"))
    assert len(summaries) == 1, summaries
    summary = json.loads(summaries[0].read_text())
    assert reason in summary["boot_failure"]
    assert summary["exit_status"] == 3
