"""The harness against a real booted kernel: agent over SSH, console log, clean teardown."""

import errno
import os

import pytest
from procs import qemu_processes, wait_for

from overlay_harness.host import vm as vm_mod
from overlay_harness.library.guest import Guest

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


def host_state():
    mounts = open("/proc/self/mountinfo").read().splitlines()
    blocks = sorted(os.listdir("/sys/block"))
    return mounts, blocks


def test_a_vm_stops_without_leaving_qemu_and_never_touches_the_host(kernel, tmp_path, request):
    from overlay_harness.library.devices import Filesystem, ScratchDevice
    from overlay_harness.plugin.session import STATE_KEY
    state = request.config.stash[STATE_KEY]
    before = host_state()
    machine = vm_mod.VM(kernel, state.accel, tmp_path / "vm", name="ovh-selftest-teardown",
                        memory="1G", cpus=1)
    try:
        machine.start()
        assert qemu_processes("ovh-selftest-teardown"), "no QEMU for the VM while it runs"
        g = Guest(machine.agent)
        assert g.ping()["release"] == kernel.release
        # The SSH key is the VM's own: vng's HOME is the VM's private directory.
        key_dir = tmp_path / "vm" / "home" / ".cache/virtme-ng/.ssh"
        assert (key_dir / "id_virtme").is_file()
        assert f"virtme_ssh_cache={key_dir}" in g.must.read_file("/proc/cmdline").decode()
        # Devices, a filesystem and faults, all in the guest, none on the host.
        g.must.mkdir("/run/selftest")
        g.must.mount("selftest", "/run/selftest", "tmpfs", 0, None)
        g.scratch = "/run/selftest"
        g.run(["modprobe", "-a", "loop", "dm_mod"])
        dev = ScratchDevice(g, "selftest").create()
        fs = Filesystem(g, "ext4", dev, "/run/selftest/mnt").create()
        dev.error()
        dev.linear()
        assert fs.mnt in g.mounts()
        assert host_state() == before, "a guest mount or device showed up on the host"
        assert g.run_deferred() == []
        assert fs.mnt not in g.mounts()
    finally:
        machine.stop()
    wait_for(lambda: not qemu_processes("ovh-selftest-teardown"), 10)
    assert qemu_processes("ovh-selftest-teardown") == []
    assert not machine.alive()
