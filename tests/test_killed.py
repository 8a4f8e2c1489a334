"""A pytest run that is interrupted or killed leaves no QEMU, vng or reaper behind."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from procs import processes_matching, qemu_processes, wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.vm

CASE = textwrap.dedent('''
    import os, pathlib

    def test_long(guest):
        pathlib.Path(os.environ["OVH_MARK"]).write_text(guest.vm.name)
        guest.run(["sleep", "600"], timeout=700)
''')


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_killed_pytest_leaves_nothing_running(tmp_path, sig):
    (tmp_path / "test_case.py").write_text(CASE)
    mark = tmp_path / "vm-name"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OVH_MARK=str(mark))
    p = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "overlay_harness.plugin",
                          "-p", "no:cacheprovider", "-q", "test_case.py", "--accel", "tcg"],
                         cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(mark.exists, 600), "the VM never became ready"
        name = mark.read_text()
        assert qemu_processes(name)
        os.kill(p.pid, sig)
        p.wait(timeout=60)
        gone = wait_for(lambda: not qemu_processes(name) and not processes_matching(str(tmp_path))
                        and not processes_matching("--name", name), 30)
        assert gone, (f"left behind after {sig.name}: qemu {qemu_processes(name)}, "
                      f"others {processes_matching(str(tmp_path))}")
    finally:
        if p.poll() is None:
            p.kill()
