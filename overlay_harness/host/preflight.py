"""What a run needs from this machine, checked before the first boot so that a missing
piece is named with its fix instead of showing up midway as a boot error.

The guest boots on the host's root filesystem (virtme-ng), so the tools the guest runs
(python3, dmsetup, mkfs.xfs, the NFS server, ...) must be installed on the host.
`python -m overlay_harness.preflight` prints the same list; setup.sh runs it last.
"""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .vng import BootError, mem_available_bytes, size_bytes, vng_command

# What the suite runs, where it runs it, the Debian/Ubuntu package that has it, and whether
# no VM can work without it (the others fail only the cases that use them).
# (command, what needs it, Debian/Ubuntu package, blocking)
COMMANDS = [
    ("qemu-system-x86_64", "the host, to run the VM", "qemu-system-x86", True),
    ("python3", "the guest agent", "python3", True),
    ("modprobe", "the guest, to load modules", "kmod", True),
    ("losetup", "the guest's scratch devices", "util-linux", True),
    ("dmsetup", "the guest's fault-injecting devices", "dmsetup", True),
    ("mkfs.ext4", "ext4 upper filesystems", "e2fsprogs", True),
    ("mkfs.xfs", "xfs upper filesystems", "xfsprogs", False),
    ("mkfs.btrfs", "btrfs upper filesystems", "btrfs-progs", False),
    ("exportfs", "the NFS lower (cases marked nfs)", "nfs-kernel-server", False),
    ("rpc.nfsd", "the NFS lower (cases marked nfs)", "nfs-kernel-server", False),
    ("rpc.mountd", "the NFS lower (cases marked nfs)", "nfs-kernel-server", False),
    ("rpcbind", "the NFS lower (cases marked nfs)", "rpcbind", False),
]


HOST_ONLY = {"qemu-system-x86_64"}  # what a --target machine does not need: nothing boots there


@dataclass(frozen=True)
class Problem:
    text: str               # what is missing, and the fix
    blocking: bool = True   # no VM boots without it (else: only the cases that need it fail)

    def __str__(self):
        return self.text if self.blocking else f"{self.text} (only the cases that need it fail)"
SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def os_release(path="/etc/os-release"):
    """/etc/os-release as a dict ({} when there is none)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    return parse_os_release(text)


def parse_os_release(text):
    """os-release's text as a dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out


def distro_family(release):
    """'debian', 'ubuntu' or None (another distribution), from os-release's ID and ID_LIKE."""
    ids = [release.get("ID", "")] + release.get("ID_LIKE", "").split()
    for family in ("ubuntu", "debian"):
        if family in ids:
            return family
    return None


def kernel_package(release):
    """The package that installs a bootable distribution kernel, or None when unknown."""
    return {"debian": "linux-image-amd64", "ubuntu": "linux-image-generic"}.get(distro_family(release))


def unreadable_image(image):
    """The fix for a kernel image this user cannot read, or None when it is readable."""
    if os.access(image, os.R_OK):
        return None
    return (f"{image} is not readable by this user (Ubuntu installs kernel images mode 0600): "
            f"`sudo chmod 0644 {image}`, or for every future kernel too "
            f"`sudo dpkg-statoverride --update --add root root 0644 {image}`")


def problems(kernel_image=None, memory=None, path=None, release=None):
    """Everything missing, a Problem each with its fix; [] when the machine is ready.

    path: the directories searched for commands (default: $PATH plus the sbin directories);
    release: os-release as a dict (default: this machine's)."""
    release = os_release() if release is None else release
    family = distro_family(release)
    search = path if path is not None else os.pathsep.join([os.environ.get("PATH", ""), SBIN])
    found = []
    missing = [c for c in COMMANDS if not shutil.which(c[0], path=search)]
    for cmd, why, pkg, blocking in missing:
        fix = f"apt-get install {pkg}" if family else "install it with your distribution's packages"
        found.append(Problem(f"{cmd} is missing (needed by {why}): {fix}", blocking))
    try:
        vng_command()
    except BootError as e:
        found.append(Problem(f"{e} (pip install virtme-ng)"))
    if family is None and missing:
        name = release.get("PRETTY_NAME") or release.get("ID") or "this distribution"
        found.append(Problem(f"{name} is not Debian or Ubuntu: setup.sh cannot install the above; "
                             "install the commands named, then rerun", blocking=False))
    if kernel_image is not None:
        fix = unreadable_image(kernel_image)
        if fix:
            found.append(Problem(fix))
    if memory is not None:
        need, avail = size_bytes(memory), mem_available_bytes()
        if avail is not None and need > avail:
            found.append(Problem(f"the VM asks for {memory} of memory but only "
                                 f"{avail / (1 << 30):.1f} GiB are available (use --vm-memory)"))
    return found


def check(kernel_image=None, memory=None):
    """Raise BootError naming every problem that keeps a VM from working, at once (before
    a boot); the others are in the header and in `python -m overlay_harness.preflight`."""
    found = [p for p in problems(kernel_image, memory) if p.blocking]
    if found:
        raise BootError("this machine cannot run the VM yet: " + "; ".join(map(str, found)))


def target_problems(present, release):
    """What a --target machine lacks, a Problem each with its fix: `present` is the set of
    COMMANDS found there, `release` its os-release as a dict (host/target.py probes both)."""
    family = distro_family(release)
    found = []
    for cmd, why, pkg, blocking in COMMANDS:
        if cmd in HOST_ONLY or cmd in present:
            continue
        fix = (f"apt-get install {pkg} on the target" if family
               else "install it there with its distribution's packages")
        found.append(Problem(f"{cmd} is missing on the target (needed by {why}): {fix}", blocking))
    return found
