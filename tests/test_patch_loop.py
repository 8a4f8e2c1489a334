"""The patch loop end to end on the default kernel: overlay.ko built from its own
fs/overlayfs (Debian's linux-source, fetched into the cache) against its headers, loaded
in the guest instead of the stock module. The unmodified source passes a volatile case;
with a mutant that drops the volatile syncfs error the same case fails; a source that
does not compile stops the run before any VM boots, quoting the compiler. Boots real
kernels; downloads linux-source and linux-headers on first use."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from overlay_harness.host import fetch, modbuild
from overlay_harness.host import kernel as kernel_mod

ROOT = Path(__file__).resolve().parent.parent
CASE = "cases/test_volatile.py::test_volatile_sync_calls_return_error_every_time[ext4]"
MUTANT = ROOT / "mutants" / "011-syncfs-volatile-error-returns-zero.patch"
pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def pristine():
    kernel = kernel_mod.resolve(None)
    return fetch.fetch_source(kernel.release, members=["fs/overlayfs"]) / "fs" / "overlayfs"


def source(tmp_path, pristine, patch=None):
    return modbuild.patched_copy(pristine, tmp_path / "tree", patch)


def run(tmp_path, *args):
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA",
                        f"--results-dir={tmp_path / 'results'}", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    return p.returncode, p.stdout + p.stderr


def outcome(tmp_path):
    summary = next((tmp_path / "results").glob("run-*/summary.json"))
    data = json.loads(summary.read_text())
    (rec,) = data["results"]
    return rec["outcome"], data["kernels"][0]["overlay_module"]


def test_unmodified_source_passes_and_the_module_is_the_one_loaded(tmp_path, pristine):
    rc, out = run(tmp_path, f"--overlay-src={source(tmp_path, pristine)}", CASE)
    assert rc == 0, out[-4000:]
    assert "overlay module for " in out and "expected taint E+O" in out
    got, module = outcome(tmp_path)
    assert got == "passed"
    assert module["expected_taint"] == "EO" and module["build_s"] > 0
    assert (tmp_path / "tree/fs/overlayfs/overlay.ko").exists() is False   # built in a copy


def test_a_mutant_that_drops_the_volatile_syncfs_error_is_caught(tmp_path, pristine):
    rc, out = run(tmp_path, f"--overlay-src={source(tmp_path, pristine, MUTANT)}", CASE)
    assert rc == 1, out[-4000:]
    got, _module = outcome(tmp_path)
    assert got == "failed"
    assert "syncfs" in out and "EIO" in out   # the assertion that caught it


def test_a_source_that_does_not_compile_stops_before_any_boot(tmp_path, pristine):
    tree = source(tmp_path, pristine)
    super_c = tree / "super.c"
    super_c.write_text(super_c.read_text() + "\nint ovl_broken(void) { return 0 }\n")
    rc, out = run(tmp_path, f"--overlay-src={tree}", CASE)
    assert rc == 4, out[-4000:]   # pytest's usage error: nothing ran
    assert "did not build against" in out and "super.c" in out and "error:" in out
    assert not list((tmp_path / "results").glob("run-*/*/console.log"))   # no VM was started
