"""One guest: `vng` under a reaper, and the agent over a virtio-serial port.

Lifecycle: spawn vng (its console into a log file) with the agent as the
guest's `--exec` command and one virtio-serial port, `ovh.agent`, whose host
end is a Unix socket of this VM's own; wait for the agent's ready line on the
console; connect to the socket; ping. Every wait has a deadline; a boot that
dies or times out raises BootError quoting the console.

The port, not SSH: no NIC, no sshd and no cipher in the guest. Under TCG, measured the
same hour (bench/boot.py), an agent round trip took 9.6 ms over SSH and 1.7 ms over the port.
"""

import logging
import shutil
import socket
import tempfile
import time
from pathlib import Path

from ..in_guest import agent as agent_mod
from ..in_guest import script
from . import preflight, splat
from .agent_client import AgentClient, GuestLost, LineChannel
from .vng import BootError, guest_python, spawn_vng, stop_supervised, vng_command

AGENT_PORT_NAME = "ovh.agent"  # the virtio-serial port's name (/sys/class/virtio-ports/*/name)
KERNEL_SILENT_S = 45.0
# Extra kernel command line. Under TCG every module that udev loads at boot costs time
# (read over 9p, verified, relocated), and virtme-ng waits for udev to settle before it
# starts the agent: keep drivers for hardware the cases never use from loading.
BOOT_CMDLINE = ["modprobe.blacklist=" + ",".join([
    "kvm", "kvm_amd", "kvm_intel", "ccp", "irqbypass",             # no nested guests
    "crct10dif_pclmul", "crc32_pclmul", "ghash_clmulni_intel",     # accelerated crypto the
    "sha512_ssse3", "sha256_ssse3", "sha1_ssse3", "aesni_intel",   # cases do not need
    "crypto_simd", "cryptd",
    "sr_mod", "cdrom", "sg", "ahci", "libahci", "libata",           # q35's SATA and DVD
    "iTCO_wdt", "intel_pmc_bxt", "iTCO_vendor_support", "i6300esb",  # watchdogs
    "lpc_ich", "i2c_i801", "i2c_smbus", "qemu_fw_cfg",
    "evdev", "psmouse", "serio_raw", "pcspkr", "button", "joydev",  # input
    "powernow_k8", "acpi_cpufreq",
])]  # with --verbose the kernel's first line comes within a second or two
log = logging.getLogger(__name__)


class VM:
    scratch_root = "/run/ovh"  # where the cases' scratch tmpfs go in the guest
    reboots = True             # a case that needs a fresh kernel gets a new boot

    def __init__(self, kernel, accel, workdir, memory="2G", cpus=2, boot_timeout=180.0,
                 call_timeout=120.0, name="vm", cmdline=None):
        self.kernel = kernel
        self.accel = accel
        self.workdir = Path(workdir)
        self.memory = memory
        self.cpus = cpus
        self.boot_timeout = boot_timeout
        self.call_timeout = call_timeout
        self.name = name
        self.cmdline = BOOT_CMDLINE if cmdline is None else cmdline
        self.console_log = self.workdir / "console.log"
        self.proc = None
        self.pgid_file = None
        self.agent = None
        self.socket_dir = None  # holds agent.sock: a short path (sun_path has 108 bytes)
        self.timings = {}
        self.boots = 0
        self.boot_offset = 0  # where the current boot's console output begins

    # -- start ---------------------------------------------------------------
    def command(self, sock):
        agent = f"exec {guest_python()} -I -S {script('agent.py')} --port {AGENT_PORT_NAME}"
        port = (f"-chardev socket,id=ovhagent,path={sock},server=on,wait=off "
                f"-device virtserialport,chardev=ovhagent,name={AGENT_PORT_NAME}")
        return [vng_command(), "--verbose", "--run", self.kernel.run_arg, *self.accel.vng_args(),
                "--force-9p", "--memory", str(self.memory), "--cpus", str(self.cpus),
                "--name", self.name, f"--qemu-opts={port}",
                *(["--append", " ".join(self.cmdline)] if self.cmdline else []), "--exec", agent]

    def start(self):
        preflight.check(self.kernel.image, self.memory)
        self.workdir.mkdir(parents=True, exist_ok=True)
        home = self.workdir / "home"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir()
        self.socket_dir = Path(tempfile.mkdtemp(prefix="ovh-"))
        try:
            return self._boot(home)
        except BootError:
            self.stop()
            raise

    def _boot(self, home):
        self.boots += 1
        with open(self.console_log, "a") as f:
            f.write(f"\n===== overlay-harness: boot {self.boots} of {self.name}: "
                    f"{self.kernel.release} ({self.accel.name}) =====\n")
        self.boot_offset = self.console_log.stat().st_size
        t0 = time.monotonic()
        sock = self.socket_dir / "agent.sock"
        self.proc, self.pgid_file = spawn_vng(self.command(sock), self.console_log, home)
        deadline = t0 + self.boot_timeout
        self._wait_console(agent_mod.READY_MARK, deadline)
        self.timings["agent_listening"] = time.monotonic() - t0
        conn = socket.socket(socket.AF_UNIX)
        try:
            conn.connect(str(sock))
        except OSError as e:
            conn.close()
            raise BootError(f"{self.name}: the agent's port {sock}: {e}\n{self.console_excerpt()}") from e
        self.agent = AgentClient(LineChannel.from_socket(conn), call_timeout=self.call_timeout)
        info = self.agent.request("ping", timeout=max(5.0, deadline - time.monotonic()))
        self.timings["ready"] = time.monotonic() - t0
        self.guest_release = info["release"]
        return self

    def _wait_console(self, mark, deadline):
        start = time.monotonic()
        while True:
            text = self._boot_console()
            if mark in text:
                return
            if "Linux version" not in text and time.monotonic() - start > KERNEL_SILENT_S:
                raise BootError(f"{self.name}: the kernel printed nothing in {KERNEL_SILENT_S:.0f} s "
                                f"(not a bootable x86_64 kernel, or the accelerator hangs)\n"
                                f"{self.console_excerpt()}")
            if self.proc.poll() is not None:
                raise BootError(f"{self.name}: vng exited with {self.proc.returncode} before the "
                                f"guest agent started\n{self.console_excerpt()}")
            if time.monotonic() > deadline:
                raise BootError(f"{self.name}: no guest agent after {self.boot_timeout:.0f} s "
                                f"({self.accel.name})\n{self.console_excerpt()}")
            time.sleep(0.05)

    # -- state ---------------------------------------------------------------
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _boot_console(self):
        """The console output of the current (or last) boot."""
        try:
            with open(self.console_log, "rb") as f:
                f.seek(self.boot_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def settle_console(self, quiet=1.0, timeout=10.0):
        """Wait, bounded, until the console log stops growing: when a guest panics, the
        agent's channel closes while QEMU (and the reaper behind it) still write the
        panic's last lines."""
        deadline = time.monotonic() + timeout
        size, since = None, time.monotonic()
        while time.monotonic() < deadline:
            try:
                now = self.console_log.stat().st_size
            except OSError:
                now = None
            if now != size:
                size, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)

    def console_excerpt(self):
        """What a report quotes from the console of the current (or last) boot: from just
        before the first splat (a panic's headline), else the last 40 lines."""
        return splat.console_excerpt(self._boot_console(), splat.default_policy())

    def restore_at_stop(self, path, data):
        """Nothing to put back: the guest's state goes with it (a target's stays)."""

    # -- stop ----------------------------------------------------------------
    def stop(self):
        if self.agent:
            self.agent.close()
            self.agent = None
        if self.proc is not None:
            stop_supervised(self.proc, self.pgid_file)
            self.proc = None
        if self.socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None

    def restart(self):
        self.stop()
        return self.start()

    def check_alive(self):
        if not self.alive():
            raise GuestLost(f"{self.name}: the VM is gone\n{self.console_excerpt()}")
