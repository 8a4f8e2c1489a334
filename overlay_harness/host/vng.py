"""Starting `vng` (virtme-ng): finding it and the guest's python, its environment, the
supervised launch under host/reaper.py and its stop, and the checks before a boot.
vm.py boots the suite's VMs with it; accel.py's KVM probe and bisect.py's builds too."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .agent_client import HarnessError


class BootError(HarnessError):
    """The VM did not become ready."""

    kind = "boot"


def guest_python():
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BootError("no python3 for the guest (the guest shares the host's root: install python3)")


def vng_command():
    """vng next to this interpreter (a venv), else on PATH."""
    here = Path(sys.executable).with_name("vng")
    found = str(here) if here.exists() else shutil.which("vng")
    if not found:
        raise BootError("vng (virtme-ng) not found: run ./setup.sh")
    return found


def vng_env(vng, **overrides):
    """The environment for running `vng`: it runs virtme-run, virtme-configkernel and
    friends from PATH, so its own directory (a venv's bin) goes first."""
    env = dict(os.environ, **overrides)
    env["PATH"] = os.pathsep.join([str(Path(vng).parent), env.get("PATH", "/usr/bin:/bin")])
    return env


def spawn_vng(argv, log_path, home, stdin=subprocess.PIPE):
    """Start argv under host/reaper.py, output to log_path; (Popen, pgid file)."""
    pgid_file = Path(log_path).with_suffix(".pgid")
    env = vng_env(argv[0], HOME=str(home))  # vng keeps its cache under $HOME: fresh per VM
    with open(log_path, "ab") as own_output:  # the reaper's own complaints, if any
        proc = subprocess.Popen(
            [sys.executable, "-m", "overlay_harness.host.reaper", "--parent", str(os.getpid()),
             "--pgid-file", str(pgid_file), "--log", str(log_path), "--", *argv],
            stdin=stdin, stdout=own_output, stderr=subprocess.STDOUT, env=env,
            cwd=str(Path(__file__).resolve().parents[2]), start_new_session=True)
    return proc, pgid_file


def stop_supervised(proc, pgid_file, timeout=10.0):
    """Stop the reaper and everything under it; never leaves QEMU behind."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        pgid = int(Path(pgid_file).read_text())
    except (OSError, ValueError):
        pgid = None
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.stdin:
        try:
            proc.stdin.close()
        except OSError:
            pass


def mem_available_bytes():
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = str(text).strip().upper().rstrip("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text) << 20  # QEMU's default unit is MiB
