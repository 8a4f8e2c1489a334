"""The GitHub workflows pass actionlint (and shellcheck on their run: scripts, where
shellcheck is installed), and so does their use of the composite action (action.yml);
every run that boots says which accelerator it must have and reruns harness errors."""

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


def lint(paths, cwd=ROOT):
    p = subprocess.run([actionlint(), "-format", "{{json .}}", *map(str, paths)],
                       capture_output=True, text=True, check=False, timeout=120, cwd=cwd)
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


def test_the_composite_action_is_checked_through_its_use(tmp_path):
    """actionlint reads action.yml where a workflow `uses: ./`: ci.yml does, and a wrong input
    to it is caught (so the clean run above covers the action's inputs)."""
    assert "uses: ./\n" in (ROOT / ".github/workflows/ci.yml").read_text()
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # actionlint's project root
    (tmp_path / "action.yml").write_text((ROOT / "action.yml").read_text())
    bad = tmp_path / ".github" / "workflows" / "use.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - uses: ./\n        with:\n          kernle: x\n")
    problems = lint([bad], cwd=tmp_path)
    assert [e["kind"] for e in problems] == ["action"], problems
    assert 'input "kernle" is not defined' in problems[0]["message"]


def run_blocks(text):
    """The `run:` scripts of a workflow or action file: each `run:` line with the lines
    indented deeper than it."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("run:", "- run:")):
            indent = len(line) - len(line.lstrip())
            block = [line]
            for more in lines[i + 1:]:
                if more.strip() and len(more) - len(more.lstrip()) <= indent:
                    break
                block.append(more)
            yield "\n".join(block)


def test_every_run_that_boots_names_its_accelerator_and_reruns_harness_errors():
    """A run of the cases (.venv/bin/pytest, not the VM-free `python -m pytest tests`) says
    which accelerator it must have and reruns harness errors."""
    found = set()
    for path in [*WORKFLOWS, ROOT / "action.yml"]:
        for block in run_blocks(path.read_text()):
            if ".venv/bin/pytest" in block:
                found.add(path.name)
                assert "--require-accel" in block and "--reruns" in block, (path.name, block)
    assert found == {"ci.yml", "upstream.yml", "action.yml"}
