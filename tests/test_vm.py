"""The harness against a real booted kernel: the agent over its virtio-serial port, console log,
clean teardown."""

import errno
import os

import pytest
from procs import qemu_processes, wait_for

from overlay_harness.host import vm as vm_mod
from overlay_harness.library.guest import Guest

pytestmark = pytest.mark.vm


def listening_tcp_inodes():
    """Socket inodes in LISTEN state, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for fields in (line.split() for line in lines):
            if fields[3] == "0A":
                found.add(fields[9])
    return found


def socket_inodes(pid):
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def test_agent_answers_on_the_chosen_kernel(vm, kernel):
    g = Guest(vm.agent)
    info = g.ping()
    assert info["release"] == kernel.release == vm.guest_release
    assert g.uname()[2] == kernel.release
    assert g.stat("/nonexistent") == errno.ENOENT
    assert g.kmsg_seq() > 0
    assert "Linux version" in " ".join(r[3] for r in g.kmsg(-1)[:5])


def test_the_agent_port_is_the_users_alone_and_nothing_listens_on_tcp(vm):
    """The agent's socket sits in a directory only its user can enter, and the VM's QEMU
    listens on no TCP port (no SSH, no port forwarding)."""
    assert (vm.socket_dir / "agent.sock").is_socket()
    assert vm.socket_dir.stat().st_mode & 0o777 == 0o700
    pids = qemu_processes(vm.name)
    assert pids, f"no QEMU for {vm.name}"
    assert not socket_inodes(pids[0]) & listening_tcp_inodes()


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
        # The agent's channel is the VM's own virtio-serial port: its socket lives as long
        # as the VM, and the guest has no NIC (nothing to reach the host's network with).
        sock_dir = machine.socket_dir
        assert (sock_dir / "agent.sock").is_socket()
        assert g.must.listdir("/sys/class/net") == ["lo"]
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
    assert not sock_dir.exists()
