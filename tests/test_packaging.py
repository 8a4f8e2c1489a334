"""A regular (non-editable) install carries what the package reads at run time: a wheel
built from this checkout holds the splat policy, the config fragment, the guest-side
scripts and the pytest11 entry points (no VM; builds offline with the installed setuptools)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(out):
    """The wheel of this checkout (no build isolation: no download)."""
    try:
        import wheel  # noqa: F401  -- setuptools before 70.1 builds wheels with it
    except ImportError:
        import setuptools
        if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1):
            pytest.skip("building a wheel needs the `wheel` package here (pip install -e '.[dev]')")
    # From a copy: an in-tree build would reuse the checkout's build/ (and its stale files).
    src = Path(out) / "src"
    top = {".git", ".venv", "build", "results", ".kernels"}  # the checkout's own, at its top only
    shutil.copytree(ROOT, src, ignore=lambda d, names: [
        n for n in names if (Path(d) == ROOT and n in top) or n == "__pycache__" or n.endswith(".egg-info")])
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=300, check=False, cwd=out)
    if p.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{p.stdout}\n{p.stderr}")
    return next(Path(out).glob("overlay_harness-*.whl"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_the_data_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("overlay_harness/host/splats.toml", "overlay_harness/host/overlay-harness.config",
                 "overlay_harness/in_guest/agent.py", "overlay_harness/in_guest/netns.py",
                 "overlay_harness/in_guest/copyup_race.py"):
        assert data in names, data
    # Every module of the package is in it (a new subpackage must be listed in pyproject.toml).
    for module in (ROOT / "overlay_harness").rglob("*.py"):
        assert module.relative_to(ROOT).as_posix() in names, module


def test_the_wheel_declares_the_pytest11_entry_points_and_its_python(wheel):
    z = zipfile.ZipFile(wheel)
    dist = next(n.split("/")[0] for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    entry_points = z.read(f"{dist}/entry_points.txt").decode()
    assert "[pytest11]" in entry_points
    assert "overlay_harness.plugin = overlay_harness.plugin" in entry_points
    assert "overlay_harness.results.recorder = overlay_harness.results.recorder" in entry_points
    metadata = z.read(f"{dist}/METADATA").decode()
    assert "Requires-Python: >=3.11" in metadata
    assert "Requires-Dist: pytest-rerunfailures" in metadata

