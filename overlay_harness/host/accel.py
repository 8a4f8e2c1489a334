"""Choose the accelerator: KVM when a KVM guest really runs here, TCG otherwise.

On some hosts /dev/kvm opens and answers ioctls, yet a KVM guest hangs right
after the firmware. `auto` finds that out with a short probe boot, whose
verdict is cached per host, and falls back to TCG.
"""

import fcntl
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .kernel import cache_root
from .vng import spawn_vng, stop_supervised, vng_command  # the supervised launch the VMs use

KVM_GET_API_VERSION = 0xAE00
PROBE_FIRST_OUTPUT_S = 12.0   # a working KVM guest prints its banner well within this
PROBE_TOTAL_S = 60.0


@dataclass
class Accel:
    name: str        # "kvm" or "tcg"
    reason: str      # why, in words, for the header and logs

    def vng_args(self):
        return ["--disable-kvm"] if self.name == "tcg" else []


def kvm_device_usable(path="/dev/kvm"):
    """(usable, reason): /dev/kvm opens read-write and speaks KVM API 12."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return False, f"{path}: {e.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
    except OSError as e:
        return False, f"{path}: KVM_GET_API_VERSION failed: {e.strerror}"
    finally:
        os.close(fd)
    if version != 12:
        return False, f"{path}: unexpected KVM API version {version}"
    return True, f"{path} answers KVM API {version}"


def qemu_version(qemu="qemu-system-x86_64"):
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.splitlines()[0] if out else ""
    return first.replace("QEMU emulator version ", "") or None


def host_key():
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    raw = "|".join([platform.node(), os.uname().release, cpu, qemu_version() or ""])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _cache_file():
    return cache_root() / "accel.json"


def cached_verdict():
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return None
    return data.get(host_key())


def _store_verdict(verdict):
    path = _cache_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[host_key()] = verdict
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def probe_kvm(kernel):
    """Boot `kernel` under KVM with `--exec true`: (verdict, reason, seconds).

    verdict is True (KVM runs guests), False (a KVM guest hangs or fails), or
    None when the probe itself could not run (nothing is learnt about KVM).
    """
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ovh-kvm-probe-") as tmp:
        log = Path(tmp) / "console.log"
        proc, pgid_file = spawn_vng(
            [vng_command(), "--verbose", "--run", kernel.run_arg, "--force-9p", "--memory", "512M",
             "--exec", "true"], log, home=Path(tmp))
        try:
            while True:
                elapsed = time.monotonic() - start
                text = log.read_text(errors="replace") if log.exists() else ""
                rc = proc.poll()
                if rc is not None:
                    if rc == 0:
                        return True, f"a KVM probe boot ran in {elapsed:.1f} s", elapsed
                    tail = " | ".join(text.strip().splitlines()[-3:])
                    # Only a failure that involves the kernel booting or KVM itself is a verdict.
                    about_kvm = "Linux version" in text or "kvm" in text.lower()
                    verdict = False if about_kvm else None
                    return verdict, f"the KVM probe boot failed (exit {rc}): {tail}", elapsed
                if "Linux version" not in text and elapsed > PROBE_FIRST_OUTPUT_S:
                    return False, (f"a KVM guest printed nothing in {PROBE_FIRST_OUTPUT_S:.0f} s "
                                   "(hangs after the firmware)"), elapsed
                if elapsed > PROBE_TOTAL_S:
                    return False, f"the KVM probe boot did not finish in {PROBE_TOTAL_S:.0f} s", elapsed
                time.sleep(0.2)
        finally:
            stop_supervised(proc, pgid_file)


def _to_stderr(msg):
    print(msg, file=sys.stderr, flush=True)


def resolve(requested, kernel, reprobe=False, log=None):
    """The Accel to use for `requested` in auto|kvm|tcg."""
    if requested == "tcg":
        return Accel("tcg", "requested with --accel tcg")
    usable, why = kvm_device_usable()
    if requested == "kvm":
        if not usable:
            raise ValueError(f"--accel kvm: {why}")
        return Accel("kvm", "requested with --accel kvm")
    if not usable:
        return Accel("tcg", f"no usable KVM ({why})")
    # One probe per host at a time: xdist workers that each resolve the accelerator wait
    # here for the first one's verdict instead of probing side by side.
    lock_path = _cache_file().with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        verdict = None if reprobe else cached_verdict()
        if verdict is None:
            (log or _to_stderr)(f"overlay-harness: probing KVM with a short boot of {kernel.release} ...")
            works, reason, seconds = probe_kvm(kernel)
            verdict = {"kvm": bool(works), "reason": reason, "seconds": round(seconds, 1),
                       "kernel": kernel.release, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
            if works is not None:  # a probe that could not run says nothing about KVM
                _store_verdict(verdict)
            cached = ""
        else:
            cached = f" (cached {verdict['when']}; --accel-reprobe to redo)"
    if verdict["kvm"]:
        return Accel("kvm", verdict["reason"] + cached)
    return Accel("tcg", f"fell back to TCG: {verdict['reason']}{cached}")


def check_required(accel, wanted):
    """Raise ValueError, with the reason, when `accel` is not the `wanted` one (None: any):
    a CI run that must have KVM fails instead of running slowly under TCG."""
    if wanted and accel.name != wanted:
        raise ValueError(f"--require-accel {wanted}: this run would use {accel.name.upper()} "
                         f"({accel.reason})")
