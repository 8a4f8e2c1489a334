"""Fetch Debian kernel packages into a cache the harness can boot from.

    python -m harness.fetch 6.1 6.12                 # Debian's default 6.1 kernel and the 6.12 one
    python -m harness.fetch linux-image-6.12.117+deb12-amd64
    python -m harness.fetch --list                   # what is in the cache

Nothing is installed: `apt-get download` fetches the .deb, `dpkg-deb -x` unpacks it
into CACHE/<release>/ (boot/vmlinuz-<release>, boot/config-<release>,
lib/modules/<release>/) and `depmod -b` indexes its modules there. /boot,
/lib/modules and dpkg's database are left alone, so the host's own kernel and
boot set-up do not change and no reboot is involved.

Booting: `vng --run CACHE/<release>/boot/vmlinuz-<release>` is all virtme-ng
needs. It looks for the modules of a kernel image by walking up from the image
to the first directory holding lib/modules/, here CACHE/<release>, and since
that is not the guest's root it links /lib/modules/<release> in the guest to
CACHE/<release>/lib/modules/<release> (virtme_link_mods=), which the guest sees
through its read-only 9p view of the host root. `--kernel` takes the image, the
CACHE/<release> directory, the release, or a series such as 6.12 (see
harness/kernel.py).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import kernel as kernel_mod

# Short names for the kernels Debian bookworm ships: its default (6.1) and the 6.12
# series it also carries (bookworm-security / backports style meta-package).
ALIASES = {
    "6.1": "linux-image-amd64",
    "6.12": "linux-image-6.12-amd64",
}


class FetchError(Exception):
    pass


def _run(argv, **kwargs):
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    except FileNotFoundError as e:
        raise FetchError(f"{argv[0]} not found (this needs a Debian or Ubuntu host): {e}") from None


def package_record(name):
    """The candidate version's fields of package `name` (apt-cache show), as a dict."""
    p = _run(["apt-cache", "show", "--no-all-versions", name])
    if p.returncode != 0 or not p.stdout.strip():
        raise FetchError(f"{name}: no such package known to apt "
                         f"({p.stderr.strip() or 'apt-cache show found nothing'}; "
                         "run `apt-get update`?)")
    fields, key = {}, None
    for line in p.stdout.split("\n\n", 1)[0].splitlines():
        if line.startswith((" ", "\t")) and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def _depends(record):
    """Package names in Depends (first alternative of each), without versions."""
    names = []
    for clause in record.get("Depends", "").split(","):
        first = clause.split("|", 1)[0].strip()
        if first:
            names.append(first.split()[0].split(":")[0])
    return names


def resolve_package(spec, record=package_record):
    """The kernel image package for `spec` (an alias, a package name or a release),
    following meta-packages (linux-image-amd64 -> linux-image-6.1.0-NN-amd64)."""
    name = ALIASES.get(spec, spec)
    if not name.startswith("linux-image-"):
        name = f"linux-image-{name}"
    seen = []
    while True:
        if name in seen or len(seen) > 5:
            raise FetchError(f"{spec}: meta-package loop through {' -> '.join(seen)}")
        seen.append(name)
        fields = record(name)
        nested = [d for d in _depends(fields) if d.startswith("linux-image-") and not d.endswith("-dbg")]
        if not nested:
            return name, fields.get("Version", "")
        name = nested[0]


def cache_dir():
    return kernel_mod.cache_dir()


def _release_of(root):
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if not images:
        raise FetchError(f"{root}: the package holds no boot/vmlinuz-*: not a kernel image package")
    return images[0].name[len("vmlinuz-"):]


def _depmod(moddir, release, scratch):
    """Debian makes modules.dep at install time; make it here, inside the cache.
    depmod -b BASE looks in BASE/lib/modules or BASE/usr/lib/modules, depending on
    how kmod was built: give it both, pointing at `moddir`."""
    base = Path(scratch) / "depmod-base"
    for sub in ("lib/modules", "usr/lib/modules"):
        (base / sub).mkdir(parents=True)
        (base / sub / release).symlink_to(moddir.resolve())
    depmod = shutil.which("depmod") or next(
        (c for c in ("/usr/sbin/depmod", "/sbin/depmod") if os.path.exists(c)), "depmod")
    p = _run([depmod, "-a", "-b", str(base), release])
    shutil.rmtree(base)
    if p.returncode != 0 or not (moddir / "modules.dep").is_file():
        raise FetchError(f"depmod for {moddir} failed:\n{p.stderr.strip()}")


def apt_download(package, version, directory):
    """`apt-get download PACKAGE=VERSION` into `directory`; the .deb's path."""
    argv = ["apt-get", "download", "-q", f"{package}={version}" if version else package]
    if os.geteuid() == 0:
        # apt would drop to _apt, which cannot write into this private directory.
        argv[2:2] = ["-o", "APT::Sandbox::User=root"]
    p = _run(argv, cwd=directory)
    debs = list(Path(directory).glob("*.deb"))
    if p.returncode != 0 or not debs:
        raise FetchError(f"apt-get download {package} failed:\n{p.stderr.strip()}")
    return debs[0]


def fetch(spec, cache=None, force=False, log=print, record=package_record, download=apt_download):
    """Download and unpack the kernel for `spec` into the cache; returns the Kernel.
    (`record` and `download` are apt-cache show and apt-get download; tests replace them.)"""
    cache = Path(cache) if cache else cache_dir()
    package, version = resolve_package(spec, record)
    m = re.match(r"linux-image-(.+?)(-unsigned)?$", package)
    release_guess = m.group(1) if m else None
    if release_guess and not force:
        done = cache / release_guess / kernel_mod.CACHE_STAMP
        if done.is_file() and json.loads(done.read_text()).get("version") == version:
            log(f"{spec}: {package} {version} already in {done.parent}")
            return kernel_mod.resolve(str(done.parent))
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp:
        tmp = Path(tmp)
        os.chmod(tmp, 0o755)
        log(f"{spec}: downloading {package} {version}")
        deb = Path(download(package, version, tmp))
        sha256 = hashlib.sha256(deb.read_bytes()).hexdigest()
        root = tmp / "root"
        p = _run(["dpkg-deb", "-x", str(deb), str(root)])
        if p.returncode != 0:
            raise FetchError(f"dpkg-deb -x {deb.name} failed:\n{p.stderr.strip()}")
        release = _release_of(root)
        moddir = kernel_mod.find_modules_dir(root, release)
        if moddir is None:
            raise FetchError(f"{package}: no lib/modules/{release} in the package")
        _depmod(moddir, release, tmp)
        (root / kernel_mod.CACHE_STAMP).write_text(json.dumps({
            "package": package, "version": version, "release": release, "deb": deb.name,
            "sha256": sha256, "spec": spec, "fetched": time.strftime("%Y-%m-%d %H:%M:%S"),
        }, indent=2) + "\n")
        target = cache / release
        if target.exists():
            old = cache / f".old-{release}-{os.getpid()}"
            target.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        root.rename(target)
    log(f"{spec}: {package} {version} -> {target} (release {release})")
    return kernel_mod.resolve(str(target))


def list_cache(cache=None):
    return kernel_mod.cached(Path(cache) if cache else None)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m harness.fetch",
        description="Download Debian kernel image packages into the harness's kernel cache "
                    "(no install: /boot and /lib/modules are not touched).")
    ap.add_argument("specs", nargs="*", metavar="KERNEL",
                    help=f"{' or '.join(ALIASES)} ({', '.join(f'{k}: {v}' for k, v in ALIASES.items())}), "
                         "a linux-image-* package name, or a release")
    ap.add_argument("--cache", default=None,
                    help=f"cache directory (default {kernel_mod.cache_dir()}, "
                         f"or ${kernel_mod.CACHE_ENV})")
    ap.add_argument("--force", action="store_true", help="fetch again even when cached")
    ap.add_argument("--list", action="store_true", help="list cached kernels")
    args = ap.parse_args(argv)
    if not args.specs and not args.list:
        ap.error("name at least one kernel (e.g. 6.1 6.12), or --list")
    status = 0
    for spec in args.specs:
        try:
            k = fetch(spec, args.cache, force=args.force)
            print(f"  --kernel {k.image}")
        except (FetchError, kernel_mod.KernelError) as e:
            print(f"fetch: {e}", file=sys.stderr)
            status = 1
    if args.list:
        for k in list_cache(args.cache):
            print(f"{k.release}\t{k.image}")
    return status


if __name__ == "__main__":
    sys.exit(main())
