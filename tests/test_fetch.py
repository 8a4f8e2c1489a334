"""harness.fetch without the network: meta-package resolution, and unpacking a kernel
package (built here with dpkg-deb) into a cache that harness.kernel resolves."""

import json
import shutil
import struct
import subprocess

import pytest

from harness import fetch
from harness import kernel as kmod


def fake_bzimage(path, version):
    """Just enough of an x86 bzImage header for harness.kernel to read the release."""
    data = bytearray(0x1000)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x400)
    data[0x600:0x600 + len(version) + 1] = version.encode() + b"\0"
    path.write_bytes(bytes(data))

RECORDS = {
    "linux-image-amd64": {"Package": "linux-image-amd64", "Version": "6.1.192-2",
                          "Depends": "linux-image-6.1.0-56-amd64 (= 6.1.192-2)"},
    "linux-image-6.12-amd64": {"Package": "linux-image-6.12-amd64", "Version": "6.12.117-1~deb12u1",
                               "Depends": "linux-image-6.12.117+deb12-amd64 (= 6.12.117-1~deb12u1)"},
    "linux-image-6.12.117+deb12-amd64": {
        "Package": "linux-image-6.12.117+deb12-amd64", "Version": "6.12.117-1~deb12u1",
        "Depends": "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool"},
    "linux-image-6.1.0-56-amd64": {"Package": "linux-image-6.1.0-56-amd64", "Version": "6.1.192-2",
                                   "Depends": "kmod, linux-base (>= 4.3~)"},
}


def fake_record(name):
    if name not in RECORDS:
        raise fetch.FetchError(f"{name}: no such package known to apt")
    return RECORDS[name]


@pytest.mark.parametrize("spec, package, version", [
    ("6.1", "linux-image-6.1.0-56-amd64", "6.1.192-2"),
    ("6.12", "linux-image-6.12.117+deb12-amd64", "6.12.117-1~deb12u1"),
    ("linux-image-6.12.117+deb12-amd64", "linux-image-6.12.117+deb12-amd64", "6.12.117-1~deb12u1"),
    ("6.12.117+deb12-amd64", "linux-image-6.12.117+deb12-amd64", "6.12.117-1~deb12u1"),
])
def test_aliases_and_meta_packages_resolve_to_the_image_package(spec, package, version):
    assert fetch.resolve_package(spec, fake_record) == (package, version)


def test_unknown_package_is_an_error():
    with pytest.raises(fetch.FetchError, match="no such package"):
        fetch.resolve_package("5.10", fake_record)


def build_fake_deb(tmp_path, release="6.12.117+deb12-amd64"):
    """A linux-image-like .deb: boot/vmlinuz-R, boot/config-R, lib/modules/R/ with a module."""
    root = tmp_path / "pkgroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: linux-image-{release}\nVersion: 1\nArchitecture: amd64\n"
        "Maintainer: test <t@example.invalid>\nDescription: fake kernel\n")
    (root / "boot").mkdir()
    fake_bzimage(root / f"boot/vmlinuz-{release}", f"{release} (debian-kernel@lists.debian.org) #1")
    (root / f"boot/config-{release}").write_text("CONFIG_OVERLAY_FS=m\nCONFIG_BLK_DEV_LOOP=m\n")
    mods = root / f"lib/modules/{release}/kernel/fs"
    mods.mkdir(parents=True)
    (root / f"lib/modules/{release}/modules.order").write_text("")
    deb = tmp_path / f"linux-image-{release}_1_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb (Debian/Ubuntu)")
def test_fetch_unpacks_into_the_cache_and_the_kernel_resolves(tmp_path, monkeypatch):
    deb = build_fake_deb(tmp_path)
    downloads = []

    def fake_download(package, version, directory):
        downloads.append((package, version))
        return shutil.copy(deb, directory)

    cache = tmp_path / "cache"
    monkeypatch.setenv(kmod.CACHE_ENV, str(cache))
    k = fetch.fetch("6.12", log=lambda *_: None, record=fake_record, download=fake_download)
    rel = "6.12.117+deb12-amd64"
    assert downloads == [("linux-image-6.12.117+deb12-amd64", "6.12.117-1~deb12u1")]
    assert k.release == rel
    assert k.image == cache / rel / "boot" / f"vmlinuz-{rel}"
    assert k.run_arg == str(k.image)   # vng finds CACHE/<rel>/lib/modules from the image path
    assert k.modules_dir == cache / rel / "lib/modules" / rel
    assert (k.modules_dir / "modules.dep").is_file()   # depmod ran inside the cache
    assert k.option("OVERLAY_FS") == "m" and k.config_path == cache / rel / "boot" / f"config-{rel}"
    assert k.package["package"] == "linux-image-6.12.117+deb12-amd64"
    assert k.package["version"] == "6.12.117-1~deb12u1" and len(k.package["sha256"]) == 64
    assert kmod.modules_available(k)
    # Every way of naming it resolves to the same kernel.
    for spec in (str(k.image), str(cache / rel), rel, "6.12"):
        got = kmod.resolve(spec)
        assert (got.release, got.image, got.modules_dir) == (k.release, k.image, k.modules_dir), spec
    assert [c.release for c in kmod.cached()] == [rel]
    # Fetching again is a no-op while the version is the same.
    fetch.fetch("6.12", log=lambda *_: None, record=fake_record, download=fake_download)
    assert len(downloads) == 1
    stamp = json.loads((cache / rel / kmod.CACHE_STAMP).read_text())
    assert stamp["release"] == rel and stamp["spec"] == "6.12"
