"""--target against a real kernel without a second machine: a guest booted here with sshd
(virtme-ng --ssh --ssh-tcp: user-mode networking, the guest's port 22 forwarded from
127.0.0.1 only) stands in for a machine the harness does not boot. The volatile cases on
ext4 run on it over SSH and end as they do on a guest the harness boots itself, case by
case; nothing is left in it afterwards; a target that stops answering fails the case
that lost it and errors the worker's next ones as gone; with --target-reboot (here a power
switch the test drives: the VM stopped and booted again, keeping its host keys) the next
case runs on the new boot.

Run under the shared VM lock: `flock /tmp/ovh-vm.lock .venv/bin/pytest tests/test_target_vm.py`."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from procs import qemu_processes, wait_for
from sshd import free_port
from test_vm import listening_tcp_inodes, socket_inodes

from overlay_harness.host import target as target_mod
from overlay_harness.host import vm as vm_mod
from overlay_harness.host.vng import BootError
from overlay_harness.library.features import SYSCTLS
from overlay_harness.library.guest import Guest

pytestmark = pytest.mark.vm
ROOT = Path(__file__).resolve().parent.parent
CASES = ["cases", "-m", "volatile", "--upper-fs", "ext4"]


class SshdVM(vm_mod.VM):
    """A VM whose guest also runs sshd, reachable at 127.0.0.1:ssh_port on the host."""

    def __init__(self, *args, ssh_port, **kwargs):
        super().__init__(*args, **kwargs)
        self.ssh_port = ssh_port

    def command(self, sock):
        cmd = super().command(sock)
        at = cmd.index("--exec")
        return cmd[:at] + ["--ssh", str(self.ssh_port), "--ssh-tcp"] + cmd[at:]

    @property
    def ssh_key(self):
        return self.workdir / "home/.cache/virtme-ng/.ssh/id_virtme"  # virtme-ng makes it

    def _boot(self, home):
        """As a real machine keeps its host keys across a reboot: the keys virtme-ng made at
        the first boot are given back to every later one (VM.start clears HOME)."""
        keys, kept = home / ".cache/virtme-ng/.ssh", self.workdir / "ssh-keys"
        if kept.is_dir():
            shutil.copytree(kept, keys, symlinks=True)
        booted = super()._boot(home)
        if not kept.is_dir():
            shutil.copytree(keys, kept, symlinks=True)
        return booted


class PowerSwitch:
    """What --target-reboot drives in the test: a command that asks for a reboot (a flag
    file) and waits until this thread has stopped the target VM, booted it again and seen
    sshd answer, as a power switch and a boot would."""

    BOOT_S = 60  # a boot here is ready in about 15 s; the harness waits 180 s for the command
    TRIES = 2    # a TCG boot seen stalling once, silent after 1.15 s: the switch tries it again

    def __init__(self, machine, flag):
        self.machine, self.flag, self.boots, self.error = machine, flag, 0, None
        self.stalled = []  # the first line of each boot that did not come up
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def command(self):
        return f"touch {self.flag} && while [ -e {self.flag} ]; do sleep 0.5; done"

    def _serve(self):
        while not self.done.is_set():
            if self.flag.exists():
                try:
                    self._power_cycle()
                    ensure_guest_network(Guest(self.machine.agent))
                    if not wait_for(lambda: ssh_answers(self.machine.ssh_port), timeout=60, interval=0.5):
                        raise AssertionError("no sshd answered after the reboot")
                    self.boots += 1
                except Exception as e:  # the test reports it
                    self.error = e
                finally:
                    self.flag.unlink()
            time.sleep(0.2)

    def _power_cycle(self):
        timeout, self.machine.boot_timeout = self.machine.boot_timeout, self.BOOT_S
        try:
            for attempt in range(1, self.TRIES + 1):
                self.machine.stop()
                try:
                    return self.machine.start()
                except BootError as e:
                    self.stalled.append(str(e).splitlines()[0])
                    if attempt == self.TRIES:
                        raise
        finally:
            self.machine.boot_timeout = timeout

    def close(self):
        self.done.set()
        self.thread.join(timeout=10)


def ensure_guest_network(g):
    """Give the guest's NIC slirp's address (10.0.2.15/24), where the forwarded port leads,
    if virtme-ng's DHCP did not: it races udev renaming the NIC (eth0 -> enp0sN, seen here
    in spite of net.ifnames=0), and the NIC that lost stays down."""
    nics = [n for n in g.must.listdir("/sys/class/net")  # readlink: a path, or an Errno
            if str(g.readlink(f"/sys/class/net/{n}/device/driver")).endswith("/virtio_net")]
    assert len(nics) == 1, f"no single virtio NIC in the guest: {nics}"
    if "10.0.2.15/" not in g.run(["ip", "-4", "addr", "show", "dev", nics[0]]).stdout:
        g.run(["ip", "link", "set", "dev", nics[0], "up"])
        g.run(["ip", "addr", "add", "10.0.2.15/24", "dev", nics[0]])


def ssh_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(5)
            return s.recv(4) == b"SSH-"
    except OSError:
        return False


def pytest_run(args, results, env=None, timeout=420):
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", *args, f"--results-dir={results}",
                           "-p", "no:cacheprovider", "-q"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    found = {name: next(Path(results).glob(f"*/{name}"), None) for name in ("summary.json", "timing.json")}
    summary, timing = (json.loads(p.read_text()) if p else None for p in found.values())
    return done, summary, timing, time.monotonic() - t0


def round_trip_ms(agent, n=200):
    t0 = time.monotonic()
    for _ in range(n):
        agent.request("stat", ["/"])
    return (time.monotonic() - t0) / n * 1000


def outcomes(summary):
    return {r["case"]: r["outcome"] for r in summary["results"]}


def per_case_s(timing):
    phases = timing["phases_s"]
    n = len(phases["call"])
    return sum(sum(phases[p]) for p in phases) / n if n else None


def guest_leftovers(g, own):
    """What a target session could leave in the guest: private directories, attached loop
    devices, dm devices, mounts under /tmp."""
    left = [f"/tmp/{n}" for n in g.must.listdir("/tmp") if n.startswith("ovh-target.")]
    for name in g.must.listdir("/sys/block"):
        attached = isinstance(g.read_file(f"/sys/block/{name}/loop/backing_file"), bytes)
        if name.startswith("dm-") or (name.startswith("loop") and attached and f"/dev/{name}" != own):
            left.append(name)
    left += [m for m in g.mounts() if m.startswith("/tmp/ovh-target.")]
    return left


LOSE_THE_TARGET = """
import os

import pytest

from overlay_harness.host.target import RefusedDevice

OWN = {own!r}  # a loop device the guest had before the session: the machine's own


def test_own_device_refused(guest):
    with pytest.raises(RefusedDevice):
        guest.stat(OWN)


def test_leaks(guest):  # fails at teardown; the fixture removes what it made, and only that
    img = f"{{guest.scratch}}/leak.img"
    fd = guest.must.open(img, os.O_CREAT | os.O_WRONLY, 0o600)
    guest.must.ftruncate(fd, 64 << 20)
    guest.must.close(fd)
    loop = guest.must.loop_attach(img)
    guest.must.dm_create("ovh-leak", f"0 1024 linear {{loop}} 0")
    guest.must.makedirs(f"{{guest.scratch}}/m")
    guest.must.mount("leak", f"{{guest.scratch}}/m", "tmpfs", 0, None)


def test_a_splat(guest):  # the kernel log check, on the target: fails this case
    guest.must.write_file("/dev/kmsg", b"<4>WARNING: CPU: 0 PID: 1 at fake/target.c:1 test\\n")

def test_clean(guest):
    pass

def test_kills_sshd(guest):
    guest.run(["pkill", "-KILL", "sshd"], check=False)  # the listener and this session

def test_after(guest):
    pass
"""

REBOOT_THE_TARGET = """
from pathlib import Path

BOOT_IDS = Path({boot_ids!r})


def boot_id(guest):
    return guest.must.read_file("/proc/sys/kernel/random/boot_id").decode().strip()


def test_before(guest):
    BOOT_IDS.with_name("before").write_text(boot_id(guest))


def test_kills_sshd(guest):
    guest.run(["pkill", "-KILL", "sshd"], check=False)


def test_after_the_reboot(guest):
    BOOT_IDS.with_name("after").write_text(boot_id(guest))
"""


def test_cases_on_a_target_end_as_on_a_guest_the_harness_boots(kernel, tmp_path, request):
    from overlay_harness.plugin.session import STATE_KEY
    state = request.config.stash[STATE_KEY]
    port = free_port()
    machine = SshdVM(kernel, state.accel, tmp_path / "vm", name="ovh-selftest-target",
                     ssh_port=port)
    home = tmp_path / "home"  # the runs' HOME: its ~/.ssh/known_hosts holds the guest's key
    (home / ".ssh").mkdir(parents=True)
    env = dict(os.environ, HOME=str(home))
    target = [f"--target=ssh://root@127.0.0.1:{port}", f"--target-key={machine.ssh_key}"]
    try:
        machine.start()
        g = Guest(machine.agent)
        ensure_guest_network(g)
        if not wait_for(lambda: ssh_answers(port), timeout=60, interval=0.5):
            sshd = g.run(["pgrep", "-a", "sshd"], check=False).stdout
            log = [r[3] for r in g.kmsg(-1) if "virtme" in r[3] or "ssh" in r[3]]
            pytest.fail(f"no sshd answers in the guest: sshd processes {sshd!r}; {log[-10:]}")
        pids = qemu_processes(machine.name)
        listening = [line.split() for t in ("/proc/net/tcp", "/proc/net/tcp6")
                     for line in open(t).read().splitlines()[1:]]
        ours = [f for f in listening if f[9] in socket_inodes(pids[0]) & listening_tcp_inodes()]
        assert ours and all(f[1] == f"0100007F:{port:04X}" for f in ours), ours  # 127.0.0.1 only
        sysctls = {k: g.must.read_file(f"/proc/sys/{k}") for k in SYSCTLS}
        g.run(["modprobe", "loop"])  # a loop device of the guest's own, there before any session
        g.must.write_file("/run/own.img", b"\0" * (1 << 20))
        own = g.must.loop_attach("/run/own.img")

        # An unknown host key stops the run before any case, saying how to accept it.
        done, summary, _, _ = pytest_run(CASES + target, tmp_path / "unknown-key", env)
        assert done.returncode == 3, done.stdout[-3000:]
        assert f"ssh-keyscan -p {port}" in done.stdout + done.stderr
        assert guest_leftovers(g, own) == []

        keys = subprocess.run(["ssh-keyscan", "-p", str(port), "127.0.0.1"], capture_output=True,
                              text=True, timeout=60, check=True).stdout
        (home / ".ssh/known_hosts").write_text(keys)
        round_trips = {"port": round_trip_ms(machine.agent)}
        spec = target_mod.TargetSpec("root", "127.0.0.1", port)
        direct = target_mod.SshTarget(spec, target_mod.target_kernel(spec), tmp_path / "direct",
                                      key_file=str(machine.ssh_key),
                                      known_hosts=str(home / ".ssh/known_hosts"))
        try:
            direct.start()
            assert direct.guest_release == kernel.release
            round_trips["ssh"] = round_trip_ms(direct.agent)
        finally:
            direct.stop()
        on_target, summary_t, timing_t, wall_t = pytest_run(CASES + target, tmp_path / "on-target", env)
        assert summary_t and summary_t["results"], on_target.stdout[-3000:]
        assert {r["guest_release"] for r in summary_t["results"] if "guest_release" in r} \
            <= {kernel.release}
        assert guest_leftovers(g, own) == [], "the target run left things in the guest"
        assert {k: g.must.read_file(f"/proc/sys/{k}") for k in SYSCTLS} == sysctls

        # A target that stops answering: the case that lost it errors (lost), the next one
        # errors as gone, at once, with no reboot command to bring it back.
        (tmp_path / "lose").mkdir()
        (tmp_path / "lose/test_lose.py").write_text(LOSE_THE_TARGET.format(own=own))
        lost, summary_l, _, _ = pytest_run([str(tmp_path / "lose"), *target], tmp_path / "lost", env,
                                           timeout=120)
        rec = {r["case"].split("::")[-1]: r for r in summary_l["results"]}
        assert rec["test_own_device_refused"]["outcome"] == "passed", lost.stdout[-3000:]
        assert rec["test_leaks"]["outcome"] == "error"
        assert "left things behind" in rec["test_leaks"]["message"]
        assert rec["test_a_splat"]["outcome"] == "failed", lost.stdout[-3000:]
        assert "kernel splat during the case" in rec["test_a_splat"]["message"]
        assert rec["test_clean"]["outcome"] == "passed"
        assert rec["test_kills_sshd"]["outcome"] == "error", lost.stdout[-3000:]
        assert rec["test_kills_sshd"].get("infra_error") == "lost"
        assert rec["test_after"]["outcome"] == "error" and rec["test_after"].get("infra_error") == "lost"
        assert "is gone: it stopped answering SSH" in rec["test_after"]["message"]
        # A gone target keeps the session's private directory and the lost case's scratch
        # tmpfs in it (the next session removes them), and nothing else.
        left = guest_leftovers(g, own)
        assert left and left[0].startswith("/tmp/ovh-target.") and all(
            x.startswith(left[0] + "/scratch/test_kills_sshd") for x in left[1:]), left
        assert g.must.read_file(f"/sys/block/{os.path.basename(own)}/loop/backing_file")  # spared

        # With --target-reboot the target, still down from the run above, is rebooted before
        # the first session; a target lost midway is rebooted again (a new boot id), the
        # harness waits for SSH and the next case runs on the new boot.
        (tmp_path / "reboot").mkdir()
        (tmp_path / "reboot/test_reboot.py").write_text(
            REBOOT_THE_TARGET.format(boot_ids=str(tmp_path / "reboot" / "ids")))
        switch = PowerSwitch(machine, tmp_path / "reboot-requested")
        try:
            rebooted, summary_r, _, _ = pytest_run(
                [str(tmp_path / "reboot"), *target, f"--target-reboot={switch.command}"],
                tmp_path / "rebooted", env, timeout=300)
        finally:
            switch.close()
        assert switch.error is None, switch.error
        rec = {r["case"].split("::")[-1]: r for r in summary_r["results"]}
        assert rec.get("test_before", {}).get("outcome") == "passed", rebooted.stdout[-3000:]
        assert rec["test_kills_sshd"]["outcome"] == "error"
        assert rec["test_kills_sshd"].get("infra_error") == "lost"
        assert rec["test_after_the_reboot"]["outcome"] == "passed", rebooted.stdout[-3000:]
        assert switch.boots == 2, rebooted.stdout[-3000:]
        if switch.stalled:
            print(f"\nthe power switch tried a stalled boot again: {switch.stalled}")
        before, after = ((tmp_path / "reboot" / n).read_text() for n in ("before", "after"))
        g = Guest(machine.agent)
        assert before != after == g.must.read_file("/proc/sys/kernel/random/boot_id").decode().strip()
        assert guest_leftovers(g, None) == [], "the run after the reboot left things in the guest"
    finally:
        machine.stop()
    wait_for(lambda: not qemu_processes(machine.name), 10)
    assert qemu_processes(machine.name) == []

    booted, summary_b, timing_b, wall_b = pytest_run(CASES, tmp_path / "booted")
    assert outcomes(summary_t) == outcomes(summary_b), (on_target.stdout[-2000:], booted.stdout[-2000:])
    assert len(outcomes(summary_b)) >= 10
    print(f"\nagent round trip (stat): virtio port {round_trips['port']:.2f} ms, "
          f"SSH {round_trips['ssh']:.2f} ms")
    print(f"per case (setup+call+teardown, mean): over SSH {per_case_s(timing_t):.2f} s, "
          f"virtio port {per_case_s(timing_b):.2f} s; runs {wall_t:.0f} s / {wall_b:.0f} s "
          f"(booted: with its boot {timing_b['boots_s']}; the target's session start {timing_t['boots_s']})")


def test_two_targets_share_one_run_under_xdist(kernel, tmp_path, request):
    """-n 2 with two --target machines: each worker runs its cases on its own target (the
    results name the target each ran on), the cases end as on one target, and neither
    machine keeps anything. The two guests share one client key and host key pair (the
    second is given the first's keys), so that one --target-key serves both."""
    from overlay_harness.plugin.session import STATE_KEY
    state = request.config.stash[STATE_KEY]
    machines = [SshdVM(kernel, state.accel, tmp_path / f"vm{i}", name=f"ovh-selftest-target{i}",
                       ssh_port=free_port()) for i in range(2)]
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    env = dict(os.environ, HOME=str(home))
    try:
        machines[0].start()
        shutil.copytree(machines[0].workdir / "ssh-keys", machines[1].workdir / "ssh-keys", symlinks=True)
        machines[1].start()
        for m in machines:
            ensure_guest_network(Guest(m.agent))
            assert wait_for(lambda m=m: ssh_answers(m.ssh_port), timeout=60, interval=0.5), m.name
        keys = "".join(subprocess.run(["ssh-keyscan", "-p", str(m.ssh_port), "127.0.0.1"],
                                      capture_output=True, text=True, timeout=60, check=True).stdout
                       for m in machines)
        (home / ".ssh/known_hosts").write_text(keys)
        specs = [f"ssh://root@127.0.0.1:{m.ssh_port}" for m in machines]
        done, summary, _, _ = pytest_run(CASES + ["-n", "2", *(f"--target={s}" for s in specs),
                                                  f"--target-key={machines[0].ssh_key}"],
                                         tmp_path / "two", env)
        assert summary and summary["results"], done.stdout[-3000:]
        by_target = {}
        for r in summary["results"]:
            by_target.setdefault(r["kernel"], []).append(r["outcome"])
        assert set(by_target) == set(specs), by_target
        assert all(o in ("passed", "xfailed", "skipped") for outs in by_target.values() for o in outs), \
            done.stdout[-3000:]
        for m in machines:
            assert guest_leftovers(Guest(m.agent), None) == [], m.name
    finally:
        for m in machines:
            m.stop()
    wait_for(lambda: not any(qemu_processes(m.name) for m in machines), 10)
