"""overlay_harness.fetch without the network: meta-package resolution, and unpacking a kernel
package (built here with dpkg-deb) into a cache that overlay_harness.kernel resolves."""

import json
import shutil
import struct
import subprocess

import pytest

from overlay_harness.host import fetch
from overlay_harness.host import kernel as kmod


def fake_bzimage(path, version):
    """Just enough of an x86 bzImage header for overlay_harness.kernel to read the release."""
    data = bytearray(0x1000)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x400)
    data[0x600:0x600 + len(version) + 1] = version.encode() + b"\0"
    path.write_bytes(bytes(data))

class FakeArchive:
    """The archive as apt would answer: {package: {version: (suites, fields)}}, and .debs
    built here for download (no network)."""

    mirror = "file:///fake"

    def __init__(self, packages, debs=None):
        self.packages, self.debs, self.downloads = packages, debs or {}, []

    def update(self, force=False, log=None):
        pass

    def versions(self, package):
        return {v: suites for v, (suites, _f) in self.packages.get(package, {}).items()}

    def record(self, package, version):
        try:
            return self.packages[package][version][1]
        except KeyError:
            raise fetch.FetchError(f"{package}={version}: not in the archive") from None

    def download(self, package, version, directory):
        self.downloads.append((package, version))
        return shutil.copy(self.debs[package], directory)


B = ["bookworm-security"]
PACKAGES = {
    "linux-image-amd64": {
        "6.1.192-2": (B, {"Depends": "linux-image-6.1.0-56-amd64 (= 6.1.192-2)"}),
        "7.2.13-1": (["sid"], {"Depends": "linux-base-amd64 (= 7.2.13-1), "
                                          "linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)"}),
        "7.3~rc7-1~exp1": (["experimental"], {"Depends": "linux-image-7.3-amd64 (= 7.3~rc7-1~exp1)"}),
    },
    "linux-image-6.12-amd64": {"6.12.117-1~deb12u1": (B, {
        "Depends": "linux-image-6.12.117+deb12-amd64 (= 6.12.117-1~deb12u1)"})},
    "linux-image-6.12.117+deb12-amd64": {"6.12.117-1~deb12u1": (B, {
        "Depends": "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool"})
    },
    "linux-image-6.1.0-56-amd64": {"6.1.192-2": (B, {"Depends": "kmod, linux-base (>= 4.3~)"})},
    "linux-image-7.2.13+deb14-amd64": {"7.2.13-1": (["sid"], {
        "Depends": "dracut | initramfs-tools (>= 0.120+deb8u2), linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), "
                   "linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), "
                   "linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)"})},
    "linux-image-7.3-amd64": {"7.3~rc7-1~exp1": (["experimental"], {
        "Depends": "dracut | initramfs-tools (>= 0.120+deb8u2), linux-base-7.3-amd64 (= 7.3~rc7-1~exp1), "
                   "linux-binary-7.3-amd64 (= 7.3~rc7-1~exp1), linux-modules-7.3-amd64 (= 7.3~rc7-1~exp1)"})},
}
SPLIT_72 = [("linux-base-7.2.13+deb14-amd64", "7.2.13-1"), ("linux-binary-7.2.13+deb14-amd64", "7.2.13-1"),
            ("linux-modules-7.2.13+deb14-amd64", "7.2.13-1")]


@pytest.mark.parametrize("spec, package, version, packages", [
    ("6.1", "linux-image-6.1.0-56-amd64", "6.1.192-2", [("linux-image-6.1.0-56-amd64", "6.1.192-2")]),
    ("6.12", "linux-image-6.12.117+deb12-amd64", "6.12.117-1~deb12u1", None),
    ("linux-image-6.12.117+deb12-amd64", "linux-image-6.12.117+deb12-amd64", "6.12.117-1~deb12u1", None),
    ("6.12.117+deb12-amd64", "linux-image-6.12.117+deb12-amd64", "6.12.117-1~deb12u1", None),
    ("7.2", "linux-image-7.2.13+deb14-amd64", "7.2.13-1", SPLIT_72),
    ("rc", "linux-image-7.3-amd64", "7.3~rc7-1~exp1", [(p.replace("7.2.13+deb14", "7.3"), "7.3~rc7-1~exp1")
                                                       for p, _v in SPLIT_72]),
])
def test_aliases_and_meta_packages_resolve_to_the_kernel_packages(spec, package, version, packages):
    got = fetch.resolve(spec, FakeArchive(PACKAGES))
    assert (got.image_package, got.version) == (package, version)
    assert got.packages == (packages or [(package, version)])
    assert got.layout == ("split" if packages and len(packages) > 1 else "single")


def test_an_alias_whose_suite_moved_on_says_so():
    moved = {**PACKAGES, "linux-image-amd64": {"7.3.1-1": (["sid"], {
        "Depends": "linux-image-7.3.1+deb14-amd64 (= 7.3.1-1)"})},
        "linux-image-7.3.1+deb14-amd64": {"7.3.1-1": (["sid"], {"Depends": "kmod"})}}
    with pytest.raises(fetch.FetchError, match="is 7.3.1.deb14-amd64 now, not a 7.2 kernel"):
        fetch.resolve("7.2", FakeArchive(moved))


@pytest.mark.parametrize("spec, message", [
    ("5.10", "no package linux-image-5.10 in the archive"),
    ("../etc", "not a kernel name"),
])
def test_unknown_names_are_one_clear_error(spec, message):
    with pytest.raises(fetch.FetchError, match=message):
        fetch.resolve(spec, FakeArchive(PACKAGES))


def test_host_mirrors_are_read_from_both_source_formats(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# none\n")
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example.invalid/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example.invalid/debian-security/\nSuites: bookworm-security\n")
    (tmp_path / "sources.list.d/other.list").write_text(
        "deb [arch=amd64] https://x.example.invalid/apt stable main\n")
    assert fetch.host_mirrors(tmp_path) == ("http://mirror.example.invalid/debian",
                                            "http://mirror.example.invalid/debian-security")


def build_deb(tmp_path, package, files):
    """A .deb named `package` holding `files` ({path: bytes}), built with dpkg-deb."""
    root = tmp_path / f"pkg-{package}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: 1\nArchitecture: amd64\n"
        "Maintainer: test <t@example.invalid>\nDescription: fake kernel part\n")
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    deb = tmp_path / f"{package}_1_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def bzimage_bytes(tmp_path, release):
    fake_bzimage(tmp_path / "bz", f"{release} (debian-kernel@lists.debian.org) #1")
    return (tmp_path / "bz").read_bytes()


CONFIG = b"CONFIG_OVERLAY_FS=m\nCONFIG_BLK_DEV_LOOP=m\n"


def single_layout(tmp_path, release):
    """Up to 6.x: one linux-image package with boot/ and lib/modules/."""
    return {f"linux-image-{release}": build_deb(tmp_path, f"linux-image-{release}", {
        f"boot/vmlinuz-{release}": bzimage_bytes(tmp_path, release),
        f"boot/config-{release}": CONFIG,
        f"lib/modules/{release}/kernel/fs/overlayfs/overlay.ko": b"",
        f"lib/modules/{release}/modules.order": b""})}


def split_layout(tmp_path, release):
    """Since 7.x: image, modules and base (config, modules.builtin) in three packages, all
    under usr/lib/modules/<release>."""
    mods = f"usr/lib/modules/{release}"
    return {
        f"linux-binary-{release}": build_deb(tmp_path, f"linux-binary-{release}", {
            f"{mods}/vmlinuz": bzimage_bytes(tmp_path, release)}),
        f"linux-modules-{release}": build_deb(tmp_path, f"linux-modules-{release}", {
            f"{mods}/kernel/fs/overlayfs/overlay.ko": b""}),
        f"linux-base-{release}": build_deb(tmp_path, f"linux-base-{release}", {
            f"{mods}/config": CONFIG, f"{mods}/modules.builtin": b"", f"{mods}/modules.order": b""}),
    }


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian/Ubuntu)")
@pytest.mark.parametrize("spec, release, layout", [
    ("6.12", "6.12.117+deb12-amd64", single_layout),
    ("7.2", "7.2.13+deb14-amd64", split_layout),
])
def test_fetch_unpacks_either_layout_into_the_cache_and_the_kernel_resolves(
        tmp_path, monkeypatch, spec, release, layout):
    archive = FakeArchive(PACKAGES, layout(tmp_path, release))
    cache = tmp_path / "cache"
    monkeypatch.setenv(kmod.CACHE_ENV, str(cache))
    k = fetch.fetch(spec, log=lambda *_: None, archive=archive)
    assert sorted(archive.downloads) == sorted(fetch.resolve(spec, archive).packages)
    assert k.release == release
    assert k.image == cache / release / "boot" / f"vmlinuz-{release}"
    assert k.run_arg == str(k.image)   # vng finds CACHE/<rel>/lib/modules from the image path
    assert k.modules_dir == cache / release / "lib/modules" / release
    assert (k.modules_dir / "modules.dep").is_file()   # depmod ran inside the cache
    assert (k.modules_dir / "kernel/fs/overlayfs/overlay.ko").is_file()
    assert k.option("OVERLAY_FS") == "m" and k.config_path == cache / release / "boot" / f"config-{release}"
    assert k.package["version"] == fetch.resolve(spec, archive).version
    assert len(k.package["sha256"]) == 64 and len(k.package["debs"]) == len(archive.downloads)
    assert kmod.modules_available(k)
    # Every way of naming it resolves to the same kernel.
    for name in (str(k.image), str(cache / release), release, release[:3] if spec == "7.2" else spec):
        got = kmod.resolve(name)
        assert (got.release, got.image, got.modules_dir) == (k.release, k.image, k.modules_dir), name
    assert [c.release for c in kmod.cached()] == [release]
    # Fetching again is a no-op while the version is the same.
    n = len(archive.downloads)
    fetch.fetch(spec, log=lambda *_: None, archive=archive)
    assert len(archive.downloads) == n
    stamp = json.loads((cache / release / kmod.CACHE_STAMP).read_text())
    assert stamp["release"] == release and stamp["spec"] == spec


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian/Ubuntu)")
def test_source_unpacks_the_matching_linux_source_only_where_asked(tmp_path, monkeypatch):
    release = "7.2.13+deb14-amd64"
    tree = tmp_path / "tree" / "linux-source-7.2"
    for rel, text in {"fs/overlayfs/super.c": "ovl", "fs/ext4/super.c": "ext4",
                      "Documentation/filesystems/overlayfs.rst": "doc"}.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    tarball = tmp_path / "linux-source-7.2.tar.xz"
    subprocess.run(["tar", "-C", str(tree.parent), "-cJf", str(tarball), "linux-source-7.2"], check=True)
    debs = split_layout(tmp_path, release)
    debs["linux-source-7.2"] = build_deb(tmp_path, "linux-source-7.2",
                                         {"usr/src/linux-source-7.2.tar.xz": tarball.read_bytes()})
    packages = {**PACKAGES, "linux-source-7.2": {"7.2.13-1": (["sid"], {"Depends": "binutils"})}}
    archive = FakeArchive(packages, debs)
    cache = tmp_path / "cache"
    monkeypatch.setenv(kmod.CACHE_ENV, str(cache))
    fetch.fetch("7.2", log=lambda *_: None, archive=archive)
    src = fetch.fetch_source(release, log=lambda *_: None, archive=archive, members=["fs/overlayfs"])
    assert src == cache / release / "source" / "linux-source-7.2"
    assert (src / "fs/overlayfs/super.c").read_text() == "ovl"
    assert not (src / "fs/ext4").exists()
    n = len(archive.downloads)
    fetch.fetch_source(release, log=lambda *_: None, archive=archive, members=["fs/overlayfs"])
    assert len(archive.downloads) == n   # already there
    whole = fetch.fetch_source(release, log=lambda *_: None, archive=archive)
    assert (whole / "fs/ext4/super.c").read_text() == "ext4"
    # A later fetch of the same release keeps the source beside the new image.
    fetch.fetch("7.2", force=True, log=lambda *_: None, archive=archive)
    assert (whole / "Documentation/filesystems/overlayfs.rst").is_file()
