"""A saved reproducer replays: a volatile case runs with --save-reproducers (a pytest run of
its own, with its own VM); its reproducer (and the data files beside it) is copied into a
fresh guest of the same kernel and run there, and every call, from the guest's preparation
to the last fsync, gets the same errno (or none) as the case's call did. The case's
errnos come from its call log as data (a probe plugin dumps them), the replay's from the
agent's responses (a wrapper records them): nothing is read back out of printed text.
Boots the kernel twice."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from overlay_harness import guest_script
from overlay_harness.host import vm as vm_mod
from overlay_harness.host.vng import guest_python
from overlay_harness.library.guest import Guest
from overlay_harness.plugin.session import state_of

ROOT = Path(__file__).resolve().parent.parent
CASE = "cases/test_volatile.py::test_volatile_sync_calls_return_error_every_time[ext4]"
pytestmark = pytest.mark.vm

# Loaded into the case's pytest run: the errno (or None) of every call the reproducer
# holds (the guest's preparation, then the case's calls), as the case got them.
PROBE = '''
import json
import pytest
from overlay_harness.host.agent_client import Errno
from overlay_harness.plugin.session import CASE_KEY, state_of


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    case = item.stash.get(CASE_KEY, None)
    if call.when == "call" and case is not None:
        calls = [*case.prelude, *case.guest.log]
        (state_of(item.config).run_dir / "errnos.json").write_text(json.dumps(
            [[c.op, c.result.name if isinstance(c.result, Errno) else None] for c in calls]))
'''

# Runs in the guest: the reproducer as it is, with the agent's answers recorded.
REPLAY = '''
import json, runpy, sys
reproducer, out, agent_dir = sys.argv[1:4]
sys.path.insert(0, agent_dir)
import agent
got, handle = [], agent.Agent.handle
def record(self, line):
    answer = handle(self, line)
    got.append([json.loads(line)["op"], answer.get("name") if "errno" in answer else None])
    return answer
agent.Agent.handle = record
try:
    runpy.run_path(reproducer, run_name="__main__")
finally:
    with open(out, "w") as f:
        json.dump(got, f)
'''


def run_case(tmp_path, kernel, accel):
    (tmp_path / "replay_probe.py").write_text(PROBE)
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "replay_probe", CASE,
         "--save-reproducers", f"--results-dir={tmp_path / 'results'}", "--accel", accel,
         f"--kernel={kernel.run_arg}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}"))
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    (run_dir,) = (tmp_path / "results").glob("run-*")
    (reproducer,) = (run_dir / "reproducers").glob("*.py")
    return reproducer, json.loads((run_dir / "errnos.json").read_text())


def test_a_saved_reproducer_gets_the_same_errnos_in_a_fresh_guest(kernel, tmp_path, request):
    accel = state_of(request.config).accel
    reproducer, expected = run_case(tmp_path, kernel, accel.name)
    assert ["fsync", "EIO"] in expected, "the case's fault did not show: nothing to compare"

    machine = vm_mod.VM(kernel, accel, tmp_path / "vm", name="ovh-selftest-replay", cpus=1)
    try:
        machine.start()
        g = Guest(machine.agent)
        here = "/run/replay"
        g.must.makedirs(here)
        g.must.mount("replay", here, "tmpfs", 0, "size=256m")
        g.must.write_file(f"{here}/repro.py", reproducer.read_bytes())
        data = reproducer.with_suffix(".data")
        if data.is_dir():
            g.must.makedirs(f"{here}/repro.data")
            for blob in data.iterdir():
                g.must.write_file(f"{here}/repro.data/{blob.name}", blob.read_bytes())
        res = g.run([guest_python(), "-I", "-S", "-c", REPLAY, f"{here}/repro.py", f"{here}/got.json",
                     str(guest_script("agent.py").parent)], timeout=600, check=False)
        assert res.rc == 0, res.stderr[-3000:]
        got = json.loads(g.must.read_file(f"{here}/got.json"))
    finally:
        machine.stop()
    assert got == expected
