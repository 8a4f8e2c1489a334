"""The catalogue of the cases (python -m overlay_harness.catalogue), from pytest's
collection: docs/cases.md is what it generates now, and it folds parametrisation,
markers and variant-only known issues the way a run sees them. No VM."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def catalogue(*args):
    return subprocess.run([sys.executable, "-m", "overlay_harness.catalogue", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_docs_cases_md_is_current():
    p = catalogue("--check")
    assert p.returncode == 0, p.stderr


def test_a_stale_catalogue_is_caught(tmp_path):
    stale = tmp_path / "cases.md"
    stale.write_text((ROOT / "docs" / "cases.md").read_text().replace("### `test_", "### `renamed_", 1))
    p = catalogue("--check", "--output", str(stale))
    assert p.returncode == 1
    assert "stale: regenerate it with `python -m overlay_harness.catalogue --markdown`" in p.stderr


def test_the_catalogue_folds_variants_markers_and_known_issues():
    p = catalogue("--markdown", "--output", "-")
    assert p.returncode == 0, p.stderr
    cases = {}
    for block in p.stdout.split("\n### ")[1:]:
        name, _, body = block.partition("\n")
        cases[name.strip("`")] = body
    volatile = cases["test_volatile_sync_calls_return_error_every_time"]
    assert "- markers: `volatile`" in volatile
    assert "- upper filesystems: ext4, ext4-nojournal, xfs" in volatile
    assert "- checks: Seed 002 / overlayfs.rst:" in volatile and "known issue" not in volatile
    msync = cases["test_volatile_msync_returns_the_error_every_time"]
    assert "- known issue (kernels 5.11 to now): msync on a volatile overlay" in msync
    options = cases["test_conflicting_options_without_upper"]  # a known issue of one variant only
    assert "- known issue [nfs_export=on] (kernels any to now):" in options
    shutdown = cases["test_syncfs_fails_after_upper_shutdown"]  # an issue on one upper fs, fixed later
    assert "- known issue (kernels any to before 6.13; commit" in shutdown and "upper fs ext4)" in shutdown
