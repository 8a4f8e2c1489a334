"""The GitHub workflows pass actionlint (and shellcheck on their run: scripts, where
shellcheck is installed)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def actionlint():
    here = Path(sys.executable).with_name("actionlint")
    found = str(here) if here.exists() else shutil.which("actionlint")
    if not found:
        pytest.skip("actionlint not installed (pip install -e '.[dev]')")
    return found


def lint(paths):
    p = subprocess.run([actionlint(), "-format", "{{json .}}", *map(str, paths)],
                       capture_output=True, text=True, check=False, timeout=120, cwd=ROOT)
    assert p.returncode in (0, 1), p.stderr   # 1: problems found; anything else: it broke
    return json.loads(p.stdout or "[]")


def test_there_are_workflows():
    assert {w.name for w in WORKFLOWS} >= {"ci.yml", "upstream.yml"}


def test_workflows_pass_actionlint():
    problems = lint(WORKFLOWS)
    assert problems == [], "\n".join(f"{e['filepath']}:{e['line']}: {e['message']}" for e in problems)


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """So that the check above can fail: an undefined expression context and a bad key."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    stepz: []\n"
                   "  b:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ nosuch.thing }}\n")
    kinds = {e["kind"] for e in lint([bad])}
    assert {"syntax-check", "expression"} <= kinds


def test_upstream_runs_on_schedule_and_on_demand_and_keeps_results():
    text = (ROOT / ".github/workflows/upstream.yml").read_text()
    for needle in ("schedule:", "workflow_dispatch:", "overlayfs/vfs.git", "vfs/vfs.git",
                   "torvalds/linux.git", "--config \"$GITHUB_WORKSPACE/images/overlay-harness.config\"",
                   "GITHUB_STEP_SUMMARY", "python -m overlay_harness.report"):
        assert needle in text, needle
    # Every upload happens even when the suite failed.
    blocks = text.split("- uses: actions/upload-artifact@")[1:]
    assert blocks and all("if: always()" in b.split("\n      - ")[0] for b in blocks)
