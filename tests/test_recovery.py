"""A lost guest is an error of the run, never a result of the case, and the run goes on.

A generated case file crashes the guest on purpose (sysrq-c), stops the agent,
and kills QEMU from outside, between ordinary cases; every other case must still
report its own result on a fresh VM. Boots a real kernel several times.
"""

import re
import textwrap
import time
from pathlib import Path

import pytest
from procs import qemu_processes

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.vm

CASES = textwrap.dedent('''
    import errno, os, signal
    import pytest

    def test_1_before(guest):
        assert guest.stat("/nonexistent") == errno.ENOENT

    def test_2_panic(guest):
        guest.write_file("/proc/sysrq-trigger", b"c")
        guest.ping()

    def test_3_after_panic(guest):
        assert guest.uname()[2] == guest.vm.kernel.release

    def test_4_agent_stops_answering(guest):
        guest.run(["sh", "-c", "kill -STOP $PPID"], timeout=5)

    def test_5_after_hang(guest):
        assert guest.stat("/") != errno.ENOENT

    def test_6_qemu_killed(guest):
        me = guest.vm.name.encode()
        for pid in os.listdir("/proc"):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
            except OSError:
                continue
            if cmd[0].endswith(b"qemu-system-x86_64") and me in cmd:
                os.kill(int(pid), signal.SIGKILL)
        guest.ping()

    def test_7_after_kill(guest):
        assert guest.ping()["release"] == guest.vm.kernel.release

    def test_8_kernel_warning(guest):
        # A WARNING-shaped line in the kernel log must fail the case.
        guest.write_file("/dev/kmsg", b"<4>WARNING: CPU: 0 PID: 1 at fake/selftest.c:1 selftest+0x0/0x1\\n")
        assert guest.stat("/") != errno.ENOENT

    @pytest.mark.fresh_vm
    def test_9_fresh_kernel(guest):
        # Asked for a kernel no other case touched: test_8's line is not in its log.
        log = guest.run(["dmesg"]).stdout
        assert "Linux version" in log and "fake/selftest.c" not in log

    def test_10_after_fresh(guest):
        assert guest.stat("/") != errno.ENOENT
''')


def test_crashes_hangs_and_lost_vms_are_errors_and_the_rest_runs(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_cases=CASES)
    start = time.monotonic()
    result = pytester.runpytest_subprocess(
        "-p", "overlay_harness.plugin", "--call-timeout", "20", "-rA", "-p", "no:cacheprovider",
        timeout=900)
    elapsed = time.monotonic() - start
    out = result.stdout.str()
    outcomes = {}
    for line in out.splitlines():
        for word in ("PASSED", "FAILED", "ERROR"):
            if line.startswith(word + " ") and "test_cases.py::" in line:
                outcomes[line.split("::")[1].split()[0]] = word
    assert outcomes == {
        "test_1_before": "PASSED",
        "test_2_panic": "ERROR",
        "test_3_after_panic": "PASSED",
        "test_4_agent_stops_answering": "ERROR",
        "test_5_after_hang": "PASSED",
        "test_6_qemu_killed": "ERROR",
        "test_7_after_kill": "PASSED",
        "test_8_kernel_warning": "FAILED",
        "test_9_fresh_kernel": "PASSED",
        "test_10_after_fresh": "PASSED",
    }, out[-6000:]
    assert "Kernel panic - not syncing" in out          # the console excerpt of the panic
    assert "no answer from the guest agent" in out        # the hang
    assert "kernel splat during the case" in out
    assert result.ret == 1
    assert elapsed < 900
    logs = list(pytester.path.glob("results/run-*/*/console.log"))
    names = {m for log in logs for m in re.findall(r"of (ovh-\d+-\w+):", log.read_text())}
    assert len(names) == 1 and out.count("===== overlay-harness: boot") == 0
    # the first boot, one after each lost VM, one for the fresh_vm case (not for the case after it)
    assert len(re.findall(r"===== overlay-harness: boot \d+", logs[0].read_text())) == 5
    assert qemu_processes(names.pop()) == []


