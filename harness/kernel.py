"""Which kernel to boot: a bzImage path, a kernel build tree, or an installed release."""

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

BOOT_DIR = Path("/boot")
MODULES_DIR = Path("/lib/modules")


class KernelError(Exception):
    """The kernel the user named cannot be used (a usage error, before any boot)."""


@dataclass
class Kernel:
    image: Path                 # the bzImage to boot
    release: str                # `uname -r` it will report
    run_arg: str                # what `vng --run` is given
    config_path: Path | None = None
    tree: Path | None = None
    config: dict = field(default_factory=dict, repr=False)

    @property
    def label(self):
        return self.release

    def option(self, name):
        """A CONFIG_ value ('y', 'm', a string) or None when unset or unknown."""
        return self.config.get(name if name.startswith("CONFIG_") else f"CONFIG_{name}")


def bzimage_release(path):
    """The release string from an x86 bzImage header, or None if it is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x210)
            if len(head) < 0x210 or head[0x1FE:0x200] != b"\x55\xaa" or head[0x202:0x206] != b"HdrS":
                return None
            (offset,) = struct.unpack_from("<H", head, 0x20E)
            if offset == 0:
                return None
            f.seek(offset + 0x200)
            text = f.read(256).split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return None
    release = text.split(" ", 1)[0]
    return release or None


def parse_config(path):
    config = {}
    if path is None or not Path(path).is_file():
        return config
    for line in Path(path).read_text(errors="replace").splitlines():
        m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
        if m:
            config[m.group(1)] = m.group(2).strip('"')
    return config


def _version_key(release):
    return [int(x) if x.isdigit() else x for x in re.split(r"[.\-+]", release)]


def installed():
    """Installed kernels (/boot/vmlinuz-RELEASE), newest first."""
    found = []
    for image in BOOT_DIR.glob("vmlinuz-*"):
        release = image.name[len("vmlinuz-"):]
        found.append(_from_image(image, release))
    return sorted(found, key=lambda k: _version_key(k.release), reverse=True)


def _from_image(image, release):
    cfg = BOOT_DIR / f"config-{release}"
    cfg = cfg if cfg.is_file() else None
    return Kernel(image=image, release=release, run_arg=str(image), config_path=cfg,
                  config=parse_config(cfg))


def _from_tree(tree):
    image = tree / "arch/x86/boot/bzImage"
    if not image.is_file():
        raise KernelError(f"--kernel {tree}: a directory, but no arch/x86/boot/bzImage in it "
                          "(build the tree first, e.g. `vng --build --config images/overlay-harness.config`)")
    rel_file = tree / "include/config/kernel.release"
    release = rel_file.read_text().strip() if rel_file.is_file() else bzimage_release(image)
    if not release:
        raise KernelError(f"--kernel {tree}: cannot tell the release of {image}")
    cfg = tree / ".config"
    cfg = cfg if cfg.is_file() else None
    return Kernel(image=image, release=release, run_arg=str(tree), config_path=cfg,
                  tree=tree, config=parse_config(cfg))


def resolve(spec=None):
    """Turn a --kernel value (or None for the default) into a Kernel, or raise KernelError."""
    if not spec:
        kernels = installed()
        if not kernels:
            raise KernelError(f"no kernel under {BOOT_DIR} (vmlinuz-*): run ./setup.sh, "
                              "or name one with --kernel")
        return kernels[0]
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_tree(path.resolve())
    if path.is_file():
        release = bzimage_release(path)
        if not release:
            raise KernelError(f"--kernel {spec}: not an x86 kernel image (no bzImage header)")
        kernel = _from_image(path.resolve(), release)
        if not (BOOT_DIR / f"config-{release}").is_file():
            kernel.config_path, kernel.config = None, {}
        return kernel
    if "/" not in spec:
        image = BOOT_DIR / f"vmlinuz-{spec}"
        if image.is_file():
            return _from_image(image, spec)
    known = ", ".join(k.release for k in installed()) or "none"
    raise KernelError(f"--kernel {spec}: no such file, kernel build tree or installed release "
                      f"(installed: {known})")


def modules_available(kernel):
    """Modules for an installed kernel live in /lib/modules; a tree carries its own."""
    if kernel.tree is not None:
        return True
    return (MODULES_DIR / kernel.release).is_dir()
