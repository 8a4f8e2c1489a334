"""overlay_harness/in_guest/netns.py without a VM: it starts with `python -I -S` (no site-packages,
so nothing beyond the standard library at import time) and checks its arguments."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from overlay_harness.in_guest import netns

HELPER = Path(netns.__file__)


def test_runs_without_site_packages():
    """The guest runs it with -I -S for a cheap start: pyroute2 is imported only when a
    namespace is made, so --help works without site-packages."""
    p = subprocess.run([sys.executable, "-I", "-S", str(HELPER), "--help"],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    for cmd in ("net-start", "net-ctl", "teardown", "nfs-start", "nfs-stop", "leftovers"):
        assert cmd in p.stdout


@pytest.mark.parametrize("argv", [
    ["link"], ["link", "ovhnfs1"], ["setup", "--ns", "/run/x"], ["stop", "--veth", "v0"]])
def test_control_request_needs_its_arguments(argv, capsys):
    """A request missing an argument is a usage error before anything is sent."""
    with pytest.raises(SystemExit):
        netns.main(["net-ctl", "--control", "/nonexistent.sock", *argv])
    assert "needs" in capsys.readouterr().err


def test_control_process_serves_requests(tmp_path):
    """net-start forks the control process (pyroute2 imported from --site) and returns
    once it serves; a second net-start finds it serving; a bad request gets an error and
    the process keeps serving. (No request here touches the host's network.)"""
    import importlib.util
    site = str(Path(importlib.util.find_spec("pyroute2").origin).parent.parent)
    sock = str(tmp_path / "ctl.sock")
    run = [sys.executable, "-I", "-S", str(HELPER), "net-start", "--control", sock, "--site", site]
    p = subprocess.run(run, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    pid = int(re.search(r"ready: pid (\d+)", p.stdout).group(1))
    try:
        assert netns._request(sock, {"cmd": "ping"}, timeout=10) == {"ok": "pong"}
        again = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 0 and "already serving" in again.stdout, again
        assert "bad request" in netns._request(sock, {"cmd": "nope"}, timeout=10)["error"]
        assert netns._request(sock, {"cmd": "ping"}, timeout=10) == {"ok": "pong"}
    finally:
        os.kill(pid, signal.SIGTERM)
