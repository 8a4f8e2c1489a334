"""The plugin from another repository: examples/external (a pyproject with the dependency and
one case file, no conftest.py) runs its case on a booted kernel with overlay-harness installed
from its wheel into a fresh virtual environment outside the checkout.

Offline: the wheel is built without build isolation, and the new environment sees the
dependencies (pytest, virtme-ng, pyroute2, ...) of this project's .venv through a .pth line
naming a directory of links to them, overlay-harness' own entries left out, so that it
imports overlay_harness from the wheel only, never from this checkout."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from test_packaging import build_wheel

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "external"

pytestmark = pytest.mark.vm


def dependencies_view(into):
    """Links to this environment's installed packages, without overlay-harness itself and
    without any .pth file (an editable install's path to the checkout lives in one)."""
    site = Path(sysconfig.get_paths()["purelib"])
    into.mkdir()
    for entry in site.iterdir():
        name = entry.name
        if (name.endswith(".pth") or name.startswith(("overlay_harness", "__editable__", "__pycache__"))
                or name.startswith("_overlay_harness")):
            continue
        (into / name).symlink_to(entry)
    return into


def test_an_outside_repository_runs_its_case_with_the_installed_wheel(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    # Nothing of the checkout on sys.path: no PYTHONPATH, and not its directory as the cwd
    # (`python -m pip` there would take its egg-info for an installed overlay-harness).
    env = dict(os.environ, PATH=os.pathsep.join([str(venv / "bin"), str(Path(sys.executable).parent),
                                                 os.environ.get("PATH", "")]))
    env.pop("PYTHONPATH", None)

    def run(*argv, cwd=tmp_path):
        return subprocess.run(argv, capture_output=True, text=True, check=True, cwd=cwd, env=env,
                              timeout=300).stdout.strip()
    run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    (site / "ovh-deps.pth").write_text(f"{dependencies_view(tmp_path / 'deps')}\n")
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check",
        str(wheel))

    repo = tmp_path / "my-overlay-cases"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("results", "__pycache__"))
    assert not (repo / "conftest.py").exists()
    where = run(python, "-c", "import overlay_harness; print(overlay_harness.__file__)", cwd=repo)
    assert Path(where).is_relative_to(site), f"overlay_harness imported from {where}, not the wheel"

    p = subprocess.run([python, "-m", "pytest", "-p", "no:cacheprovider"], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=900, check=False)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert "plugins:" in out and "overlay-harness-" in out.split("plugins:")[1].splitlines()[0]
    assert "kernel: " in out and "1 passed" in out, out[-6000:]
    summary = json.loads(next((repo / "results").glob("*/summary.json")).read_text())
    assert [(r["case"], r["outcome"]) for r in summary["results"]] == [
        ("test_my_case.py::test_fsync_reports_an_upper_write_error_once[ext4]", "passed")]
