"""Preflight (no VM): what is missing on this machine, named with its fix, for Debian,
Ubuntu and other distributions (a fake os-release and a fake PATH)."""

import os

import pytest

from overlay_harness import preflight as tool
from overlay_harness.host import preflight

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
UBUNTU = 'PRETTY_NAME="Ubuntu 24.04 LTS"\nID=ubuntu\nID_LIKE=debian\n'
FEDORA = 'NAME="Fedora Linux"\nID=fedora\nPRETTY_NAME="Fedora Linux 41"\n'


def fake_path(tmp_path, commands):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in commands:
        exe = bin_dir / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    return str(bin_dir)


def release(tmp_path, text):
    path = tmp_path / "os-release"
    path.write_text(text)
    return preflight.os_release(path)


ALL = [cmd for cmd, *_ in preflight.COMMANDS]


def texts(found):
    return [str(p) for p in found]


@pytest.mark.parametrize(("text", "family", "package"), [
    (DEBIAN, "debian", "linux-image-amd64"), (UBUNTU, "ubuntu", "linux-image-generic"),
    (FEDORA, None, None), ("", None, None)])
def test_distribution_and_its_kernel_package(tmp_path, text, family, package):
    rel = release(tmp_path, text)
    assert preflight.distro_family(rel) == family
    assert preflight.kernel_package(rel) == package


def test_a_complete_machine_has_no_problems(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "vng_command", lambda: "/x/vng")
    assert preflight.problems(path=fake_path(tmp_path, ALL), release=release(tmp_path, DEBIAN)) == []


def test_missing_commands_are_named_with_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "vng_command", lambda: "/x/vng")
    path = fake_path(tmp_path, [c for c in ALL if c not in ("mkfs.xfs", "dmsetup")])
    found = preflight.problems(path=path, release=release(tmp_path, UBUNTU))
    assert texts(found) == ["dmsetup is missing (needed by the guest's fault-injecting devices): "
                            "apt-get install dmsetup",
                            "mkfs.xfs is missing (needed by xfs upper filesystems): apt-get install xfsprogs "
                            "(only the cases that need it fail)"]
    assert [p.blocking for p in found] == [True, False]


def test_another_distribution_gets_the_commands_and_no_apt(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "vng_command", lambda: "/x/vng")
    found = preflight.problems(path=fake_path(tmp_path, [c for c in ALL if c != "qemu-system-x86_64"]),
                               release=release(tmp_path, FEDORA))
    assert len(found) == 2
    assert found[0].text.startswith("qemu-system-x86_64 is missing") and "apt-get" not in found[0].text
    assert "Fedora Linux 41 is not Debian or Ubuntu" in found[1].text


def test_an_unreadable_kernel_image_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "vng_command", lambda: "/x/vng")
    image = tmp_path / "vmlinuz-6.8.0-31-generic"
    image.write_bytes(b"x")
    monkeypatch.setattr(os, "access", lambda p, mode: not (str(p) == str(image) and mode == os.R_OK))
    found = preflight.problems(image, path=fake_path(tmp_path, ALL), release=release(tmp_path, UBUNTU))
    assert len(found) == 1 and found[0].blocking
    assert f"{image} is not readable by this user" in found[0].text
    assert f"sudo chmod 0644 {image}" in found[0].text and "dpkg-statoverride" in found[0].text


def test_too_little_memory_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "vng_command", lambda: "/x/vng")
    monkeypatch.setattr(preflight, "mem_available_bytes", lambda: 1 << 30)
    found = preflight.problems(memory="2G", path=fake_path(tmp_path, ALL), release={"ID": "debian"})
    assert texts(found) == ["the VM asks for 2G of memory but only 1.0 GiB are available (use --vm-memory)"]


def test_check_raises_one_boot_error_with_everything_that_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "problems", lambda *a, **k: [
        preflight.Problem("a is missing"), preflight.Problem("x is missing", blocking=False),
        preflight.Problem("b is missing")])
    with pytest.raises(preflight.BootError, match="cannot run the VM yet: a is missing; b is missing$"):
        preflight.check()
    monkeypatch.setattr(preflight, "problems", lambda *a, **k: [preflight.Problem("x", blocking=False)])
    preflight.check()  # nothing that blocks a boot


def test_the_tool_exits_1_and_names_the_kernel_package(tmp_path, monkeypatch, capsys):
    from overlay_harness.host import kernel as kernel_mod
    empty = tmp_path / "boot"
    empty.mkdir()
    monkeypatch.setattr(kernel_mod, "BOOT_DIR", empty)
    monkeypatch.setattr(preflight, "os_release", lambda *a: {"ID": "ubuntu", "ID_LIKE": "debian"})
    monkeypatch.setattr(preflight, "problems", lambda *a, **k: [])
    assert tool.main([]) == 1
    err = capsys.readouterr().err
    assert "no kernel under" in err and "(apt-get install linux-image-generic)" in err


def test_setup_sh_installs_the_same_kernel_packages(tmp_path):
    """setup.sh (bash, before any Python is installed) and preflight name the same package."""
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "setup.sh").read_text()
    for os_release in (DEBIAN, UBUNTU):
        assert f"KERNEL_PACKAGE={preflight.kernel_package(release(tmp_path, os_release))} " in text
