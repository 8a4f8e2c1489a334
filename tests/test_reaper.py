"""QEMU must not outlive pytest: the reaper kills the whole group (no VM: a fake command)."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from procs import wait_for

from overlay_harness.host import vng as vm

ROOT = Path(__file__).resolve().parent.parent


def gone(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" in f.read().lower()
    except FileNotFoundError:
        return True


def grandchild_command(pidfile):
    # A child that leaves a grandchild behind, the way vng leaves QEMU.
    return ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo started; wait"]


def test_stop_kills_the_group_and_output_reaches_the_log(tmp_path):
    log = tmp_path / "console.log"
    proc, pgid_file = vm.spawn_vng(grandchild_command(tmp_path / "pid"), log, home=tmp_path)
    assert wait_for(lambda: (tmp_path / "pid").exists() and "started" in log.read_text())
    grandchild = int((tmp_path / "pid").read_text())
    vm.stop_supervised(proc, pgid_file)
    assert wait_for(lambda: gone(grandchild))
    assert proc.poll() is not None


def test_sigkill_of_the_parent_still_kills_the_group(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from overlay_harness.host import vng as vm
        vm.spawn_vng({grandchild_command(tmp_path / "pid")!r}, {str(tmp_path / "log")!r},
                     home={str(tmp_path)!r})
        time.sleep(300)
        """)], cwd=ROOT)
    assert wait_for(lambda: (tmp_path / "pid").exists())
    grandchild = int((tmp_path / "pid").read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert wait_for(lambda: gone(grandchild)), "the grandchild outlived a SIGKILLed parent"
