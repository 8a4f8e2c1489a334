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



def test_the_wheel_is_ready_to_publish(wheel):
    """An SPDX license with its file, the readme, classifiers, and py.typed."""
    z = zipfile.ZipFile(wheel)
    names = set(z.namelist())
    dist = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    metadata = z.read(f"{dist}/METADATA").decode()
    for line in ("License-Expression: GPL-2.0-only", "License-File: LICENSE",
                 "Classifier: Framework :: Pytest", "Description-Content-Type: text/markdown"):
        assert line in metadata, line
    assert "GNU GENERAL PUBLIC LICENSE" in z.read(f"{dist}/licenses/LICENSE").decode()
    assert "overlay_harness/py.typed" in names
    assert "Requires-Dist: pytest-rerunfailures>=16.7" in metadata


def test_sdist_and_wheel_build_and_pass_twine_check(tmp_path):
    """`python -m build` (here without isolation: offline, with this environment's setuptools)
    makes an sdist and a wheel that `twine check --strict` accepts."""
    for module in ("build", "twine"):
        pytest.importorskip(module, reason="pip install -e '.[dev]'")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=lambda d, names: [
        n for n in names if (Path(d) == ROOT and n in {".git", ".venv", "build", "results"})
        or n == "__pycache__" or n.endswith(".egg-info")])
    p = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                        str(src)], capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "BuildBackendWarning" not in p.stderr and "deprecated" not in p.stdout + p.stderr
    built = sorted(str(x) for x in (tmp_path / "dist").iterdir())
    assert sorted(b.rsplit(".", 1)[-1] for b in built) == ["gz", "whl"], built
    p = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *built],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and p.stdout.count("PASSED") == 2, p.stdout + p.stderr


def test_every_dependency_has_the_floor_the_lowest_job_installs():
    """ci.yml's unit-lowest job turns each `>=` of pyproject.toml's dependencies into `==`:
    every dependency needs one, or that job would test whatever pip picks."""
    import tomllib
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert deps and all(d.count(">=") == 1 and "," not in d for d in deps), deps
    ci = (ROOT / ".github/workflows/ci.yml").read_text()
    job = ci.split("  unit-lowest:\n", 1)[1].split("\n  cases:\n", 1)[0]
    assert 'd.replace(">=", "==")' in job and "-c floors.txt" in job and 'pytest tests -m "not vm"' in job
