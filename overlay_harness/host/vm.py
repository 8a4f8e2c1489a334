"""One guest: `vng` under a reaper, SSH to it, and the agent over one SSH channel.

Lifecycle: spawn vng (its console into a log file) with the agent as the
guest's `--exec` command; wait for the agent's ready line on the console;
connect with paramiko using a key made for this VM; open a direct-tcpip
channel to the agent's port on the guest's loopback; ping. Every wait has a
deadline; a boot that dies or times out raises BootError quoting the console.
"""

import logging
import shutil
import socket
import time
from pathlib import Path

import paramiko

from ..in_guest import agent as agent_mod
from ..in_guest import script
from . import preflight, splat
from .agent_client import AgentClient, GuestLost, LineChannel
from .vng import BootError, guest_python, spawn_vng, stop_supervised, vng_command

AGENT_GUEST_PORT = 7519
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
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VM:
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
        self.ssh = None
        self.agent = None
        self.port = None
        self.timings = {}
        self.boots = 0
        self.boot_offset = 0  # where the current boot's console output begins

    # -- start ---------------------------------------------------------------
    def command(self, port):
        agent = (f"exec {guest_python()} -I -S {script('agent.py')} "
                 f"--listen 127.0.0.1:{AGENT_GUEST_PORT} --ensure-network")
        return [vng_command(), "--verbose", "--run", self.kernel.run_arg, *self.accel.vng_args(),
                "--force-9p", "--memory", str(self.memory), "--cpus", str(self.cpus),
                "--name", self.name, "--ssh", str(port), "--ssh-tcp",
                *(["--append", " ".join(self.cmdline)] if self.cmdline else []), "--exec", agent]

    def start(self):
        preflight.check(self.kernel.image, self.memory)
        self.workdir.mkdir(parents=True, exist_ok=True)
        home = self.workdir / "home"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir()
        for attempt in range(3):
            self.port = free_port()
            try:
                return self._boot(home)
            except BootError as e:
                self.stop()
                if "Could not set up host forwarding" in str(e) and attempt < 2:
                    continue  # the port was taken between our check and QEMU's bind
                raise

    def _boot(self, home):
        self.boots += 1
        with open(self.console_log, "a") as f:
            f.write(f"\n===== overlay-harness: boot {self.boots} of {self.name}: "
                    f"{self.kernel.release} ({self.accel.name}) =====\n")
        self.boot_offset = self.console_log.stat().st_size
        t0 = time.monotonic()
        self.proc, self.pgid_file = spawn_vng(self.command(self.port), self.console_log, home)
        deadline = t0 + self.boot_timeout
        self._wait_console(agent_mod.READY_MARK, deadline)
        self.timings["agent_listening"] = time.monotonic() - t0
        self.ssh = self._connect_ssh(home / ".cache/virtme-ng/.ssh/id_virtme", deadline)
        self.timings["ssh"] = time.monotonic() - t0
        chan = self.ssh.get_transport().open_channel(
            "direct-tcpip", ("127.0.0.1", AGENT_GUEST_PORT), ("127.0.0.1", 0), timeout=30)
        self.agent = AgentClient(LineChannel.from_paramiko(chan), call_timeout=self.call_timeout)
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

    def _connect_ssh(self, key_file, deadline):
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            try:
                client.connect("127.0.0.1", port=self.port, username="root",
                               key_filename=str(key_file), look_for_keys=False,
                               allow_agent=False, timeout=10, banner_timeout=10,
                               auth_timeout=10)
                return client
            except (paramiko.SSHException, OSError, EOFError) as e:
                last = e
                client.close()
                time.sleep(0.5)
        raise BootError(f"{self.name}: SSH to 127.0.0.1:{self.port} failed: {last}\n"
                        f"{self.console_excerpt()}")

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

    # -- stop ----------------------------------------------------------------
    def stop(self):
        if self.agent:
            self.agent.close()
            self.agent = None
        if self.ssh:
            self.ssh.close()
            self.ssh = None
        if self.proc is not None:
            stop_supervised(self.proc, self.pgid_file)
            self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def check_alive(self):
        if not self.alive():
            raise GuestLost(f"{self.name}: the VM is gone\n{self.console_excerpt()}")
