"""A machine the harness does not boot: the cases over SSH on a kernel that already runs.

    --target ssh://[user@]host[:port]   (one per xdist worker; --target-key FILE, --target-reboot CMD)

`SshTarget` is the second kind of machine beside `vm.VM`, with the interface the fixtures
use (start, alive, agent, kernel, guest_release, boots, timings, console_log, stop,
restart): paramiko opens the session, checking the host key against ~/.ssh/known_hosts;
preflight runs on the target; the guest-side scripts (in_guest/*.py, stdlib only) go over
SFTP into a private directory there (mktemp -d: 0700); the agent starts as root (`sudo -n`
when the user is not root) and speaks the same JSON lines over the channel's stdin and
stdout that a VM's virtio-serial port carries.

What differs from a VM, explicitly:
- the kernel is the one the target runs: its release comes from the agent's uname, its
  config from /proc/config.gz or /boot/config-<release> (library/features.py);
- scratch devices are the loop devices the harness makes there: a call naming a block
  device the target had before (its disks, partitions, its own loop and dm devices, by
  /dev name or through any alias that resolves to one) is refused before it is sent;
- nothing is left behind: the cases clean after themselves (the guest fixture checks),
  and stop() removes whatever is still there (mounts under the private directory, dm
  devices over the harness's loop devices, those loop devices, changed sysctls, the
  directory itself); a directory a lost session could not remove goes at the next start;
- a target that stops answering (no SSH banner any more) is GuestLost; with a reboot
  command the harness runs it and waits for a new boot (a new boot_id), without one
  TargetGone: the worker's remaining cases are errors that say so.
"""

import base64
import getpass
import hashlib
import os
import re
import shlex
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paramiko

from ..in_guest import script
from . import preflight, splat
from .accel import Accel
from .agent_client import AgentClient, AgentError, GuestLost, GuestTimeout, LineChannel
from .agent_client import Errno as GuestErrno  # a refused call's value
from .kernel import Kernel
from .vng import BootError

ACCEL = Accel("ssh", "a running machine (--target): the harness does not boot it")
KNOWN_HOSTS = "~/.ssh/known_hosts"
CONNECT_TIMEOUT_S = 15.0
MNT_DETACH = 2
DEV_PATH = re.compile(r"/dev/[^\s,:;'\"]+")
DEV_ALIASES = ("/dev/disk/", "/dev/block/", "/dev/root")  # names of devices the target has


class TargetUsageError(ValueError):
    """The --target options are wrong (a usage error, before anything connects)."""


class TargetGone(GuestLost):
    """The target stopped answering and cannot be brought back (no --target-reboot)."""


class RefusedDevice(AgentError):
    """A call named a block device of the target's own."""


@dataclass(frozen=True)
class TargetSpec:
    user: str
    host: str
    port: int = 22

    def __str__(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}:{self.port}"

    @property
    def known_hosts_name(self):
        """How known_hosts (and ssh-keyscan) name the host: `host`, or `[host]:port`."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def parse_target(text, default_user=None):
    """ssh://[user@]host[:port] -> TargetSpec (TargetUsageError naming what is wrong)."""
    form = "write ssh://[user@]host[:port]"
    parts = urlsplit(text)
    if parts.scheme != "ssh" or not parts.netloc:
        raise TargetUsageError(f"--target {text!r}: {form}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
        raise TargetUsageError(f"--target {text!r}: no path, password or query: {form}")
    try:
        port = parts.port or 22
    except ValueError:
        raise TargetUsageError(f"--target {text!r}: the port is not a number in 1-65535: {form}")
    if not parts.hostname:
        raise TargetUsageError(f"--target {text!r}: no host: {form}")
    return TargetSpec(parts.username or default_user or getpass.getuser(), parts.hostname, port)


def parse_targets(texts, key_file=None, reboot=None, workers=None, kernels=()):
    """Every --target checked before anything connects: well formed, distinct, one per
    xdist worker (workers: -n's number, None without xdist), no --kernel beside them, and
    --target-key / --target-reboot only with them."""
    if not texts:
        for name, value in (("--target-key", key_file), ("--target-reboot", reboot)):
            if value:
                raise TargetUsageError(f"{name} needs --target ssh://[user@]host[:port]")
        return []
    specs = [parse_target(t) for t in texts]
    if len(set(specs)) != len(specs):
        raise TargetUsageError(f"--target names one machine twice: {', '.join(texts)}")
    if kernels:
        raise TargetUsageError("--kernel and --target: a target runs its own kernel (give one of them)")
    if workers and len(specs) != workers:
        raise TargetUsageError(f"{len(specs)} --target machine(s) and -n {workers}: "
                               f"one target per xdist worker (-n {len(specs)})")
    if not workers and len(specs) > 1:
        raise TargetUsageError(f"{len(specs)} --target machines need one xdist worker each: "
                               f"-n {len(specs)}")
    if key_file and not os.access(os.path.expanduser(key_file), os.R_OK):
        raise TargetUsageError(f"--target-key {key_file}: no such readable file")
    return specs


@dataclass
class TargetKernel(Kernel):
    """The kernel a target runs: unknown until it connects, when start() fills in its
    release (and prepare_guest its config, from the target). Its label, what reports and
    summary.json name the kernel by, is the target's address."""

    target: str = ""

    @property
    def label(self):
        return self.target


def target_kernel(spec):
    return TargetKernel(image=f"the kernel {spec} runs", release=str(spec), run_arg=None,
                        target=str(spec))


def fingerprint(key):
    """OpenSSH's SHA256:... fingerprint of a host key."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class UnknownHostKey(BootError):
    """The target's host key is not in known_hosts."""


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, spec, known_hosts):
        self.spec, self.known_hosts = spec, known_hosts

    def missing_host_key(self, client, hostname, key):
        s = self.spec
        raise UnknownHostKey(
            f"{s}: its host key ({key.get_name()} {fingerprint(key)}) is not in {self.known_hosts}. "
            f"Check that fingerprint on the machine (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), "
            f"then accept it: ssh-keyscan -p {s.port} -t {key.get_name()} {s.host} >> {self.known_hosts}")


class TargetAgentClient(AgentClient):
    """The agent of a target: a call naming one of the target's own block devices is
    refused before it is sent; the host's paths of the guest-side scripts become their
    copies on the target; a call that times out on a target that no longer answers SSH
    is a lost target."""

    def __init__(self, target, channel, call_timeout):
        super().__init__(channel, call_timeout=call_timeout)
        self.target = target

    def request(self, op, args=(), kwargs=None, timeout=None):
        args = [self.target.translate(a) for a in args]
        kwargs = {k: self.target.translate(v) for k, v in (kwargs or {}).items()}
        self.target.refuse_own_devices(op, [args, kwargs])
        try:
            return super().request(op, args, kwargs, timeout)
        except GuestTimeout as e:
            if not self.target.answers():
                raise GuestLost(f"{self.target.spec} stopped answering: {e}") from e
            raise

    def raw(self, op, *args, timeout=None):
        """A call of the harness's own (no translation, no refusal)."""
        return AgentClient.request(self, op, args, timeout=timeout)


class SshTarget:
    """A running machine reached over SSH, used as the fixtures use a VM."""

    accel = ACCEL

    def __init__(self, spec, kernel, workdir, key_file=None, reboot=None, boot_timeout=180.0,
                 call_timeout=120.0, name="target", known_hosts=KNOWN_HOSTS):
        self.spec = spec
        self.kernel = kernel
        self.workdir = Path(workdir)
        self.key_file = os.path.expanduser(key_file) if key_file else None
        self.reboot = reboot
        self.boot_timeout = boot_timeout
        self.call_timeout = call_timeout
        self.name = name
        self.known_hosts = os.path.expanduser(known_hosts)
        self.console_log = self.workdir / "target.log"  # the session's events, the agent's stderr
        self.ssh = None
        self.proc = None          # the agent's channel (its remote process)
        self.agent = None
        self.remote_dir = None    # the private directory on the target
        self.scratch_root = None  # where the cases' scratch tmpfs go: inside remote_dir
        self.stale_dirs = []      # private directories a lost session left
        self.own_rdevs = set()    # the block devices the target had: (major, minor)
        self.restore = []         # [path, bytes]: files (sysctls) to put back at stop
        self.boot_id = None
        self.gone = None          # why the target cannot come back
        self.guest_release = None
        self.timings = {}
        self.boots = 0            # sessions started
        self.boot_offset = 0
        self.scripts = {}         # host path of a guest-side script -> its copy on the target

    @property
    def reboots(self):
        """Whether a case that needs a fresh kernel can get one (a reboot command)."""
        return bool(self.reboot)

    # -- start ---------------------------------------------------------------
    def start(self):
        if self.gone:
            raise TargetGone(self.gone)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.reboot and not self.answers():
            self._reboot(self.boot_id)  # down before this session: the reboot command powers it on
        self.boots += 1
        self._log(f"\n===== overlay-harness: session {self.boots} of {self.name}: {self.spec} =====")
        self.boot_offset = self.console_log.stat().st_size
        t0 = time.monotonic()
        try:
            self.ssh = self._connect()
            self.timings["ssh"] = time.monotonic() - t0
            root = self._preflight()
            self.remote_dir = self._upload()
            self._start_agent(root)
            info = self.agent.raw("ping", timeout=max(5.0, self.boot_timeout - (time.monotonic() - t0)))
        except GuestLost as e:  # the agent exited at once (sudo refused, python3 broken)
            err = self._agent_stderr()
            self.stop()
            raise BootError(f"{self.spec}: the agent did not start: {err or e}") from None
        except BootError:
            self.stop()
            raise
        except (paramiko.SSHException, OSError, EOFError) as e:  # the session broke midway
            self.stop()
            raise BootError(f"{self.spec}: the session broke while it started: {e}") from None
        self.guest_release = self.kernel.release = info["release"]
        self.boot_id = self.agent.raw("read_file", "/proc/sys/kernel/random/boot_id").decode().strip()
        self.own_rdevs = self._block_devices()
        self._remove_stale_dirs()
        self.timings["ready"] = time.monotonic() - t0
        self._log(f"agent {info['pid']} ready on {self.guest_release} in {self.timings['ready']:.2f} s "
                  f"({self.remote_dir})")
        return self

    def _connect(self):
        client = paramiko.SSHClient()
        if os.path.exists(self.known_hosts):
            client.load_system_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(_RejectUnknown(self.spec, self.known_hosts))
        s = self.spec
        try:
            client.connect(s.host, port=s.port, username=s.user, key_filename=self.key_file,
                           allow_agent=True, look_for_keys=self.key_file is None,
                           timeout=CONNECT_TIMEOUT_S, banner_timeout=CONNECT_TIMEOUT_S,
                           auth_timeout=CONNECT_TIMEOUT_S)
        except UnknownHostKey:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise BootError(
                f"{s}: its host key ({e.key.get_name()} {fingerprint(e.key)}) is not the one "
                f"{self.known_hosts} has for {s.known_hosts_name} ({fingerprint(e.expected_key)}): "
                f"the connection may be intercepted, or the machine was reinstalled. If so: "
                f"ssh-keygen -f {self.known_hosts} -R '{s.known_hosts_name}', then accept the new "
                f"key (ssh-keyscan -p {s.port} {s.host} >> {self.known_hosts})") from None
        except paramiko.AuthenticationException as e:
            client.close()
            how = f"--target-key {self.key_file}" if self.key_file else "the SSH agent's and ~/.ssh's keys"
            raise BootError(f"{s}: refused user {s.user} with {how}: {e}") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            raise BootError(f"{s}: cannot connect: {e}") from None
        client.get_transport().set_keepalive(15)
        return client

    def _exec(self, command, timeout=60.0):
        """Run a shell command on the target as the SSH user: (rc, stdout, stderr)."""
        chan = self.ssh.get_transport().open_session(timeout=CONNECT_TIMEOUT_S)
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            out = chan.makefile("rb").read().decode(errors="replace")
            err = chan.makefile_stderr("rb").read().decode(errors="replace")
            return chan.recv_exit_status(), out, err
        finally:
            chan.close()

    def _preflight(self):
        """What the target lacks (preflight's list, run there): BootError naming every
        blocking problem; whether the user is root."""
        names = " ".join(shlex.quote(c) for c, *_ in preflight.COMMANDS if c not in preflight.HOST_ONLY)
        probe = (f'PATH="$PATH:{preflight.SBIN}"; for c in {names} sudo; do '
                 'command -v "$c" >/dev/null 2>&1 && echo "have $c"; done; '
                 'if [ "$(id -u)" = 0 ]; then echo root; elif sudo -n true 2>/dev/null; then echo sudo; fi; '
                 'echo os-release; cat /etc/os-release 2>/dev/null')
        rc, out, err = self._exec(probe)
        head, _, release_text = out.partition("os-release\n")
        lines = head.split()
        present = {lines[i + 1] for i, w in enumerate(lines[:-1]) if w == "have"}
        release = preflight.parse_os_release(release_text)
        problems = preflight.target_problems(present, release)
        root = "root" in lines
        if not root and "sudo" not in lines:
            problems.insert(0, preflight.Problem(
                f"{self.spec.user} is not root and `sudo -n true` fails there: log in as root "
                f"(ssh://root@...) or give {self.spec.user} passwordless sudo (NOPASSWD)"))
        for p in problems:
            self._log(f"preflight: {p}")
        blocking = [str(p) for p in problems if p.blocking]
        if blocking:
            raise BootError(f"{self.spec} cannot run the cases yet: " + "; ".join(blocking))
        return root

    def _upload(self):
        """The guest-side scripts, over SFTP, into a new private directory (0700)."""
        rc, out, err = self._exec("umask 077 && mktemp -d /tmp/ovh-target.XXXXXXXX")
        if rc != 0 or not out.strip().startswith("/"):
            raise BootError(f"{self.spec}: cannot make a private directory: {err.strip() or out}")
        remote = out.strip()
        here = script("agent.py").parent
        sftp = self.ssh.open_sftp()
        try:
            for path in sorted(here.glob("*.py")):
                sftp.put(str(path), f"{remote}/{path.name}")
                self.scripts[str(path)] = f"{remote}/{path.name}"
        finally:
            sftp.close()
        self.scratch_root = f"{remote}/scratch"
        return remote

    def _start_agent(self, root):
        command = f"python3 -I -S {shlex.quote(self.remote_dir)}/agent.py"
        chan = self.ssh.get_transport().open_session(timeout=CONNECT_TIMEOUT_S)
        chan.exec_command(command if root else f"sudo -n {command}")
        self.proc = chan
        self.agent = TargetAgentClient(self, LineChannel.from_paramiko(chan), self.call_timeout)

    def _block_devices(self):
        """(major, minor) of every block device the target has now, partitions included,
        but for the loop devices that are free (the harness may take those)."""
        found = set()
        for name in self.agent.raw("listdir", "/sys/class/block"):
            base = f"/sys/class/block/{name}"
            if name.startswith("loop") and not self._exists(f"{base}/loop/backing_file") \
                    and not self._exists(f"{base}/partition"):
                continue
            dev = self.agent.raw("read_file", f"{base}/dev")
            if isinstance(dev, bytes):
                major, minor = dev.decode().strip().split(":")
                found.add((int(major), int(minor)))
        return found

    def _exists(self, path):
        return not isinstance(self.agent.raw("stat", path), GuestErrno)

    # -- what a case sends -----------------------------------------------------
    def translate(self, value):
        """The host's path of a guest-side script becomes its copy on the target."""
        if isinstance(value, str):
            return self.scripts.get(value, value)
        if isinstance(value, os.PathLike):
            return self.scripts.get(os.fspath(value), value)
        if isinstance(value, list):
            return [self.translate(v) for v in value]
        return value

    def refuse_own_devices(self, op, value):
        """RefusedDevice when a string in the call names a block device the target had."""
        for path in _dev_paths(value):
            if path.startswith(DEV_ALIASES):
                raise RefusedDevice(f"{op}(): {path} names a block device of {self.spec}'s own; "
                                    "cases on a target use the loop devices the harness makes")
            st = self.agent.raw("stat", path)
            if isinstance(st, GuestErrno) or not stat.S_ISBLK(st["st_mode"]):
                continue
            rdev = (os.major(st["st_rdev"]), os.minor(st["st_rdev"]))
            if rdev in self.own_rdevs:
                raise RefusedDevice(f"{op}(): {path} is a block device of {self.spec}'s own "
                                    f"({rdev[0]}:{rdev[1]}); cases on a target use the loop devices "
                                    "the harness makes")

    def restore_at_stop(self, path, data):
        """Put `data` back into `path` (a sysctl the harness changed) when the session stops."""
        if not any(p == path for p, _ in self.restore):
            self.restore.append([path, data])

    # -- state ---------------------------------------------------------------
    def alive(self):
        t = self.ssh.get_transport() if self.ssh else None
        return (self.proc is not None and t is not None and t.is_active()
                and not self.proc.closed and not self.proc.eof_received
                and not self.proc.exit_status_ready())

    def answers(self, timeout=10.0):
        """Whether the target's SSH server still greets a new connection."""
        try:
            with socket.create_connection((self.spec.host, self.spec.port), timeout=timeout) as s:
                s.settimeout(timeout)
                return s.recv(4) == b"SSH-"
        except OSError:
            return False

    def settle_console(self, quiet=1.0, timeout=10.0):
        """Nothing reaches a target's log after the fact but the agent's stderr."""
        self._log_stderr()

    def console_excerpt(self):
        try:
            with open(self.console_log, "rb") as f:
                f.seek(self.boot_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            text = ""
        return splat.console_excerpt(text, splat.default_policy())

    def check_alive(self):
        if not self.alive():
            raise GuestLost(f"{self.spec}: the session is gone\n{self.console_excerpt()}")

    def _log(self, text):
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.console_log, "a") as f:
            f.write(text.rstrip("\n") + "\n")

    def _agent_stderr(self):
        chan, out = self.proc, b""
        if chan is None:
            return ""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not (chan.exit_status_ready() and not chan.recv_stderr_ready()):
            if chan.recv_stderr_ready():
                out += chan.recv_stderr(65536)
            else:
                time.sleep(0.02)
        while chan.recv_stderr_ready():
            out += chan.recv_stderr(65536)
        text = out.decode(errors="replace").strip()
        if chan.exit_status_ready():
            text += f" (exit status {chan.recv_exit_status()})"
        return text.strip()

    def _log_stderr(self):
        chan = self.proc
        if chan is None:
            return
        out = b""
        while chan.recv_stderr_ready():
            out += chan.recv_stderr(65536)
        if out:
            self._log("agent: " + out.decode(errors="replace"))

    # -- stop ----------------------------------------------------------------
    def stop(self):
        """End the session, leaving nothing on the target (what is left goes now)."""
        if self.agent is not None and not self.agent.broken and self.alive():
            try:
                self._clean_up()
            except (GuestLost, GuestTimeout, AgentError, OSError) as e:
                self._log(f"clean-up on {self.spec} failed: {e}")
        if self.remote_dir:  # the agent could not remove it: try as the SSH user, else later
            if not self._remove_dir_over_ssh(self.remote_dir):
                self.stale_dirs.append(self.remote_dir)
            self.remote_dir = None
        self._log_stderr()
        if self.agent is not None:
            self.agent.close()
            self.agent = None
        if self.ssh is not None:
            self.ssh.close()
            self.ssh = None
        self.proc = None

    def _clean_up(self):
        a, top = self.agent, self.remote_dir
        a.raw("chdir", "/")
        a.raw("close_all")
        self._detach_mounts_under(top)
        loops = []
        for name in a.raw("listdir", "/sys/block"):
            backing = a.raw("read_file", f"/sys/block/{name}/loop/backing_file")
            if name.startswith("loop") and isinstance(backing, bytes) \
                    and backing.decode().strip().startswith(top + "/"):
                loops.append(name)
        for name in a.raw("listdir", "/sys/block"):  # dm devices over those loop devices
            if name.startswith("dm-"):
                slaves = a.raw("listdir", f"/sys/block/{name}/slaves")
                if not isinstance(slaves, GuestErrno) and set(slaves) & set(loops):
                    dm = a.raw("read_file", f"/sys/block/{name}/dm/name").decode().strip()
                    self._log(f"left behind: dm device {dm} ({name})")
                    a.raw("dm_remove", dm)
        for name in loops:
            self._log(f"left behind: loop device {name}")
            a.raw("loop_detach", f"/dev/{name}")
        for path, data in self.restore:
            a.raw("write_file", path, data)
        self.restore = []
        result = a.raw("run", ["rm", "-rf", "--one-file-system", top])
        if isinstance(result, dict) and result.get("rc") == 0:
            self.remote_dir = None

    def _detach_mounts_under(self, top):
        text = self.agent.raw("read_file", "/proc/self/mountinfo").decode()
        mounts = [line.split()[4].replace("\\040", " ") for line in text.splitlines()]
        for m in sorted((m for m in mounts if m.startswith(top + "/")), key=len, reverse=True):
            self._log(f"left behind: mount {m}")
            self.agent.raw("umount2", m, MNT_DETACH)

    def _remove_dir_over_ssh(self, path):
        if self.ssh is None or not self.ssh.get_transport() or not self.ssh.get_transport().is_active():
            return False
        try:
            rc, _, err = self._exec(f"rm -rf --one-file-system {shlex.quote(path)}", timeout=30)
        except (paramiko.SSHException, OSError, EOFError):
            return False
        if rc != 0:
            self._log(f"cannot remove {path} on {self.spec}: {err.strip()}")
        return rc == 0

    def _remove_stale_dirs(self):
        for path in list(self.stale_dirs):
            self._detach_mounts_under(path)  # the lost case's scratch tmpfs
            result = self.agent.raw("run", ["rm", "-rf", "--one-file-system", path])
            if isinstance(result, dict) and result.get("rc") == 0:
                self.stale_dirs.remove(path)
                self._log(f"removed {path}, left by an earlier session")

    def restart(self):
        """A new session after the last one was lost (or for a case that needs a fresh
        kernel): with a reboot command, reboot and wait for a new boot; else reconnect
        when the target still answers, or TargetGone."""
        old_boot = self.boot_id
        self.stop()
        if self.reboot:
            self._reboot(old_boot)
        elif not self.answers():
            self.gone = (f"{self.spec} is gone: it stopped answering SSH, and without "
                         "--target-reboot COMMAND the harness cannot bring it back")
            raise TargetGone(self.gone)
        return self.start()

    def _reboot(self, old_boot):
        self._log(f"reboot: {self.reboot}")
        try:
            done = subprocess.run(["sh", "-c", self.reboot], capture_output=True, text=True,
                                  timeout=self.boot_timeout)
        except subprocess.TimeoutExpired:
            raise BootError(f"{self.spec}: --target-reboot took over {self.boot_timeout:.0f} s") from None
        if done.returncode != 0:
            raise BootError(f"{self.spec}: --target-reboot exited with {done.returncode}: "
                            f"{done.stderr.strip()[-500:]}")
        deadline = time.monotonic() + self.boot_timeout
        while time.monotonic() < deadline:  # until SSH answers from a new boot
            if self.answers(timeout=5.0):
                try:
                    self.ssh = self._connect()
                    rc, out, _ = self._exec("cat /proc/sys/kernel/random/boot_id",
                                            timeout=max(10.0, deadline - time.monotonic()))
                    if rc == 0 and out.strip() != old_boot:
                        return
                except (BootError, paramiko.SSHException, OSError, EOFError):
                    pass  # still coming up: SSH can greet before it serves a session in time
                finally:
                    if self.ssh is not None:
                        self.ssh.close()
                        self.ssh = None
            time.sleep(2.0)
        raise BootError(f"{self.spec}: no new boot answered SSH {self.boot_timeout:.0f} s after "
                        "--target-reboot")


def _dev_paths(value):
    if isinstance(value, str):
        yield from DEV_PATH.findall(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _dev_paths(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _dev_paths(v)

