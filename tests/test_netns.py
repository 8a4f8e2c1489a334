"""harness/netns.py without a VM: it starts with `python -I -S` (no site-packages,
so nothing beyond the standard library at import time) and checks its arguments."""

import subprocess
import sys
from pathlib import Path

import pytest

from harness import netns

HELPER = Path(netns.__file__)


def test_runs_without_site_packages():
    """The guest runs it with -I -S for a cheap start: pyroute2 is imported only when a
    namespace is made, so --help works without site-packages."""
    p = subprocess.run([sys.executable, "-I", "-S", str(HELPER), "--help"],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    for cmd in ("net-start", "net-ctl", "teardown", "nfs-start", "nfs-stop", "leftovers"):
        assert cmd in p.stdout


def test_link_request_needs_interface_and_state():
    with pytest.raises(SystemExit):
        netns.main(["net-ctl", "--control", "/nonexistent.sock", "link"])


def test_split_cidr():
    assert netns._split("169.254.231.2/30") == ("169.254.231.2", 30)
    assert netns._split("10.0.0.1") == ("10.0.0.1", 32)
