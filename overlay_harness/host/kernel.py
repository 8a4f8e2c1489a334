"""Which kernel to boot: a bzImage path, a kernel build tree, an installed release, or a
kernel fetched into the cache (overlay_harness/fetch.py); and what its config lacks."""

import importlib.resources
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

BOOT_DIR = Path("/boot")
MODULES_DIR = Path("/lib/modules")
# The config fragment, shipped in the package (images/overlay-harness.config links here).
FRAGMENT = importlib.resources.files(__package__).joinpath("overlay-harness.config")
CACHE_ENV = "OVERLAY_HARNESS_KERNELS"
CACHE_STAMP = "overlay-harness-fetch.json"   # written by overlay_harness.fetch into CACHE/<release>/


def cache_root():
    """The suite's cache, $XDG_CACHE_HOME/overlay-harness (~/.cache/...), read at call time:
    fetched kernels (cache_dir()) and the KVM verdicts (accel.py)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "overlay-harness"


def cache_dir():
    """Where overlay_harness.fetch puts kernels: $OVERLAY_HARNESS_KERNELS, else
    $XDG_CACHE_HOME/overlay-harness/kernels (~/.cache/...)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return cache_root() / "kernels"


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
    modules_dir: Path | None = None   # lib/modules/<release> of an unpacked package (cache)
    package: dict | None = None       # what overlay_harness.fetch recorded (package, version, sha256)
    overlay_module: object = None     # a host.modbuild.OverlayModule loaded in its place

    @property
    def label(self):
        return self.release

    @property
    def package_label(self):
        """'linux-image-X VERSION' for a fetched package, else None."""
        if self.package:
            return f"{self.package.get('package')} {self.package.get('version')}"
        return None

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
    if path is None or not Path(path).is_file():
        return {}
    return parse_config_text(Path(path).read_text(errors="replace"))


def parse_config_text(text):
    config = {}
    for line in text.splitlines():
        m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
        if m:
            config[m.group(1)] = m.group(2).strip('"')
    return config


def version(release):
    """(major, minor, patch) of a release string: 6.1.0-56-amd64 -> (6, 1, 0),
    7.3-amd64 -> (7, 3, 0); (0, 0, 0) when it names no version. The one parser of
    releases: sorting kernels, series such as 6.12, and known-issue ranges use it."""
    nums = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?(?=[.\-+~_]|$)", release)
    return tuple(int(x or 0) for x in nums.groups()) if nums else (0, 0, 0)


def _version_key(release):
    """Newest-first order: the version, then the release's other numbers (Debian's ABI,
    6.1.0-56 after 6.1.0-9), numbers and words tagged so that they never meet."""
    parts = [(1, int(x), "") if x.isdigit() else (0, 0, x) for x in re.split(r"[.\-+~_]", release)]
    return version(release), parts


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


def find_modules_dir(root, release):
    """ROOT/lib/modules/RELEASE or ROOT/usr/lib/modules/RELEASE, else None."""
    for sub in ("lib/modules", "usr/lib/modules"):
        d = Path(root) / sub / release
        if d.is_dir():
            return d
    return None


def _from_root(root, release=None):
    """An unpacked kernel package: ROOT/boot/vmlinuz-RELEASE, ROOT/boot/config-RELEASE,
    ROOT/lib/modules/RELEASE. vng is given the image; virtme-ng finds the modules by
    walking up from the image to the first directory with lib/modules (ROOT), and links
    them into the guest's /lib/modules (virtme_link_mods), so nothing more is needed."""
    if release is None:
        images = sorted((root / "boot").glob("vmlinuz-*"))
        if len(images) != 1:
            raise KernelError(f"--kernel {root}: expected one boot/vmlinuz-* in it, "
                              f"found {len(images)}")
        release = images[0].name[len("vmlinuz-"):]
    image = root / "boot" / f"vmlinuz-{release}"
    cfg = root / "boot" / f"config-{release}"
    cfg = cfg if cfg.is_file() else None
    stamp = root / CACHE_STAMP
    package = None
    if stamp.is_file():
        try:
            package = json.loads(stamp.read_text())
        except ValueError:
            package = None
    return Kernel(image=image, release=release, run_arg=str(image), config_path=cfg,
                  config=parse_config(cfg), modules_dir=find_modules_dir(root, release),
                  package=package)


def cached(cache=None):
    """Kernels unpacked into the cache by overlay_harness.fetch, newest first."""
    cache = Path(cache) if cache else cache_dir()
    found = []
    if cache.is_dir():
        for root in cache.iterdir():
            if root.name.startswith(".") or not (root / "boot" / f"vmlinuz-{root.name}").is_file():
                continue
            found.append(_from_root(root, root.name))
    return sorted(found, key=lambda k: _version_key(k.release), reverse=True)


def _series(spec, kernels):
    """The newest of `kernels` in series `spec` (e.g. 6.12 -> 6.12.117+deb12-amd64)."""
    for k in kernels:
        if ".".join(map(str, version(k.release)[:2])) == spec:
            return k
    return None


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
        path = path.resolve()
        if not (path / "Makefile").is_file() and list((path / "boot").glob("vmlinuz-*")):
            return _from_root(path)  # an unpacked kernel package (overlay_harness.fetch)
        return _from_tree(path)
    if path.is_file():
        release = bzimage_release(path)
        if not release:
            raise KernelError(f"--kernel {spec}: not an x86 kernel image (no bzImage header)")
        path = path.resolve()
        if path.parent.name == "boot" and path.parent != BOOT_DIR and path.name == f"vmlinuz-{release}":
            return _from_root(path.parent.parent, release)  # CACHE/<release>/boot/vmlinuz-<release>
        kernel = _from_image(path, release)
        sibling = path.parent / f"config-{release}"
        if sibling.is_file():
            kernel.config_path, kernel.config = sibling, parse_config(sibling)
        elif not (BOOT_DIR / f"config-{release}").is_file():
            kernel.config_path, kernel.config = None, {}
        return kernel
    if "/" not in spec:
        image = BOOT_DIR / f"vmlinuz-{spec}"
        if image.is_file():
            return _from_image(image, spec)
        root = cache_dir() / spec
        if (root / "boot" / f"vmlinuz-{spec}").is_file():
            return _from_root(root, spec)
        if re.fullmatch(r"\d+\.\d+", spec):
            found = _series(spec, cached()) or _series(spec, installed())
            if found:
                return found
    known = ", ".join(k.release for k in installed()) or "none"
    fetched = ", ".join(k.release for k in cached()) or "none"
    raise KernelError(f"--kernel {spec}: no such file, kernel build tree or installed release "
                      f"(installed: {known}; fetched into {cache_dir()}: {fetched}; "
                      "`python -m overlay_harness.fetch 6.1 6.12` fetches Debian's)")


def modules_available(kernel):
    """Modules for an installed kernel live in /lib/modules; a tree carries its own, and
    a fetched package has them next to its image."""
    if kernel.tree is not None:
        return True
    if kernel.modules_dir is not None:
        return kernel.modules_dir.is_dir()
    return (MODULES_DIR / kernel.release).is_dir()


# -- config check ------------------------------------------------------------------

def fragment_features(fragment=None):
    """{feature: [CONFIG_..., ...]} from the "## feature: NAME" groups of the config
    fragment: the options each feature needs set (=y or =m). The "-" group is left out."""
    features, current = {}, None
    for line in (Path(fragment) if fragment else FRAGMENT).read_text().splitlines():
        m = re.match(r"^##\s*feature:\s*(\S+)", line)
        if m:
            current = None if m.group(1) == "-" else m.group(1)
            if current:
                features.setdefault(current, [])
            continue
        m = re.match(r"^(CONFIG_\w+)=([ym])\b", line)
        if m and current:
            features[current].append(m.group(1))
    return features


def config_known(kernel):
    """Whether there is a config to check (a bare bzImage may come without one)."""
    return bool(kernel.config)


def missing_options(kernel, features=None, fragment=None):
    """{feature: [missing CONFIG_...]} for the features (default: all in the fragment)
    whose options `kernel`'s config does not set to y or m; only features with something
    missing are listed. A kernel without a known config yields {} (nothing can be said:
    the guest-side probe decides then)."""
    if not config_known(kernel):
        return {}
    wanted = fragment_features(fragment)
    if features is not None:
        unknown = set(features) - set(wanted)
        if unknown:
            raise KeyError(f"no such feature in the config fragment: {', '.join(sorted(unknown))}")
        wanted = {f: wanted[f] for f in features}
    missing = {}
    for feature, options in wanted.items():
        lacking = [o for o in options if kernel.config.get(o) not in ("y", "m")]
        if lacking:
            missing[feature] = lacking
    return missing


def describe_missing(kernel, missing):
    """One line for a skip reason: 'kernel R lacks dm-flakey (CONFIG_DM_FLAKEY)'."""
    parts = [f"{feature} ({', '.join(options)})" for feature, options in missing.items()]
    where = f" per {kernel.config_path}" if kernel.config_path else ""
    return f"kernel {kernel.release} lacks {'; '.join(parts)}{where}"
