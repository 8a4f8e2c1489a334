"""host/modbuild.py without a VM: which sources and kernels it accepts, the vermagic check,
the compiler's errors in one message, and the shadow module tree a substituted kernel
boots from."""

import shutil
import subprocess

import pytest

from overlay_harness.host import kernel as kmod
from overlay_harness.host import modbuild

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("objcopy")
                                     and shutil.which("modinfo")), reason="needs gcc, binutils, kmod")

VERMAGIC = "6.1.0-56-amd64 SMP preempt mod_unload modversions "


def fake_module(path, vermagic=VERMAGIC, name="overlay", intree=False):
    """An ELF object with just a .modinfo section: what modinfo reads."""
    scratch = path.parent.parent / f".build-{path.name}"
    scratch.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    (scratch / "m.c").write_text("int x;\n")
    subprocess.run(["gcc", "-c", str(scratch / "m.c"), "-o", str(scratch / "m.o")], check=True)
    info = scratch / "modinfo"
    info.write_bytes(f"vermagic={vermagic}\0name={name}\0".encode() + (b"intree=Y\0" if intree else b""))
    subprocess.run(["objcopy", "--add-section", f".modinfo={info}", str(scratch / "m.o"), str(path)],
                   check=True)
    return path


def fake_kernel(tmp_path, config="m", compressed=False):
    """A fetched-kernel layout: boot/vmlinuz-R, lib/modules/R with a stock overlay module."""
    release = "6.1.0-56-amd64"
    root = tmp_path / "kernel"
    moddir = root / "lib/modules" / release
    stock = moddir / "kernel/fs/overlayfs" / ("overlay.ko.xz" if compressed else "overlay.ko")
    fake_module(stock)
    fake_module(moddir / "kernel/fs/ext4/ext4.ko", name="ext4")
    (moddir / "modules.order").write_text("kernel/fs/overlayfs/overlay.ko\nkernel/fs/ext4/ext4.ko\n")
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{release}").write_bytes(b"image")
    return kmod.Kernel(image=root / "boot" / f"vmlinuz-{release}", release=release,
                       run_arg=str(root / "boot" / f"vmlinuz-{release}"),
                       config={"CONFIG_OVERLAY_FS": config}, modules_dir=moddir), stock


def test_a_kernel_with_overlay_built_in_is_refused(tmp_path):
    kernel, _ = fake_kernel(tmp_path, config="y")
    with pytest.raises(modbuild.ModuleError, match="built in .CONFIG_OVERLAY_FS=y."):
        modbuild.stock_module(kernel)


def test_a_kernel_build_tree_rebuilds_its_own_module(tmp_path):
    kernel, _ = fake_kernel(tmp_path)
    kernel.tree = tmp_path / "linux"
    with pytest.raises(modbuild.ModuleError, match="is a build tree: rebuild its own overlay module"):
        modbuild.stock_module(kernel)


def test_source_is_a_fs_overlayfs_directory_or_a_tree_holding_one(tmp_path):
    ovl = tmp_path / "linux" / "fs" / "overlayfs"
    ovl.mkdir(parents=True)
    for name in modbuild.OVERLAY_SOURCES:
        (ovl / name).write_text("")
    assert modbuild._source_dir(tmp_path / "linux") == ovl
    assert modbuild._source_dir(ovl) == ovl
    with pytest.raises(modbuild.ModuleError, match="neither a fs/overlayfs directory nor a kernel tree"):
        modbuild._source_dir(tmp_path)


def test_a_module_for_another_kernel_is_refused_before_any_boot(tmp_path):
    kernel, _ = fake_kernel(tmp_path)
    other = fake_module(tmp_path / "other/overlay.ko",
                        vermagic="6.12.117+deb12-amd64 SMP preempt mod_unload ")
    with pytest.raises(modbuild.ModuleError, match="vermagic .* does not match kernel 6.1.0-56-amd64"):
        modbuild.use(other, kernel, tmp_path / "out")
    with pytest.raises(modbuild.ModuleError, match="module ext4, not overlay"):
        modbuild.use(fake_module(tmp_path / "x/ext4.ko", name="ext4"), kernel, tmp_path / "out")


@pytest.mark.parametrize("intree, taint", [(False, "EO"), (True, "E")])
def test_a_matching_module_is_kept_with_the_taint_it_will_cause(tmp_path, intree, taint):
    kernel, _ = fake_kernel(tmp_path)
    built = fake_module(tmp_path / "build/overlay.ko", intree=intree)
    m = modbuild.use(built, kernel, tmp_path / "out")
    assert m.path == tmp_path / "out" / "overlay.ko" and m.path.is_file()
    assert m.expected_taint == taint and m.vermagic == VERMAGIC.strip()
    assert m.ident.startswith("sha256 ") and "expected taint" in m.describe()


@pytest.mark.skipif(not shutil.which("depmod"), reason="needs depmod")
@pytest.mark.parametrize("compressed", [False, True])
def test_the_substituted_kernel_boots_from_a_shadow_root_with_the_new_module(tmp_path, compressed):
    kernel, stock = fake_kernel(tmp_path, compressed=compressed)
    m = modbuild.use(fake_module(tmp_path / "build/overlay.ko"), kernel, tmp_path / "out")
    sub = modbuild.substitute(kernel, m, tmp_path / "out")
    assert sub.release == kernel.release and sub.overlay_module is m
    assert sub.image.is_symlink() and sub.image.resolve() == kernel.image.resolve()
    assert sub.run_arg == str(sub.image)   # vng finds the shadow lib/modules next to it
    shadow = sub.modules_dir
    assert shadow == tmp_path / "out/root/lib/modules" / kernel.release
    new = shadow / "kernel/fs/overlayfs/overlay.ko"
    assert new.is_file() and not new.is_symlink() and new.read_bytes() == m.path.read_bytes()
    assert not (shadow / "kernel/fs/overlayfs/overlay.ko.xz").exists()
    assert (shadow / "kernel/fs/ext4/ext4.ko").resolve() == (stock.parent.parent / "ext4/ext4.ko").resolve()
    dep = (shadow / "modules.dep").read_text()
    assert "kernel/fs/overlayfs/overlay.ko:" in dep and ".xz" not in dep
    assert stock.is_file() and not (kernel.modules_dir / "modules.dep").exists()   # stock untouched


def test_a_failed_build_shows_the_compilers_first_error():
    output = ("make: Entering directory\n  CC [M]  super.o\n"
              "super.c:12:5: error: expected ';' before 'return'\n   12 |     return 0\n"
              "make[1]: *** [scripts/Makefile.build:250: super.o] Error 1\n")
    text = modbuild._compiler_errors(output)
    assert text.splitlines()[0] == "  CC [M]  super.o"
    assert "super.c:12:5: error: expected ';'" in text


def test_headers_that_need_a_compiler_the_host_lacks_are_refused_first(tmp_path):
    kernel, _ = fake_kernel(tmp_path)
    headers = tmp_path / "headers"
    headers.mkdir()
    (headers / ".kernelvariables").write_text("CC = $(if $(X),$(CCACHE)) $(CROSS_COMPILE)gcc-99\n")
    with pytest.raises(modbuild.ModuleError, match="built with gcc-99, which this host lacks"):
        modbuild._check_compiler(headers, kernel)
    (headers / ".kernelvariables").write_text("CC = $(CROSS_COMPILE)gcc\n")
    modbuild._check_compiler(headers, kernel)   # a plain gcc: nothing to say


def test_a_patched_copy_leaves_the_pristine_source_alone(tmp_path):
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    (pristine / "super.c").write_text("int a;\nint b;\n")
    patch = tmp_path / "m.patch"
    patch.write_text("Mutant: x\n\n--- a/fs/overlayfs/super.c\n+++ b/fs/overlayfs/super.c\n"
                     "@@ -1,2 +1,2 @@\n int a;\n-int b;\n+int c;\n")
    src = modbuild.patched_copy(pristine, tmp_path / "tree", patch)
    assert src == tmp_path / "tree/fs/overlayfs" and (src / "super.c").read_text() == "int a;\nint c;\n"
    assert (pristine / "super.c").read_text() == "int a;\nint b;\n"
    with pytest.raises(modbuild.ModuleError, match="does not apply"):
        modbuild.patched_copy(src, tmp_path / "again", patch)   # already applied: int b is gone
