"""The file, inode, xattr and super operations overlay implements, each through the call that
reaches it: fallocate, fadvise, copy_file_range, FICLONE, sendfile (splice), FIEMAP, the
inode flags ioctls, Linux AIO, mknod, statfs, a read-only remount and xattrs set through the
overlay. Each asserts what the call's own document promises, on the overlay file that
overlayfs.rst says is "presented either from the upper or lower filesystem as appropriate".

Sources: Documentation/filesystems/overlayfs.rst,
- "Non-directories": "When a file in the lower filesystem is accessed in a way the requires
  write-access, such as opening for write access, changing some metadata etc., the file is
  first copied from the lower filesystem to the upper filesystem (copy_up)"; "all
  modifications go to the upper, writable layer";
- "Nesting overlayfs mounts" (v6.7, commit dad02fad84cb "ovl: Support escaped overlay.*
  xattrs"): "a file with a "trusted.overlay.overlay.metacopy" xattr in the lower dir will be
  exposed as a regular file with a "trusted.overlay.metacopy" xattr in the overlayfs mount";
and the man pages: fallocate(2) ("the file size will be changed if offset+len is greater
than the file size"; FALLOC_FL_KEEP_SIZE: "the file size will not be changed"),
posix_fadvise(2) ("EINVAL An invalid value was specified for advice"), copy_file_range(2),
ioctl_ficlone(2) ("EOPNOTSUPP ... the filesystem does not support reflinking"), sendfile(2),
ioctl_iflags(2) (FS_APPEND_FL: "The file can be opened only with the O_APPEND flag. (This
restriction applies even to the superuser.)"), io_submit(2), mknod(2), statfs(2)
("OVERLAYFS_SUPER_MAGIC 0x794c7630"), mount(2) (MS_REMOUNT with MS_RDONLY) and open(2)
("EROFS ... write access was requested" on a read-only filesystem), setxattr(2) and
removexattr(2) ("ENODATA The named attribute does not exist").
"""

import errno
import os
import stat

import pytest

from overlay_harness import posix_acl, require_version

pytestmark = [pytest.mark.file_operations, pytest.mark.upper_fs("ext4", "xfs")]

LOWER = b"L" * 65536  # the `lower` fixture's f
NEW = b"N" * 4096
FS_IMMUTABLE_FL, FS_APPEND_FL, FS_NOATIME_FL = 0x10, 0x20, 0x80
POSIX_FADV_WILLNEED, POSIX_FADV_DONTNEED = 3, 4
OVERLAYFS_SUPER_MAGIC = 0x794C7630
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
MS_RDONLY = 0x1
CREATE = os.O_CREAT | os.O_WRONLY | os.O_EXCL


@pytest.fixture
def ovl(make_overlay):
    o = make_overlay()
    assert o.mount() == 0
    return o


def upper_file(guest, ovl, data):
    """`h`, made through the overlay (a pure-upper file) with `data`, flushed: its name."""
    fd = guest.must.open(ovl.path("h"), CREATE)
    guest.must.pwrite(fd, data, 0)
    guest.must.fsync(fd)
    guest.must.close(fd)
    return "h"


def test_fallocate_extends_a_lower_file_on_its_upper_copy(guest, ovl):
    """fallocate through the overlay copies the file up and changes its size there (unless
    FALLOC_FL_KEEP_SIZE); the lower file keeps its size."""
    fd = guest.must.open(ovl.path("f"), os.O_RDWR)
    assert guest.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20) == 0
    assert guest.fstat(fd)["st_size"] == len(LOWER)
    assert guest.fallocate(fd, 0, 0, 1 << 20) == 0
    assert guest.fstat(fd)["st_size"] == 1 << 20
    assert guest.stat(ovl.upper_path("f"))["st_size"] == 1 << 20
    assert guest.stat(ovl.lower_path("f"))["st_size"] == len(LOWER)
    assert guest.pread(fd, 16, 0) == LOWER[:16]


def test_fallocate_punch_hole_in_a_lower_file_reads_zeros(guest, ovl):
    """FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE through the overlay copies the file up and
    deallocates the range there: fallocate(2), "subsequent reads from this range will return
    zeros", and the size "does not change"; the lower file keeps its data."""
    fd = guest.must.open(ovl.path("f"), os.O_RDWR)
    assert guest.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096) == 0
    assert guest.fstat(fd)["st_size"] == len(LOWER)
    assert guest.pread(fd, 12288, 0) == LOWER[:4096] + bytes(4096) + LOWER[8192:12288]
    assert guest.must.read_file(ovl.lower_path("f")) == LOWER


@pytest.mark.parametrize("copied_up", [False, True], ids=["lower", "copied-up"])
def test_fadvise_is_passed_to_the_real_file(guest, ovl, copied_up):
    """posix_fadvise on an overlay fd (of a lower file, or of a copied-up one): valid advice
    is accepted, an invalid one is EINVAL."""
    data = LOWER
    if copied_up:
        guest.must.close(ovl.copy_up("f", NEW, flush="fsync"))
        data = NEW + LOWER[len(NEW):]
    fd = guest.must.open(ovl.path("f"), os.O_RDONLY)
    assert guest.fadvise(fd, 0, 0, POSIX_FADV_WILLNEED) == 0
    assert guest.fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0
    assert guest.fadvise(fd, 0, 0, 99) == errno.EINVAL
    assert guest.pread(fd, 16, 0) == data[:16]


def test_copy_file_range_copies_between_two_upper_files(guest, ovl):
    """copy_file_range between a copied-up file and a file made through the overlay (both
    on the upper) copies the bytes, at the offsets given."""
    src = ovl.copy_up("f", NEW, flush="fsync")
    dst = guest.must.open(ovl.path("g"), os.O_CREAT | os.O_WRONLY)
    assert guest.copy_file_range(src, dst, len(NEW), 0, 8192) == len(NEW)
    assert guest.copy_file_range(src, dst, 100, len(LOWER) - 100, 0) == 100
    assert guest.must.read_file(ovl.path("g")) == LOWER[-100:] + bytes(8192 - 100) + NEW
    assert guest.must.read_file(ovl.upper_path("g")) == LOWER[-100:] + bytes(8192 - 100) + NEW


@pytest.mark.upper_fs("xfs")
def test_ficlone_shares_data_between_two_upper_files(guest, ovl):
    """FICLONE between two overlay files on an upper that reflinks (xfs): the destination
    reads the source's data."""
    src = ovl.copy_up("f", NEW, flush="fsync")
    dst = guest.must.open(ovl.path("g"), os.O_CREAT | os.O_RDWR)
    assert guest.clone_file(src, dst) == 0
    assert guest.must.read_file(ovl.path("g")) == NEW + LOWER[len(NEW):]


@pytest.mark.upper_fs("ext4")
@pytest.mark.parametrize("source", ["copied-up", "upper"])
def test_ficlone_on_an_upper_without_reflink_is_eopnotsupp(guest, ovl, source):
    """FICLONE where the upper filesystem cannot reflink (ext4), from a copied-up file or
    from one made through the overlay: EOPNOTSUPP, nothing copied."""
    if source == "upper":
        src = guest.must.open(ovl.path(upper_file(guest, ovl, NEW)), os.O_RDWR)
    else:
        src = ovl.copy_up("f", NEW, flush="fsync")
    dst = guest.must.open(ovl.path("g"), os.O_CREAT | os.O_RDWR)
    assert guest.clone_file(src, dst) == errno.EOPNOTSUPP
    assert guest.fstat(dst)["st_size"] == 0


@pytest.mark.parametrize("source", ["lower", "upper"])
def test_sendfile_into_an_overlay_file(guest, ovl, source):
    """sendfile from a lower file, or from a file made through the overlay, into an overlay
    file (the kernel splices into it)."""
    name = upper_file(guest, ovl, LOWER) if source == "upper" else "f"
    src = guest.must.open(ovl.path(name), os.O_RDONLY)
    dst = guest.must.open(ovl.path("g"), CREATE)
    assert guest.sendfile(dst, src, 0, len(LOWER)) == len(LOWER)
    assert guest.must.read_file(ovl.path("g")) == LOWER


@pytest.mark.parametrize("how", ["write", "truncate"])
def test_fiemap_maps_the_upper_copy(guest, ovl, how):
    """FIEMAP on a copied-up file (copied up by a write, or by a truncate to 8 KiB) through
    the overlay gives the extents of the upper file that the overlay presents."""
    if how == "write":
        ovl.copy_up("f", NEW, flush="fsync")
    else:
        assert guest.truncate(ovl.path("f"), 8192) == 0
        guest.must.sync()
    extents = guest.must.fiemap(ovl.upper_path("f"))
    assert extents
    assert guest.fiemap(ovl.path("f")) == extents


def test_append_only_flag_set_through_the_overlay(guest, ovl):
    """FS_IOC_SETFLAGS through the overlay (what chattr +a does: read the flags, add one,
    set them) on a copied-up file: from then on it opens for writing only with O_APPEND,
    also after the overlay is mounted again."""
    guest.must.close(ovl.copy_up("f", NEW, flush="fsync"))
    fd = guest.must.open(ovl.path("f"), os.O_RDONLY)
    flags = guest.must.get_flags(fd)
    assert not flags & FS_APPEND_FL
    assert guest.set_flags(fd, flags | FS_APPEND_FL | FS_NOATIME_FL) == 0
    assert guest.must.get_flags(fd) & (FS_APPEND_FL | FS_NOATIME_FL) == FS_APPEND_FL | FS_NOATIME_FL
    assert guest.open(ovl.path("f"), os.O_WRONLY) == errno.EPERM
    fd = guest.must.open(ovl.path("f"), os.O_WRONLY | os.O_APPEND)
    assert guest.write(fd, NEW) == len(NEW)
    assert guest.must.read_file(ovl.lower_path("f")) == LOWER
    assert ovl.mount_again() == 0
    assert guest.open(ovl.path("f"), os.O_WRONLY) == errno.EPERM
    assert guest.must.read_file(ovl.path("f")) == NEW + LOWER[len(NEW):] + NEW


def test_inode_flags_of_a_lower_file_hold_through_the_overlay_and_its_copy_up(guest, ovl):
    """Inode flags set on the lower file before the mount: through the overlay an
    append-only lower file opens for writing only with O_APPEND; a noatime lower file
    shows the flag, and keeps it when a write copies it up (copy-up "creates the object
    with the same metadata")."""
    assert ovl.umount() == 0
    for rel, flag in (("a", FS_APPEND_FL), ("n", FS_NOATIME_FL)):
        guest.must.write_file(ovl.lower_path(rel), LOWER[:4096])
        fd = guest.must.open(ovl.lower_path(rel), os.O_RDONLY)
        guest.must.set_flags(fd, guest.must.get_flags(fd) | flag)
        guest.must.close(fd)
    guest.defer(_clear_flags, guest, ovl.lower_path("a"))  # so the scratch tmpfs can go
    assert ovl.mount() == 0
    assert guest.open(ovl.path("a"), os.O_WRONLY) == errno.EPERM
    fd = guest.must.open(ovl.path("n"), os.O_RDWR)
    assert guest.must.get_flags(fd) & FS_NOATIME_FL
    assert guest.pwrite(fd, NEW, 0) == len(NEW)
    assert guest.must.get_flags(fd) & FS_NOATIME_FL
    fd = guest.must.open(ovl.upper_path("n"), os.O_RDONLY)
    assert guest.must.get_flags(fd) & FS_NOATIME_FL


def _clear_flags(guest, path):
    fd = guest.must.open(path, os.O_RDONLY)
    guest.must.set_flags(fd, guest.must.get_flags(fd) & ~FS_APPEND_FL)
    guest.must.close(fd)


def test_immutable_flag_set_through_the_overlay(guest, ovl):
    """FS_IOC_SETFLAGS with FS_IMMUTABLE_FL through the overlay on a copied-up file
    (ioctl_iflags(2): "The file is immutable: no changes are permitted to the file contents
    or metadata"): FS_IOC_GETFLAGS shows it, opening for writing is EPERM, also after the
    overlay is mounted again; cleared, the file opens for writing again."""
    guest.must.close(ovl.copy_up("f", NEW, flush="fsync"))
    fd = guest.must.open(ovl.path("f"), os.O_RDONLY)
    flags = guest.must.get_flags(fd)
    assert guest.set_flags(fd, flags | FS_IMMUTABLE_FL) == 0
    assert guest.must.get_flags(fd) & FS_IMMUTABLE_FL
    assert guest.open(ovl.path("f"), os.O_WRONLY) == errno.EPERM
    assert ovl.mount_again() == 0
    fd = guest.must.open(ovl.path("f"), os.O_RDONLY)
    assert guest.must.get_flags(fd) & FS_IMMUTABLE_FL
    assert guest.open(ovl.path("f"), os.O_WRONLY) == errno.EPERM
    assert guest.set_flags(fd, flags & ~FS_IMMUTABLE_FL) == 0
    assert not guest.must.get_flags(fd) & FS_IMMUTABLE_FL
    assert isinstance(guest.open(ovl.path("f"), os.O_WRONLY), int)


def test_aio_reads_and_writes_through_the_overlay(guest, ovl):
    """Linux AIO (io_submit) on an overlay fd: a write copies up and lands, a read returns
    it; the data is the upper's after the overlay is mounted again."""
    fd = guest.must.open(ovl.path("f"), os.O_RDWR)
    assert guest.aio(fd, "pwrite", 4096, NEW) == len(NEW)
    assert guest.aio(fd, "pread", 0, 8192) == LOWER[:4096] + NEW
    assert guest.fsync(fd) == 0
    assert ovl.mount_again() == 0
    assert guest.must.read_file(ovl.path("f"))[:8192] == LOWER[:4096] + NEW


@pytest.mark.parametrize("source", ["copied-up", "upper"])
def test_direct_aio_completes_through_the_overlay(guest, ovl, source):
    """AIO with O_DIRECT (the request is queued to the upper's block device and completes
    later), on a copied-up file or on one made through the overlay: the write lands on the
    upper file, the read returns it."""
    if source == "upper":
        name = upper_file(guest, ovl, LOWER)
    else:
        name = "f"
        guest.must.close(ovl.copy_up("f", NEW, flush="fsync"))
    fd = guest.must.open(ovl.path(name), os.O_RDWR | os.O_DIRECT)
    assert guest.aio(fd, "pwrite", 8192, NEW) == len(NEW)
    assert guest.aio(fd, "pread", 8192, 4096) == NEW
    assert guest.must.read_file(ovl.upper_path(name))[4096:12288] == LOWER[4096:8192] + NEW


def test_aio_write_lost_on_a_failing_upper_is_reported_by_fsync(guest, upper, ovl):
    """An AIO write whose writeback fails on the upper: fsync on the overlay fd reports EIO
    (the error the upper recorded), then 0."""
    fd = ovl.copy_up("f", LOWER, flush="sync")
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        assert guest.aio(fd, "pwrite", 0, NEW) == len(NEW)
    assert guest.fsync(fd) == errno.EIO
    assert guest.fsync(fd) == 0


@pytest.mark.upper_fs("ext4")
def test_copy_file_range_lost_on_a_failing_upper_is_reported_by_fsync(guest, upper, ovl):
    """copy_file_range into an overlay file whose writeback then fails: fsync reports EIO.
    (ext4 only: xfs copies within one filesystem by sharing blocks, so nothing is written
    back to fail.)"""
    dst = ovl.copy_up("f", NEW * 16, flush="sync")
    src = guest.must.open(ovl.path("g"), os.O_CREAT | os.O_RDWR)
    guest.must.pwrite(src, LOWER, 0)
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        assert guest.copy_file_range(src, dst, len(LOWER), 0, 0) == len(LOWER)
    assert guest.fsync(dst) == errno.EIO


@pytest.mark.parametrize("kind", ["fifo", "chr", "blk"])
def test_mknod_makes_fifos_and_devices_on_the_upper(guest, ovl, kind):
    """mknod through the overlay: a FIFO, a character device (1:3) or a block device (7:0),
    made on the upper with the type and device number given (mknod(2)); a second mknod of
    the name is EEXIST."""
    fmt, dev = {"fifo": (stat.S_IFIFO, 0), "chr": (stat.S_IFCHR, os.makedev(1, 3)),
                "blk": (stat.S_IFBLK, os.makedev(7, 0))}[kind]
    assert guest.mknod(ovl.path("n"), fmt | 0o600, dev) == 0
    st = guest.must.lstat(ovl.path("n"))
    assert stat.S_IFMT(st["st_mode"]) == fmt
    if dev:
        assert st["st_rdev"] == dev
    assert stat.S_IFMT(guest.must.lstat(ovl.upper_path("n"))["st_mode"]) == fmt
    assert guest.mknod(ovl.path("n"), fmt | 0o600, dev) == errno.EEXIST


@pytest.mark.parametrize("rel", ["", "f"], ids=["root", "file"])
def test_statfs_reports_overlayfs(guest, ovl, rel):
    """statfs on the overlay (its root, or a lower file in it) names overlayfs
    (OVERLAYFS_SUPER_MAGIC)."""
    assert guest.must.statfs(ovl.path(rel) if rel else ovl.path())["f_type"] == OVERLAYFS_SUPER_MAGIC


@pytest.mark.parametrize("what", ["new-file", "lower-file"])
def test_remount_read_only_refuses_writes_until_remounted_rw(guest, ovl, what):
    """mount(MS_REMOUNT | MS_RDONLY): opening for write (creating a file, or opening a
    lower file read-write) is EROFS; remounted read-write, the same open works."""
    path, flags = (ovl.path("g"), CREATE) if what == "new-file" else (ovl.path("f"), os.O_RDWR)
    assert ovl.remount(MS_RDONLY) == 0
    assert guest.open(path, flags) == errno.EROFS
    assert ovl.remount(0) == 0
    assert isinstance(guest.open(path, flags), int)


def target(guest, ovl, where):
    """The file a case works on: the lower file `f`, or `h`, made through the overlay."""
    return "f" if where == "lower" else upper_file(guest, ovl, NEW)


@pytest.mark.parametrize("where", ["lower", "upper"])
def test_user_xattr_set_through_the_overlay_copies_up(guest, ovl, where):
    """setxattr through the overlay (on a lower file, or on one made through the overlay)
    sets it on the upper file, copying a lower one up; removexattr removes it (then
    ENODATA); the lower file never gets it."""
    name = target(guest, ovl, where)
    assert guest.setxattr(ovl.path(name), "user.k", b"v") == 0
    assert guest.getxattr(ovl.path(name), "user.k") == b"v"
    assert guest.getxattr(ovl.upper_path(name), "user.k") == b"v"
    assert "user.k" in guest.must.listxattr(ovl.path(name))
    if where == "lower":
        assert "user.k" not in guest.must.listxattr(ovl.lower_path(name))
    assert guest.removexattr(ovl.path(name), "user.k") == 0
    assert guest.getxattr(ovl.path(name), "user.k") == errno.ENODATA


# user::rw- user:1000:r-- group::r-- mask::r-- other::---
FILE_ACL = posix_acl((0x01, 6, 0xFFFFFFFF), (0x02, 4, 1000), (0x04, 4, 0xFFFFFFFF),
                     (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF))


@pytest.mark.parametrize("where", ["lower", "upper"])
def test_acl_set_through_the_overlay_copies_up(guest, ovl, where):
    """A POSIX ACL set through the overlay (system.posix_acl_access; on a lower file, which
    it copies up, or on one made through the overlay) is set on the upper file: it reads
    back the same, and the mode's group bits are the ACL's mask (acl(5): with a mask entry,
    the group class permissions are the mask's)."""
    name = target(guest, ovl, where)
    assert guest.setxattr(ovl.path(name), "system.posix_acl_access", FILE_ACL) == 0
    assert guest.getxattr(ovl.path(name), "system.posix_acl_access") == FILE_ACL
    assert guest.getxattr(ovl.upper_path(name), "system.posix_acl_access") == FILE_ACL
    assert stat.S_IMODE(guest.must.stat(ovl.path(name))["st_mode"]) == 0o640


@pytest.mark.parametrize("value", [b"Y", b"N"], ids=["Y", "N"])
def test_obsolete_check_copy_up_parameter_does_nothing(guest, ovl, value):
    """The overlay module's check_copy_up parameter is "Obsolete; does nothing" (its
    MODULE_PARM_DESC): it reads N, and setting it (to Y or N) changes nothing (it still
    reads N)."""
    param = "/sys/module/overlay/parameters/check_copy_up"
    assert guest.read_file(param) == b"N\n"
    assert guest.write_file(param, value) == 1
    assert guest.read_file(param) == b"N\n"


def test_escaped_overlay_xattr_in_a_lower_is_shown_unescaped(guest, ovl):
    """A lower file's "trusted.overlay.overlay.NAME" xattr shows as "trusted.overlay.NAME"
    through the overlay (nesting overlays, v6.7)."""
    require_version(guest, (6, 7), "escaped overlay.* xattrs")
    assert ovl.umount() == 0
    guest.must.setxattr(ovl.lower_path("f"), "trusted.overlay.overlay.note", b"nested")
    assert ovl.mount() == 0
    assert guest.getxattr(ovl.path("f"), "trusted.overlay.note") == b"nested"
    assert "trusted.overlay.note" in guest.must.listxattr(ovl.path("f"))
