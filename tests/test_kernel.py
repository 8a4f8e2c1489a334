"""Kernel selection: image headers, build trees, installed releases, usage errors (no VM)."""

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from overlay_harness.host import kernel as kmod

ROOT = Path(__file__).resolve().parent.parent


def fake_bzimage(path, version="6.9.0-test (builder@host) #1 SMP"):
    data = bytearray(0x1000)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x400)
    text = version.encode() + b"\0"
    data[0x600:0x600 + len(text)] = text
    path.write_bytes(bytes(data))
    return path


def test_release_from_bzimage_header(tmp_path):
    assert kmod.bzimage_release(fake_bzimage(tmp_path / "bz")) == "6.9.0-test"


def test_not_a_kernel(tmp_path):
    (tmp_path / "text").write_text("hello\n" * 200)
    assert kmod.bzimage_release(tmp_path / "text") is None
    assert kmod.bzimage_release(tmp_path / "missing") is None
    with pytest.raises(kmod.KernelError, match="not an x86 kernel image"):
        kmod.resolve(str(tmp_path / "text"))


def test_missing_kernel_names_the_installed_ones(tmp_path, monkeypatch):
    boot = tmp_path / "boot"
    boot.mkdir()
    fake_bzimage(boot / "vmlinuz-6.1.0-9-amd64")
    monkeypatch.setattr(kmod, "BOOT_DIR", boot)
    with pytest.raises(kmod.KernelError, match=r"installed: 6\.1\.0-9-amd64"):
        kmod.resolve("5.4.0-nope")
    with pytest.raises(kmod.KernelError, match="no such file"):
        kmod.resolve(str(tmp_path / "nowhere" / "bzImage"))


def test_installed_newest_first_and_by_release(tmp_path, monkeypatch):
    boot = tmp_path / "boot"
    boot.mkdir()
    for rel in ("6.1.0-9-amd64", "6.12.9-amd64", "6.1.0-56-amd64"):
        fake_bzimage(boot / f"vmlinuz-{rel}")
    (boot / "config-6.12.9-amd64").write_text("CONFIG_OVERLAY_FS=m\n# CONFIG_FOO is not set\n")
    monkeypatch.setattr(kmod, "BOOT_DIR", boot)
    assert [k.release for k in kmod.installed()] == ["6.12.9-amd64", "6.1.0-56-amd64", "6.1.0-9-amd64"]
    default = kmod.resolve(None)
    assert default.release == "6.12.9-amd64"
    assert default.option("OVERLAY_FS") == "m" and default.option("CONFIG_FOO") is None
    assert kmod.resolve("6.1.0-9-amd64").image == boot / "vmlinuz-6.1.0-9-amd64"


def test_no_kernel_at_all(tmp_path, monkeypatch):
    monkeypatch.setattr(kmod, "BOOT_DIR", tmp_path)
    with pytest.raises(kmod.KernelError, match="setup.sh"):
        kmod.resolve(None)


def test_build_tree(tmp_path):
    tree = tmp_path / "linux"
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "include/config").mkdir(parents=True)
    fake_bzimage(tree / "arch/x86/boot/bzImage", "6.13.0-rc1-dirty (x@y) #3")
    (tree / "include/config/kernel.release").write_text("6.13.0-rc1+\n")
    (tree / ".config").write_text('CONFIG_DM_FLAKEY=y\nCONFIG_LOCALVERSION="+"\n')
    k = kmod.resolve(str(tree))
    assert (k.release, k.run_arg, k.tree) == ("6.13.0-rc1+", str(tree), tree)
    assert k.option("DM_FLAKEY") == "y" and k.option("LOCALVERSION") == "+"
    (tree / "arch/x86/boot/bzImage").unlink()
    with pytest.raises(kmod.KernelError, match="no arch/x86/boot/bzImage"):
        kmod.resolve(str(tree))


@pytest.mark.parametrize("spec, message", [
    ("/etc/passwd", "not an x86 kernel image"),
    ("/nonexistent/vmlinuz", "no such file"),
    ("0.0.1-no-such-release", "no such file, kernel build tree or installed release"),
])
def test_bad_kernel_is_a_usage_error_before_any_boot(spec, message):
    p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--kernel={spec}",
                        "cases", "-q"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 4, p.stdout + p.stderr  # pytest's usage-error status
    assert message in p.stderr
    assert "Traceback" not in p.stderr


# -- fetched kernels (overlay_harness.fetch's cache) and the config check --------------------

def fake_cached(cache, release, config="CONFIG_OVERLAY_FS=m\n"):
    root = cache / release
    (root / "boot").mkdir(parents=True)
    (root / f"lib/modules/{release}").mkdir(parents=True)
    fake_bzimage(root / f"boot/vmlinuz-{release}", f"{release} (x@y) #1")
    (root / f"boot/config-{release}").write_text(config)
    return root


def test_cached_kernels_by_path_release_and_series(tmp_path, monkeypatch):
    boot = tmp_path / "boot"
    boot.mkdir()
    fake_bzimage(boot / "vmlinuz-6.1.0-56-amd64")
    monkeypatch.setattr(kmod, "BOOT_DIR", boot)
    cache = tmp_path / "kernels"
    monkeypatch.setenv(kmod.CACHE_ENV, str(cache))
    fake_cached(cache, "6.12.115+deb12-amd64")
    root = fake_cached(cache, "6.12.117+deb12-amd64", "CONFIG_DM_FLAKEY=m\n")
    assert [k.release for k in kmod.cached()] == ["6.12.117+deb12-amd64", "6.12.115+deb12-amd64"]
    k = kmod.resolve("6.12")                       # newest of the series
    assert k.release == "6.12.117+deb12-amd64" and k.image == root / "boot/vmlinuz-6.12.117+deb12-amd64"
    assert k.option("DM_FLAKEY") == "m" and k.modules_dir == root / "lib/modules/6.12.117+deb12-amd64"
    assert kmod.resolve("6.12.115+deb12-amd64").release == "6.12.115+deb12-amd64"
    assert kmod.resolve(str(root)).image == k.image            # the unpacked package's directory
    assert kmod.resolve(str(k.image)).config_path == root / "boot/config-6.12.117+deb12-amd64"
    assert kmod.resolve("6.1").release == "6.1.0-56-amd64"    # falls back to /boot
    with pytest.raises(kmod.KernelError, match=r"fetched into .*6\.12\.117\+deb12-amd64"):
        kmod.resolve("6.2")


def test_image_outside_boot_takes_the_config_beside_it(tmp_path):
    d = tmp_path / "somewhere"
    d.mkdir()
    fake_bzimage(d / "vmlinuz", "6.9.0-test (x@y) #1")
    assert kmod.resolve(str(d / "vmlinuz")).config == {}
    (d / "config-6.9.0-test").write_text("CONFIG_XFS_FS=y\n")
    assert kmod.resolve(str(d / "vmlinuz")).option("XFS_FS") == "y"


def test_fragment_groups_the_options_per_feature():
    features = kmod.fragment_features()
    assert set(features) >= {"boot", "overlay", "loop", "dm", "dm-flakey", "ext4", "xfs", "btrfs", "nfs"}
    assert "-" not in features
    assert "CONFIG_DM_FLAKEY" in features["dm-flakey"]
    assert "CONFIG_OVERLAY_FS" in features["overlay"]
    assert {"CONFIG_NFS_FS", "CONFIG_NFSD"} <= set(features["nfs"])
    assert {"CONFIG_9P_FS", "CONFIG_VIRTIO_PCI"} <= set(features["boot"])
    assert "CONFIG_IKCONFIG" not in {o for opts in features.values() for o in opts}  # unchecked group


def test_missing_options_from_a_config(tmp_path):
    fragment = tmp_path / "frag.config"
    fragment.write_text("## feature: dm\nCONFIG_MD=y\nCONFIG_BLK_DEV_DM=y\n"
                        "## feature: dm-flakey\nCONFIG_DM_FLAKEY=y\n"
                        "## feature: xfs\nCONFIG_XFS_FS=y\n"
                        "## feature: -\nCONFIG_IKCONFIG=y\n")
    k = kmod.Kernel(image=Path("/x"), release="6.9.0", run_arg="/x", config_path=Path("/x/.config"),
                    config={"CONFIG_MD": "y", "CONFIG_BLK_DEV_DM": "m", "CONFIG_XFS_FS": "n"})
    missing = kmod.missing_options(k, fragment=fragment)
    assert missing == {"dm-flakey": ["CONFIG_DM_FLAKEY"], "xfs": ["CONFIG_XFS_FS"]}
    assert kmod.missing_options(k, ["dm"], fragment=fragment) == {}
    assert kmod.missing_options(k, ["xfs"], fragment=fragment) == {"xfs": ["CONFIG_XFS_FS"]}
    assert kmod.describe_missing(k, missing) == (
        "kernel 6.9.0 lacks dm-flakey (CONFIG_DM_FLAKEY); xfs (CONFIG_XFS_FS) per /x/.config")
    with pytest.raises(KeyError, match="nfs"):
        kmod.missing_options(k, ["nfs"], fragment=fragment)
    k.config = {}   # no config known (a bare bzImage): nothing can be said
    assert kmod.missing_options(k, fragment=fragment) == {}


@pytest.mark.parametrize("release", ["6.1.0-56-amd64"])
def test_debian_kernel_config_has_what_the_suite_needs(release):
    """Against a real Debian config when this host has one (everything as modules)."""
    cfg = Path("/boot") / f"config-{release}"
    if not cfg.is_file():
        pytest.skip(f"no {cfg} here")
    k = kmod.Kernel(image=Path("/x"), release=release, run_arg="/x", config_path=cfg,
                    config=kmod.parse_config(cfg))
    assert kmod.missing_options(k) == {}


def test_a_kernel_without_a_config_takes_the_one_the_guest_carries(tmp_path):
    import gzip

    from overlay_harness.library.features import config_from_guest

    class FakeGuest:
        def __init__(self, files):
            self.files = files

        def read_file(self, path):
            return self.files.get(path, 2)  # ENOENT as the agent returns it, a number

    bare = kmod.Kernel(image=tmp_path / "bzImage", release="7.3.0-rc7", run_arg="x")
    assert not kmod.config_known(bare)
    config_from_guest(FakeGuest({"/proc/config.gz": gzip.compress(b"CONFIG_OVERLAY_FS=m\n")}), bare)
    assert bare.option("OVERLAY_FS") == "m" and bare.config_path == "the guest's /proc/config.gz"
    other = kmod.Kernel(image=tmp_path / "bzImage", release="7.3.0-rc7", run_arg="x")
    config_from_guest(FakeGuest({"/boot/config-7.3.0-rc7": b"CONFIG_DM_FLAKEY=y\n"}), other)
    assert other.option("DM_FLAKEY") == "y"
    assert other.config_path == "the guest's /boot/config-7.3.0-rc7"


@pytest.mark.parametrize("release, version", [
    ("6.1.0-56-amd64", (6, 1, 0)), ("6.12.117+deb12-amd64", (6, 12, 117)),
    ("7.3-amd64", (7, 3, 0)), ("7.3.0-rc7", (7, 3, 0)), ("6.5", (6, 5, 0)), ("virtme", (0, 0, 0)),
])
def test_one_parser_of_releases(release, version):
    assert kmod.version(release) == version


def test_a_release_candidate_and_a_point_release_sort_without_mixing_numbers_and_words():
    releases = ["7.3-amd64", "7.3.1-amd64", "6.1.0-9-amd64", "6.1.0-56-amd64"]
    assert sorted(releases, key=kmod._version_key, reverse=True) == [
        "7.3.1-amd64", "7.3-amd64", "6.1.0-56-amd64", "6.1.0-9-amd64"]
