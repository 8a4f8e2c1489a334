"""The harness against a real booted kernel: agent over SSH, console log, clean teardown."""

import errno
import os
import time

import pytest

from harness import vm as vm_mod
from harness.guest import Guest

pytestmark = pytest.mark.vm


def listening_sockets(port):
    """(local address, port) pairs in LISTEN state for `port`, from /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                found.append((addr, int(p, 16)))
    return found


def qemu_processes(name):
    procs = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if any(b"qemu-system" in c for c in cmd[:1]) and name.encode() in b" ".join(cmd):
            procs.append(int(pid))
    return procs


def test_agent_answers_over_ssh_on_the_chosen_kernel(vm, kernel):
    g = Guest(vm.agent)
    info = g.ping()
    assert info["release"] == kernel.release == vm.guest_release
    assert g.uname()[2] == kernel.release
    assert g.stat("/nonexistent") == errno.ENOENT
    assert g.kmsg_seq() > 0
    assert "Linux version" in " ".join(r[3] for r in g.kmsg(-1)[:5])


def test_ssh_listens_on_loopback_only(vm):
    socks = listening_sockets(vm.port)
    assert socks, f"nothing listens on port {vm.port}"
    assert all(addr in ("0100007F", "00000000000000000000000001000000") for addr, _ in socks), socks


def test_console_log_is_kept_per_vm(vm):
    text = vm.console_log.read_text(errors="replace")
    assert "OVH-AGENT-READY" in text
    assert "Linux version" in text  # the kernel console goes there too


def test_a_vm_stops_without_leaving_qemu(kernel, tmp_path, request):
    from harness.plugin import STATE_KEY
    state = request.config.stash[STATE_KEY]
    machine = vm_mod.VM(kernel, state.accel, tmp_path / "vm", name="ovh-selftest-teardown",
                        memory="1G", cpus=1)
    try:
        machine.start()
        assert qemu_processes("ovh-selftest-teardown"), "no QEMU for the VM while it runs"
        assert Guest(machine.agent).ping()["release"] == kernel.release
    finally:
        machine.stop()
    deadline = time.monotonic() + 10
    while qemu_processes("ovh-selftest-teardown") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert qemu_processes("ovh-selftest-teardown") == []
    assert not machine.alive()
