"""Kernel selection: image headers, build trees, installed releases, usage errors (no VM)."""

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from harness import kernel as kmod

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
                        "cases", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 4, p.stdout + p.stderr  # pytest's usage-error status
    assert message in p.stderr
    assert "Traceback" not in p.stderr
