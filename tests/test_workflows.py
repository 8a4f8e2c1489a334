"""The GitHub workflows pass actionlint (and shellcheck on their run: scripts, where
shellcheck is installed), and so does their use of the composite action (action.yml);
every run that boots says which accelerator it must have and reruns harness errors."""

import json
import re
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


def step_script(path, name):
    """The `run:` script of the step called `name` in a workflow or action file."""
    text = path.read_text()
    step = text.split(f"- name: {name}\n", 1)[1]
    block = next(run_blocks(step))
    lines = block.splitlines()
    indent = len(lines[1]) - len(lines[1].lstrip())
    return "\n".join(line[indent:] for line in lines[1:]) + "\n"


def run_step(script, cwd, env, tmp_path):
    """A step's script as GitHub runs it (bash -e -o pipefail), with `--co` for pytest: the
    node ids it would run, one a line, and its status."""
    script_file = tmp_path / "step.sh"
    script_file.write_text(script)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RUNNER_TEMP": str(tmp_path),
           "GITHUB_OUTPUT": str(tmp_path / "output"), "PYTEST_ADDOPTS": "--co -q", **env}
    p = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_file)], cwd=cwd,
                       env=env, capture_output=True, text=True, timeout=300, check=False)
    ids = [line for line in p.stdout.splitlines() if "::" in line]
    return p.returncode, ids, p.stdout + p.stderr


@pytest.fixture
def kernel_tree(tmp_path):
    """A caller's workspace with a test file pytest must not collect (a kernel tree has many)."""
    tree = tmp_path / "linux"
    (tree / "scripts").mkdir(parents=True)
    (tree / "scripts" / "test_gen.py").write_text("import no_such_module\n")
    return tree


@pytest.mark.parametrize(("pytest_args", "wanted", "unwanted"), [
    ("-k volatile", "volatile", None),
    ("-k 'volatile and not fsync'", "volatile", "fsync"),
    ("cases/test_volatile.py -k \"not fsync\"", "cases/test_volatile.py::", "fsync"),
])
def test_the_action_runs_pytest_args_as_quoted_on_its_cases(kernel_tree, tmp_path, pytest_args,
                                                             wanted, unwanted):
    """The action's `cases` step from a kernel tree's workspace: a -k without a path runs the
    harness's cases (not the caller's tests), and a quoted -k expression stays one word."""
    if not (ROOT / ".venv" / "bin" / "pytest").exists():
        pytest.skip("no .venv in this checkout (./setup.sh)")
    status, ids, out = run_step(step_script(ROOT / "action.yml", "cases"), kernel_tree, {
        "GITHUB_ACTION_PATH": str(ROOT), "KERNEL": "", "PYTEST_ARGS": pytest_args, "ACCEL": "auto",
        "RERUNS": "0"}, tmp_path)
    assert status == 0, out
    assert ids and all(i.startswith("cases/") and wanted in i for i in ids), out
    if unwanted:
        assert not [i for i in ids if unwanted in i], out


def test_upstream_runs_its_selection_as_quoted(tmp_path):
    if not (ROOT / ".venv" / "bin" / "pytest").exists():
        pytest.skip("no .venv in this checkout (./setup.sh)")
    from overlay_harness.host import kernel as kernel_mod
    if not kernel_mod.installed():
        pytest.skip("no kernel under /boot")
    status, ids, out = run_step(step_script(ROOT / ".github/workflows/upstream.yml", "case suite"), ROOT, {
        "KERNEL": kernel_mod.installed()[0].release, "PYTEST_ARGS": "cases -k 'volatile and not fsync'"},
        tmp_path)
    assert status == 0, out
    assert ids and all("volatile" in i and "fsync" not in i for i in ids), out


def test_the_readme_workflow_builds_the_tree_with_the_action():
    """The README's kernel-tree workflow runs no `vng` before the action (which installs it),
    and every input it gives the action is one action.yml declares."""
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("uses: OWNER/overlay-harness@main", 1)
    before = snippet[0].rsplit("```yaml", 1)[1]
    assert "vng" not in before.replace("# vng", "")
    with_block = snippet[1].split("\n- ", 1)[0]
    given = re.findall(r"^\s{4}([a-z-]+):", with_block, re.M)
    action = (ROOT / "action.yml").read_text()
    declared = re.findall(r"^  ([a-z-]+):\n    description:", action, re.M)
    assert "build" in given and set(given) <= set(declared), (given, declared)


def test_an_unclosed_quote_in_pytest_args_is_one_error(kernel_tree, tmp_path):
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in this checkout (./setup.sh)")
    status, ids, out = run_step(step_script(ROOT / "action.yml", "cases"), kernel_tree, {
        "GITHUB_ACTION_PATH": str(ROOT), "KERNEL": "", "PYTEST_ARGS": "-k 'volatile", "ACCEL": "auto",
        "RERUNS": "0"}, tmp_path)
    assert status != 0 and not ids
    assert out.strip() == ("pytest-args: No closing quotation in \"-k 'volatile\" "
                           '(quote as a shell does: -k "a and not b")'), out
