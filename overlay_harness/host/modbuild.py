"""A patched overlayfs for the kernel under test, without building the kernel.

overlayfs is a module in distribution kernels. `--overlay-src DIR` builds overlay.ko out
of tree from DIR (a fs/overlayfs directory, or a kernel tree holding one) against the
kernel under test: the host's /lib/modules/<release>/build, or Debian's headers package
fetched into the kernel cache (overlay_harness.fetch); a kernel build tree under test
rebuilds its own module instead. `--overlay-module PATH` takes one built already. Either
way the module's vermagic must be the stock module's, and the kernel must have overlay as
a module (CONFIG_OVERLAY_FS=m).

The guest must load it from its first use on: virtme-ng's initramfs itself loads overlay
for the guest's writable /etc, /usr, ... So the kernel under test is booted from a shadow
root in the run directory (never /lib/modules): boot/vmlinuz-<release> links to the
kernel's image, lib/modules/<release> mirrors its modules with symlinks, except
fs/overlayfs, which holds the new overlay.ko, and depmod indexes that tree. virtme-ng
finds the modules next to the image, puts this overlay.ko into its initramfs and links
the guest's /lib/modules/<release> to the shadow tree. After boot the loaded overlay
must carry the module's own taint flags (E: unsigned; O: out of tree), which Debian's
signed module lacks. That taint is expected and named in the run's header; any other new
taint or splat still fails the case it happens in (each case samples the taint at its
start, after this load).
"""

import dataclasses
import datetime
import fcntl
import filecmp
import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import kernel as kernel_mod

OVERLAY_SOURCES = ("super.c", "Makefile", "overlayfs.h")


class ModuleError(Exception):
    """The module cannot be built or used with this kernel (a usage error, before any boot)."""


@dataclass
class OverlayModule:
    path: Path          # the stripped overlay.ko the guest gets
    release: str        # the kernel it was built for
    vermagic: str
    ident: str          # srcversion where the module has one, else the start of its sha256
    source: str         # where it came from, in words (directory, git describe)
    intree: bool        # MODULE_INFO(intree, "Y"): no O taint
    build_s: float = 0.0  # how long building it took (0 for --overlay-module)
    build_started: str | None = None  # when the build began (ISO 8601, UTC)
    build_log: str | None = None      # the build's output (make's stdout and stderr)

    @property
    def expected_taint(self):
        """The taint flags loading it sets by itself: E (unsigned), O (out of tree)."""
        return "E" if self.intree else "EO"

    def describe(self):
        return (f"overlay module for {self.release}: {self.path} ({self.ident}, "
                f"from {self.source}); expected taint {'+'.join(self.expected_taint)} "
                f"({'unsigned' if self.intree else 'unsigned, out of tree'})")


def modinfo(path):
    """{field: value} of a module file (the first value of fields that repeat)."""
    p = subprocess.run(["modinfo", str(path)], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise ModuleError(f"{path}: not a kernel module ({p.stderr.strip() or 'modinfo failed'})")
    info = {}
    for line in p.stdout.splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def stock_module(kernel):
    """The path of the kernel's own overlay module (overlay.ko, .ko.xz, ...)."""
    if kernel.tree is not None:
        raise ModuleError(f"--kernel {kernel.tree} is a build tree: rebuild its own overlay module there "
                          "(make fs/overlayfs/overlay.ko) and run the tree as it is")
    if kernel.option("OVERLAY_FS") == "y":
        raise ModuleError(f"kernel {kernel.release} has overlayfs built in (CONFIG_OVERLAY_FS=y): "
                          "a module cannot replace it; build the kernel instead")
    moddir = kernel.modules_dir or kernel_mod.MODULES_DIR / kernel.release
    names = ("overlay.ko", "overlay.ko.xz", "overlay.ko.zst", "overlay.ko.gz")
    found = sorted(p for p in Path(moddir).glob("**/fs/overlayfs/overlay.ko*") if p.name in names)
    if not found:
        raise ModuleError(f"kernel {kernel.release}: no overlay module under {moddir} "
                          f"(CONFIG_OVERLAY_FS={kernel.option('OVERLAY_FS') or 'unset'})")
    return found[0]


def headers_for(kernel, log=print):
    """A directory `make -C DIR M=... modules` works in for this kernel: the host's
    headers of that release, else Debian's, fetched into the cache."""
    host = kernel_mod.MODULES_DIR / kernel.release / "build"
    if (host / "Makefile").is_file():
        return host.resolve()
    from . import fetch  # the network, only when no headers are at hand
    try:
        return fetch.fetch_headers(kernel.release, log=log)
    except fetch.FetchError as e:
        raise ModuleError(f"no headers for {kernel.release} ({e}); install "
                          f"linux-headers-{kernel.release}, or use --overlay-module") from None


def _check_compiler(headers, kernel):
    """Debian's headers name the compiler the kernel was built with (.kernelvariables:
    CC = ... gcc-16); without it on the host the build cannot work: say so first."""
    variables = Path(headers) / ".kernelvariables"
    m = re.search(r"^CC\s*=.*?\b(gcc-\d+)\s*$", variables.read_text(), re.M) if variables.is_file() else None
    if m and not shutil.which(m.group(1)):
        raise ModuleError(f"kernel {kernel.release} was built with {m.group(1)}, which this host lacks: "
                          f"modules for it build on a host with that compiler (Debian's {m.group(1)} "
                          "package, from the suite the kernel comes from)")


def _source_dir(src):
    src = Path(src).expanduser().resolve()
    for candidate in (src, src / "fs" / "overlayfs"):
        if all((candidate / f).is_file() for f in OVERLAY_SOURCES):
            return candidate
    raise ModuleError(f"--overlay-src {src}: neither a fs/overlayfs directory nor a kernel tree "
                      f"with one (no {', '.join(OVERLAY_SOURCES)})")


def patched_copy(pristine, tree, patch=None):
    """A copy of `pristine` (a fs/overlayfs directory) at TREE/fs/overlayfs, with `patch`
    (a diff with kernel-tree paths, applied with -p1) applied; the copy's fs/overlayfs."""
    tree = Path(tree)
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(pristine, tree / "fs" / "overlayfs")
    if patch is not None:
        p = subprocess.run(["patch", "-p1", "--quiet", "--no-backup-if-mismatch", "-i",
                            str(Path(patch).resolve())], cwd=tree, capture_output=True, text=True)
        if p.returncode != 0:
            raise ModuleError(f"{patch} does not apply: {(p.stdout + p.stderr).strip()}")
    return tree / "fs" / "overlayfs"


def describe_source(src):
    """'DIR (git describe)' when DIR's files are tracked by git, else 'DIR'."""
    def git(*argv):
        p = subprocess.run(["git", "-C", str(src), *argv], capture_output=True, text=True, check=False)
        return p.stdout.strip() if p.returncode == 0 else ""
    if not git("ls-files", "--", "."):
        return str(src)   # not in a repository, or an untracked copy inside an unrelated one
    described = git("describe", "--always", "--dirty", "--tags")
    return f"{src} ({described})" if described else str(src)


def _compiler_errors(output, lines=12):
    errors = [i for i, ln in enumerate(output.splitlines()) if re.search(r"\berror\b|\*\*\*", ln)]
    text = output.splitlines()
    if not errors:
        return "\n".join(text[-lines:])
    first = max(0, errors[0] - 1)  # the line that says which file it was compiling
    return "\n".join(text[first:first + lines])


def build(src, kernel, out_dir, jobs=2, log=print, workdir=None):
    """Build overlay.ko from `src` for `kernel` in a copy under out_dir; the OverlayModule.
    With `workdir` (one per kernel release, kept between runs), the build is incremental:
    only the files whose bytes differ from workdir's are copied in, so make recompiles
    only what they change (a series' next step, a baseline built before); builds in one
    workdir take turns (a lock file beside it)."""
    src = _source_dir(src)
    stock = stock_module(kernel)
    headers = headers_for(kernel, log=log)
    _check_compiler(headers, kernel)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(workdir) if workdir else out / "src"
    work.parent.mkdir(parents=True, exist_ok=True)
    with open(work.parent / f".{work.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if workdir:
            _sync(src, work)
        else:
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(src, work, ignore=_IGNORED)
        log(f"building overlay.ko from {src} against {headers}")
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        start = time.monotonic()
        p = subprocess.run(["make", "-C", str(headers), f"M={work}", f"-j{jobs}", "modules"],
                           capture_output=True, text=True, check=False)
        build_log = out / "build.log"
        build_log.write_text(p.stdout + p.stderr)
        built = work / "overlay.ko"
        if p.returncode != 0 or not built.is_file():
            raise ModuleError(f"overlay.ko from {src} did not build against {headers}:\n"
                              f"{_compiler_errors(p.stdout + p.stderr)}")
        module = use(built, kernel, out, source=describe_source(src), stock=stock)
    module.build_s = round(time.monotonic() - start, 1)
    module.build_started, module.build_log = started, str(build_log)
    return module


_IGNORED = shutil.ignore_patterns("*.o", "*.ko", "*.mod*", ".*.cmd", "modules.order", "Module.symvers")


def _sync(src, work):
    """work holds src's files: those whose bytes differ are copied (a new mtime, so make
    rebuilds what depends on them), the others keep theirs; files src lacks are removed
    (build outputs stay)."""
    work.mkdir(parents=True, exist_ok=True)
    keep = set()
    for f in src.rglob("*"):
        rel = f.relative_to(src)
        if f.is_dir() or _IGNORED(str(f.parent), [f.name]):
            continue
        keep.add(rel)
        dest = work / rel
        if not (dest.is_file() and filecmp.cmp(f, dest, shallow=False)):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
    for f in list(work.rglob("*")):
        rel = f.relative_to(work)
        if f.is_file() and rel not in keep and not _IGNORED(str(f.parent), [f.name]):
            f.unlink()


def use(path, kernel, out_dir, source=None, stock=None):
    """Check a built overlay.ko against `kernel` and keep a stripped copy in out_dir."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModuleError(f"--overlay-module {path}: no such file")
    info = modinfo(path)
    if info.get("name", "overlay") != "overlay":
        raise ModuleError(f"--overlay-module {path}: module {info.get('name')}, not overlay")
    want = modinfo(stock or stock_module(kernel)).get("vermagic")
    if info.get("vermagic") != want:
        raise ModuleError(f"{path}: vermagic {info.get('vermagic')!r} does not match kernel "
                          f"{kernel.release}'s ({want!r}): build it against that kernel's headers")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    copy = out / "overlay.ko"
    if copy != path:
        p = subprocess.run(["strip", "--strip-debug", "-o", str(copy), str(path)],
                           capture_output=True, text=True, check=False)
        if p.returncode != 0:
            shutil.copy(path, copy)
    ident = (f"srcversion {info['srcversion']}" if info.get("srcversion")
             else f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]}")
    return OverlayModule(path=copy, release=kernel.release, vermagic=info.get("vermagic", ""),
                         ident=ident, source=source or str(path),
                         intree=info.get("intree") == "Y")


def substitute(kernel, module, out_dir):
    """`kernel` booted from a shadow root whose overlay module is `module` (made once per
    run directory; xdist workers find it made)."""
    out = Path(out_dir)
    root = out / "root"
    image = root / "boot" / f"vmlinuz-{kernel.release}"
    moddir = root / "lib" / "modules" / kernel.release
    if not (moddir / "modules.dep").is_file():
        stock = stock_module(kernel)
        stock_dir = kernel.modules_dir or kernel_mod.MODULES_DIR / kernel.release
        shutil.rmtree(root, ignore_errors=True)
        image.parent.mkdir(parents=True)
        image.symlink_to(kernel.image)
        _mirror(Path(stock_dir), moddir, stock.relative_to(stock_dir), module.path)
        from .fetch import FetchError, depmod
        try:
            depmod(moddir, kernel.release, out)
        except FetchError as e:
            raise ModuleError(str(e)) from None
    return dataclasses.replace(kernel, image=image, run_arg=str(image), modules_dir=moddir,
                               overlay_module=module)


def _mirror(src, dest, replaced, new_file):
    """dest mirrors src, except the file at relative path `replaced` (overlay.ko, .ko.xz,
    ...), which becomes new_file as overlay.ko. Entries are symlinks, except under
    /lib/modules/<release>: the guest sees the mirror at that very path, where such a
    link would point back into the mirror, so those are hard links (copies across
    filesystems)."""
    dest.mkdir(parents=True, exist_ok=True)
    head = replaced.parts[0]
    shadowed = any(Path(p) in src.resolve().parents or Path(p) == src.resolve()
                   for p in ("/lib/modules", "/usr/lib/modules"))
    for entry in src.iterdir():
        if entry.name == head and len(replaced.parts) > 1:
            _mirror(entry, dest / head, Path(*replaced.parts[1:]), new_file)
        elif entry.name == head:
            continue
        elif entry.is_symlink() or not shadowed:
            (dest / entry.name).symlink_to(entry.resolve() if entry.is_symlink() else entry)
        elif entry.is_dir():
            shutil.copytree(entry, dest / entry.name, copy_function=_link_or_copy, symlinks=True)
        else:
            _link_or_copy(entry, dest / entry.name)
    if len(replaced.parts) == 1:
        shutil.copy(new_file, dest / "overlay.ko")


def _link_or_copy(src, dest):
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def check_in_guest(g, module):
    """The guest's overlay is `module`: loaded (at boot by virtme-ng's initramfs, else now)
    and carrying the module's own taint flags."""
    if not isinstance(g.read_file("/sys/module/overlay/taint"), bytes):
        g.run(["modprobe", "overlay"], check=False)
    taint = g.read_file("/sys/module/overlay/taint")
    taint = taint.decode().strip() if isinstance(taint, bytes) else None
    if taint is None or not set(module.expected_taint) <= set(taint):
        raise ModuleError(f"the guest's overlay module is not {module.path} (its taint: "
                          f"{'not loaded' if taint is None else taint or 'none'}, want "
                          f"{module.expected_taint})")
