"""Fetch Debian kernel packages into a cache the harness can boot from.

    python -m overlay_harness.fetch 6.1 6.12 7.2 rc          # series aliases (--list says what each is now)
    python -m overlay_harness.fetch linux-image-7.2.13+deb14-amd64
    python -m overlay_harness.fetch --source 7.2             # also its linux-source tree, to read or patch
    python -m overlay_harness.fetch --headers 6.1            # also its headers, to build modules against
    python -m overlay_harness.fetch --list                   # the aliases and what is in the cache

Nothing is installed. The packages come from Debian's archive through a private apt
set-up under CACHE/.apt (its own sources list, package lists, download cache and an
empty dpkg status; APT_CONFIG points apt there), so the host's apt sources, its
dpkg database, /boot and /lib/modules stay as they are. The archive's address is
the one the host's own apt sources use for Debian (or $OVERLAY_HARNESS_DEBIAN_MIRROR),
and the Release files are checked with the Debian archive keyring the host has.

Two package layouts, unpacked with `dpkg-deb -x` into CACHE/<release>/:
- up to 6.x, one `linux-image-<release>` package holding boot/vmlinuz-<release>,
  boot/config-<release> and lib/modules/<release>;
- since 7.x, `linux-image-<release>` is a meta package: the image is in
  `linux-binary-<release>` (usr/lib/modules/<release>/vmlinuz), the modules in
  `linux-modules-<release>`, and the config with modules.builtin and modules.order in
  `linux-base-<release>`. They are put into the first layout (boot/vmlinuz-<release>,
  boot/config-<release>, lib/modules/<release>), so every kernel in the cache looks alike.
Then `depmod -b` indexes the modules there.

Booting: `vng --run CACHE/<release>/boot/vmlinuz-<release>` is all virtme-ng needs: it
walks up from the image to the first directory holding lib/modules/ and links the
guest's /lib/modules/<release> to it. `--kernel` takes the image, the CACHE/<release>
directory, the release, or a series such as 7.2 (overlay_harness/host/kernel.py).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import kernel as kernel_mod

MIRROR_ENV = "OVERLAY_HARNESS_DEBIAN_MIRROR"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
LISTS_MAX_AGE_S = 24 * 3600


@dataclass(frozen=True)
class Alias:
    suite: str        # where to look: bookworm also covers bookworm-updates and -security
    package: str      # the meta package that names the newest kernel of the series there
    series: str       # what the release must start with ("" for the release candidate)
    about: str


ALIASES = {
    "6.1": Alias("bookworm", "linux-image-amd64", "6.1", "Debian 12's default kernel"),
    "6.12": Alias("bookworm", "linux-image-6.12-amd64", "6.12", "the 6.12 series Debian 12 carries"),
    "7.2": Alias("sid", "linux-image-amd64", "7.2", "unstable's kernel"),
    "rc": Alias("experimental", "linux-image-amd64", "", "the newest release candidate (experimental)"),
}
SUITES = ("bookworm", "bookworm-updates", "sid", "experimental")
SECURITY_SUITES = ("bookworm-security",)
SPLIT_PARTS = ("linux-binary-", "linux-modules-", "linux-base-")


class FetchError(Exception):
    pass


def _run(argv, **kwargs):
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    except FileNotFoundError as e:
        raise FetchError(f"{argv[0]} not found (this needs apt and dpkg: a Debian or Ubuntu host): "
                         f"{e}") from None


def _first_error(text):
    lines = [ln for ln in text.splitlines() if ln.startswith(("E:", "W:", "Err:"))] or text.splitlines()
    return lines[0].strip() if lines else "no output"


def host_mirrors(etc=Path("/etc/apt")):
    """(archive, security) URIs of Debian in the host's apt sources (one-line and deb822)."""
    uris = []
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list")),
             *sorted((etc / "sources.list.d").glob("*.sources"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        uris += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
        uris += [u for line in re.findall(r"^URIs:\s*(.+)$", text, re.M) for u in line.split()]
    archive = next((u.rstrip("/") for u in uris if u.rstrip("/").endswith("/debian")), None)
    security = next((u.rstrip("/") for u in uris if u.rstrip("/").endswith("/debian-security")), None)
    return archive, security


def _version_cmp(a, b):
    """dpkg's order of two Debian versions: -1, 0 or 1."""
    if a == b:
        return 0
    return -1 if _run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0 else 1


def _newest(versions):
    best = None
    for v in versions:
        if best is None or _version_cmp(v, best) > 0:
            best = v
    return best


def parse_depends(text):
    """[(name, exact version or None)] from a Depends field, first alternative of each."""
    found = []
    for clause in text.split(","):
        first = clause.split("|", 1)[0].strip()
        m = re.match(r"([^\s(:]+)(?::\S+)?\s*(?:\(\s*=\s*([^)\s]+)\s*\))?", first)
        if m:
            found.append((m.group(1), m.group(2)))
    return found


class Archive:
    """Debian's archive through a private apt directory (APT_CONFIG): lists, downloads and
    an empty dpkg status of its own, nothing of the host's apt set-up read or changed
    but the mirror address."""

    def __init__(self, root, mirror=None, security=None):
        self.root = Path(root)
        host_archive, host_security = host_mirrors()
        self.mirror = (mirror or os.environ.get(MIRROR_ENV) or host_archive or "").rstrip("/")
        self.security = (security or host_security
                         or (self.mirror + "-security" if self.mirror else "")).rstrip("/")
        self.conf = self.root / "apt.conf"

    def _write_config(self):
        if not self.mirror:
            raise FetchError("no Debian archive in the host's apt sources: name one with "
                             f"${MIRROR_ENV}=URI (a Debian mirror's .../debian address)")
        if not KEYRING.is_file():
            raise FetchError(f"{KEYRING} is missing: install the debian-archive-keyring package")
        for sub in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d",
                    "lists/partial", "archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "status").touch()
        signed = f"[signed-by={KEYRING}]"
        lines = [f"deb {signed} {self.mirror} {s} main" for s in SUITES]
        lines += [f"deb {signed} {self.security} {s} main" for s in SECURITY_SUITES]
        (self.root / "etc/sources.list").write_text("\n".join(lines) + "\n")
        r = self.root
        # Check-Valid-Until off: a frozen snapshot of the archive carries Release files whose
        # Valid-Until has passed; their signatures are still checked.
        text = (f'Dir::Etc "{r}/etc";\nDir::State "{r}";\nDir::State::Lists "{r}/lists";\n'
                f'Dir::State::status "{r}/status";\nDir::Cache "{r}/cache";\n'
                f'Dir::Cache::archives "{r}/archives";\nAPT::Architecture "amd64";\n'
                'APT::Architectures { "amd64"; };\nAcquire::Languages "none";\n'
                'Acquire::Check-Valid-Until "false";\n')
        if os.geteuid() == 0:  # apt would drop to _apt, which cannot write into this directory
            text += 'APT::Sandbox::User "root";\n'
        self.conf.write_text(text)

    def apt(self, *argv, cwd=None):
        return _run(list(argv), cwd=cwd, env={**os.environ, "APT_CONFIG": str(self.conf)})

    def update(self, force=False, log=print):
        """Read the package lists (again when older than a day, or when forced)."""
        self._write_config()
        stamp = self.root / "lists" / ".updated"
        if not force and stamp.is_file() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE_S:
            return
        log(f"reading Debian's package lists ({', '.join(SUITES + SECURITY_SUITES)}) from {self.mirror}")
        p = self.apt("apt-get", "update", "-q")
        errors = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith(("E:", "Err:"))]
        if p.returncode != 0 or errors:
            raise FetchError(f"could not read the Debian archive at {self.mirror}: "
                             f"{_first_error(p.stdout + p.stderr)}")
        stamp.touch()

    def versions(self, package):
        """{version: [suite, ...]} of `package` in the archive."""
        p = self.apt("apt-cache", "madison", package)
        found = {}
        for line in p.stdout.splitlines():
            parts = [x.strip() for x in line.split("|")]
            if len(parts) == 3 and parts[0] == package:
                suite = parts[2].split()[1].split("/")[0] if len(parts[2].split()) > 1 else "?"
                found.setdefault(parts[1], []).append(suite)
        return found

    def record(self, package, version):
        """The fields of PACKAGE=VERSION, as a dict."""
        p = self.apt("apt-cache", "show", f"{package}={version}")
        fields, key = {}, None
        for line in p.stdout.split("\n\n", 1)[0].splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if p.returncode != 0 or not fields:
            raise FetchError(f"{package}={version}: not in the archive ({_first_error(p.stderr)})")
        return fields

    def download(self, package, version, directory):
        """`apt-get download PACKAGE=VERSION` into `directory`; the .deb's path."""
        before = set(Path(directory).glob("*.deb"))
        p = self.apt("apt-get", "download", "-q", f"{package}={version}", cwd=directory)
        debs = sorted(set(Path(directory).glob("*.deb")) - before)
        if p.returncode != 0 or not debs:
            raise FetchError(f"apt-get download {package}={version} failed: "
                             f"{_first_error(p.stdout + p.stderr)}")
        return debs[0]


@dataclass
class Resolved:
    spec: str
    image_package: str            # linux-image-<release>
    version: str                  # its Debian version
    release: str
    packages: list = field(default_factory=list)   # [(name, version)] to download and unpack
    suites: list = field(default_factory=list)

    @property
    def layout(self):
        return "split" if len(self.packages) > 1 else "single"


def _in_suite(suites, wanted):
    return any(s == wanted or s.startswith(wanted + "-") for s in suites)


def _aliases_line():
    return ", ".join(ALIASES)


def resolve(spec, archive):
    """The packages of the kernel `spec` names: an alias, a linux-image-* package, or a release."""
    alias = ALIASES.get(spec)
    if alias:
        name = alias.package
        versions = {v: s for v, s in archive.versions(name).items() if _in_suite(s, alias.suite)}
        if not versions:
            raise FetchError(f"{spec}: {alias.suite} has no {name} in the archive at {archive.mirror}")
    else:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.+~-]*", spec):
            raise FetchError(f"{spec}: not a kernel name (use an alias: {_aliases_line()}; "
                             "a linux-image-* package name; or a release such as 7.2.13+deb14-amd64)")
        name = spec if spec.startswith("linux-image-") else f"linux-image-{spec}"
        versions = archive.versions(name)
        if not versions:
            raise FetchError(f"{spec}: no package {name} in the archive at {archive.mirror} "
                             f"(aliases: {_aliases_line()}; `--list` says what each is now)")
    version = _newest(versions)
    suites = versions[version]
    seen = []
    while True:
        if name in seen or len(seen) > 5:
            raise FetchError(f"{spec}: meta-package loop through {' -> '.join(seen)}")
        seen.append(name)
        deps = parse_depends(archive.record(name, version).get("Depends", ""))
        nested = [(d, v) for d, v in deps if d.startswith("linux-image-") and not d.endswith("-dbg")]
        if not nested:
            break
        name, version = nested[0][0], nested[0][1] or version
    release = re.match(r"linux-image-(.+?)(-unsigned)?$", name).group(1)
    parts = [(d, v or version) for d, v in deps if d.startswith(SPLIT_PARTS) and d.endswith(release)]
    split = any(d.startswith("linux-binary-") for d, _ in parts)
    packages = parts if split else [(name, version)]
    if alias and not release.startswith(alias.series):
        raise FetchError(f"{spec}: {alias.suite}'s {alias.package} is {release} now, not a {alias.series} "
                         f"kernel: name the package (linux-image-{release}) or another alias")
    if alias and not alias.series and "~rc" not in version:
        raise FetchError(f"{spec}: {alias.suite} has no release candidate now ({name} {version})")
    return Resolved(spec, name, version, release, packages, suites)


def cache_dir():
    return kernel_mod.cache_dir()


def default_archive(cache=None):
    return Archive((Path(cache) if cache else cache_dir()) / ".apt")


def _unpack(deb, root):
    p = _run(["dpkg-deb", "-x", str(deb), str(root)])
    if p.returncode != 0:
        raise FetchError(f"dpkg-deb -x {Path(deb).name} failed: {_first_error(p.stderr)}")


def _normalise(root, release):
    """Bring the split layout (usr/lib/modules/<release>/{vmlinuz,config}) into the single
    one: boot/vmlinuz-<release>, boot/config-<release>, lib/modules/<release>."""
    usr = root / "usr/lib/modules" / release
    boot = root / "boot"
    boot.mkdir(exist_ok=True)
    for name, target in (("vmlinuz", f"vmlinuz-{release}"), ("config", f"config-{release}")):
        if (usr / name).is_file() and not (boot / target).exists():
            (usr / name).rename(boot / target)
    if usr.is_dir() and not (root / "lib/modules" / release).exists():
        (root / "lib/modules").mkdir(parents=True, exist_ok=True)
        usr.rename(root / "lib/modules" / release)
    if not (boot / f"vmlinuz-{release}").is_file():
        raise FetchError(f"{release}: the packages hold no kernel image (boot/vmlinuz-{release} "
                         f"or usr/lib/modules/{release}/vmlinuz)")


def depmod(moddir, release, scratch):
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


def _download_all(archive, packages, directory, log):
    debs = []
    for package, version in packages:
        log(f"  downloading {package} {version}")
        deb = Path(archive.download(package, version, directory))
        debs.append((package, version, deb, hashlib.sha256(deb.read_bytes()).hexdigest()))
    return debs


def fetch(spec, cache=None, force=False, log=print, archive=None):
    """Download and unpack the kernel for `spec` into the cache; returns the Kernel."""
    cache = Path(cache) if cache else cache_dir()
    archive = archive or default_archive(cache)
    archive.update(log=log)
    res = resolve(spec, archive)
    done = cache / res.release / kernel_mod.CACHE_STAMP
    if not force and done.is_file() and json.loads(done.read_text()).get("version") == res.version:
        log(f"{spec}: {res.image_package} {res.version} already in {done.parent}")
        return kernel_mod.resolve(str(done.parent))
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp:
        tmp = Path(tmp)
        os.chmod(tmp, 0o755)
        log(f"{spec}: {res.image_package} {res.version} ({res.layout} layout, "
            f"from {', '.join(res.suites)})")
        debs = _download_all(archive, res.packages, tmp, log)
        root = tmp / "root"
        for _pkg, _ver, deb, _sha in debs:
            _unpack(deb, root)
        _normalise(root, res.release)
        moddir = kernel_mod.find_modules_dir(root, res.release)
        if moddir is None:
            raise FetchError(f"{res.image_package}: no lib/modules/{res.release} in its packages")
        depmod(moddir, res.release, tmp)
        (root / kernel_mod.CACHE_STAMP).write_text(json.dumps({
            "package": res.image_package, "version": res.version, "release": res.release,
            "layout": res.layout, "suites": res.suites, "spec": spec,
            "debs": [{"package": p, "version": v, "deb": d.name, "sha256": s} for p, v, d, s in debs],
            "sha256": debs[0][3], "fetched": time.strftime("%Y-%m-%d %H:%M:%S"),
        }, indent=2) + "\n")
        target = cache / res.release
        old_extras = [target / x for x in ("headers", "source") if (target / x).exists()]
        for extra in old_extras:   # headers and source of the same release stay
            extra.rename(root / extra.name)
        if target.exists():
            old = cache / f".old-{res.release}-{os.getpid()}"
            target.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        root.rename(target)
    if not (target / "boot" / f"config-{res.release}").is_file():
        # Neither layout without its config has been seen, but the headers always carry one.
        headers = fetch_headers(res.release, cache, log=log, archive=archive, version=res.version)
        shutil.copy(headers / ".config", target / "boot" / f"config-{res.release}")
    log(f"{spec}: {res.image_package} {res.version} -> {target} (release {res.release})")
    return kernel_mod.resolve(str(target))


def _extra_dir(cache, release, what):
    return (Path(cache) if cache else cache_dir()) / release / what


def fetch_headers(release, cache=None, log=print, archive=None, version=None):
    """linux-headers-<release> with its -common and kbuild packages, unpacked into
    CACHE/<release>/headers; returns the build directory (usr/src/linux-headers-<release>),
    which `make -C DIR M=... modules` builds modules against."""
    archive = archive or default_archive(cache)
    archive.update(log=log)
    target = _extra_dir(cache, release, "headers")
    build = target / "usr/src" / f"linux-headers-{release}"
    if (build / ".config").is_file():
        return build
    name = f"linux-headers-{release}"
    versions = archive.versions(name)
    if not versions:
        raise FetchError(f"{release}: no {name} in the archive at {archive.mirror}")
    version = version if version in versions else _newest(versions)
    deps = parse_depends(archive.record(name, version).get("Depends", ""))
    packages = [(name, version)] + [(d, v or version) for d, v in deps
                                    if d.startswith(("linux-headers-", "linux-kbuild-"))]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".headers-", dir=target.parent) as tmp:
        log(f"{release}: headers {version}")
        root = Path(tmp) / "root"
        for _p, _v, deb, _s in _download_all(archive, packages, tmp, log):
            _unpack(deb, root)
        if target.exists():
            shutil.rmtree(target)
        root.rename(target)
    if not (build / ".config").is_file():
        raise FetchError(f"{name} {version}: no usr/src/{name}/.config in it")
    # Debian's build directory includes its -common half by absolute path (/usr/src/...):
    # point that at the unpacked copy.
    makefile = build / "Makefile"
    makefile.write_text(re.sub(r"(?m)^include /usr/", f"include {target}/usr/", makefile.read_text()))
    return build


def fetch_source(release, cache=None, log=print, archive=None, members=None):
    """linux-source-<series> of the Debian version that built `release`, unpacked into
    CACHE/<release>/source/linux-source-<series> (only `members`, e.g. ["fs/overlayfs"],
    when given); returns that directory."""
    cache = Path(cache) if cache else cache_dir()
    archive = archive or default_archive(cache)
    archive.update(log=log)
    stamp = cache / release / kernel_mod.CACHE_STAMP
    version = json.loads(stamp.read_text())["version"] if stamp.is_file() else None
    series = re.match(r"(\d+\.\d+)", release).group(1)
    name = f"linux-source-{series}"
    versions = archive.versions(name)
    if not versions:
        raise FetchError(f"{release}: no {name} in the archive at {archive.mirror}")
    if version not in versions:
        newest = _newest(versions)
        log(f"{release}: {name} {version or '?'} is not in the archive; taking {newest}")
        version = newest
    target = _extra_dir(cache, release, "source")
    tree = target / name
    marker = target / ".version"
    wanted = json.dumps({"version": version, "members": sorted(members) if members else None})
    if tree.is_dir() and marker.is_file() and _covers(json.loads(marker.read_text()), version, members):
        return tree
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".source-", dir=target.parent) as tmp:
        log(f"{release}: {name} {version}")
        (_p, _v, deb, _s), = _download_all(archive, [(name, version)], tmp, log)
        root = Path(tmp) / "deb"
        _unpack(deb, root)
        tarballs = sorted((root / "usr/src").glob(f"{name}.tar.*"))
        if not tarballs:
            raise FetchError(f"{name} {version}: no usr/src/{name}.tar.* in it")
        out = Path(tmp) / "out"
        with tarfile.open(tarballs[0]) as tar:
            prefixes = [f"{name}/{m.strip('/')}" for m in members] if members else None
            chosen = [m for m in tar if prefixes is None
                      or any(m.name == p or m.name.startswith(p + "/") for p in prefixes)]
            tar.extractall(out, members=chosen, filter="tar")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
        marker.write_text(wanted + "\n")
    return tree


def _covers(have, version, members):
    if have.get("version") != version:
        return False
    return have.get("members") is None or (members is not None and set(members) <= set(have["members"]))


def describe_aliases(archive):
    """One line per alias: what it resolves to in the archive now."""
    lines = []
    for name, alias in ALIASES.items():
        try:
            res = resolve(name, archive)
            what = f"{res.image_package} {res.version} ({res.layout} layout, {', '.join(res.suites)})"
        except FetchError as e:
            what = f"unavailable: {e}"
        lines.append(f"{name}\t{alias.about}: {what}")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m overlay_harness.fetch",
        description="Download Debian kernel packages into the harness's kernel cache "
                    "(no install: /boot, /lib/modules and the host's apt set-up are not touched).")
    ap.add_argument("specs", nargs="*", metavar="KERNEL",
                    help=f"an alias ({_aliases_line()}; --list says what each is now), "
                         "a linux-image-* package name, or a release")
    ap.add_argument("--cache", default=None,
                    help=f"cache directory (default {kernel_mod.cache_dir()}, or ${kernel_mod.CACHE_ENV})")
    ap.add_argument("--force", action="store_true", help="fetch again even when cached")
    ap.add_argument("--update", action="store_true", help="read the package lists again now")
    ap.add_argument("--headers", action="store_true",
                    help="also the kernel's headers (to build modules against it)")
    ap.add_argument("--source", action="store_true",
                    help="also its linux-source tree, under CACHE/<release>/source")
    ap.add_argument("--list", action="store_true", help="what each alias is now, and the cached kernels")
    args = ap.parse_args(argv)
    if not args.specs and not args.list:
        ap.error(f"name at least one kernel (e.g. {' '.join(ALIASES)}), or --list")
    archive = default_archive(args.cache)
    status = 0
    try:
        archive.update(force=args.update)
    except FetchError as e:
        print(f"fetch: {e}", file=sys.stderr)
        return 1
    for spec in args.specs:
        try:
            k = fetch(spec, args.cache, force=args.force, archive=archive)
            print(f"  --kernel={k.image}")
            if args.headers:
                print(f"  headers: {fetch_headers(k.release, args.cache, archive=archive)}")
            if args.source:
                print(f"  source: {fetch_source(k.release, args.cache, archive=archive)}")
        except (FetchError, kernel_mod.KernelError) as e:
            print(f"fetch: {e}", file=sys.stderr)
            status = 1
    if args.list:
        print("aliases:")
        for line in describe_aliases(archive):
            print(f"  {line}")
        print(f"cached in {Path(args.cache) if args.cache else cache_dir()}:")
        for k in kernel_mod.cached(Path(args.cache) if args.cache else None):
            print(f"  {k.release}\t{k.image}")
    return status


if __name__ == "__main__":
    sys.exit(main())
