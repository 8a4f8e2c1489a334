"""What a copy-up preserves: owner, group, mode, times, xattrs, ACLs, symlink targets.

Sources: Documentation/filesystems/overlayfs.rst,
- "Non-directories": "When a file in the lower filesystem is accessed in a way the requires
  write-access, such as opening for write access, changing some metadata etc., the file is
  first copied from the lower filesystem to the upper filesystem (copy_up).  Note that
  creating a hard-link also requires copy_up".  "The copy_up process first makes sure that
  the containing directory exists in the upper filesystem - creating it and any parents as
  necessary.  It then creates the object with the same metadata (owner, mode, mtime,
  symlink-target etc.) and then if the object is a file, the data is copied from the lower
  to the upper filesystem.  Finally any extended attributes are copied up."
- "Permission model": "owner, group, mode and posix acls are copied up"; "permission check
  SHOULD return the same result before and after copy up".
- "Directories": "Other content such as metadata and extended attributes are reported for
  the upper directory only", so what the parent directories get at copy-up is what shows.
- commit 641089c1549d ("ovl: fsync after copy-up"): the copied file is fsynced before it
  takes the lower's place, so a copy-up onto a failing upper is an error to the caller and
  leaves the lower file in view.

The lower layer is an ext4 of its own (user.* xattrs and ACLs; tmpfs has user.* xattrs
only since 6.6). Its objects belong to 1234:5678, not root, and have old fixed times, so a
copy-up that took the mounter's ids or the current time shows.
"""

import errno
import os
import stat

import pytest

from overlay_harness import WHOLE_DEVICE_FAULTS, LowerFs, posix_acl

pytestmark = [pytest.mark.copyup_metadata, pytest.mark.upper_fs("ext4", "xfs")]

UID, GID = 1234, 5678
DIR_MTIME = 1_000_000_000 * 10**9 + 123
FILE_MTIME = 1_100_000_000 * 10**9 + 456
DATA = b"lower data\n" * 1000
ACL = "system.posix_acl_access"


# user::rw- user:1000:r-- group::r-- mask::r-- other::---  (mode 0640)
FILE_ACL = posix_acl((0x01, 6, 0xFFFFFFFF), (0x02, 4, 1000), (0x04, 4, 0xFFFFFFFF),
                     (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF))


@pytest.fixture
def lower_fs(guest, upper):
    """d/ (0750, user.dir) with d/f (0640, user.test, an ACL), and s -> d/f; all
    1234:5678 with fixed times, on an ext4 of their own."""
    fs = LowerFs(guest, {"d/f": DATA}, sync=False)
    g = guest.must
    g.symlink("d/f", fs.path("s"))
    g.chown(fs.path("s"), UID, GID, False)
    g.setxattr(fs.path("d/f"), "user.test", b"file value")
    g.setxattr(fs.path("d/f"), ACL, FILE_ACL)
    g.setxattr(fs.path("d"), "user.dir", b"dir value")
    for rel, mode in (("d/f", 0o640), ("d", 0o750)):
        g.chown(fs.path(rel), UID, GID)
        g.chmod(fs.path(rel), mode)
    g.utime(fs.path("d/f"), [FILE_MTIME, FILE_MTIME])
    g.utime(fs.path("d"), [DIR_MTIME, DIR_MTIME])
    g.sync()
    return fs


@pytest.fixture
def ovl(make_overlay, lower_fs):
    ovl = make_overlay(lowers=[lower_fs.path()])
    assert ovl.mount() == 0
    return ovl


def metadata(guest, path):
    """What copy-up must keep: owner, group, mode, mtime, user.* xattrs, the ACL."""
    st = guest.must.lstat(path)
    names = [n for n in guest.must.listxattr(path, False) if not n.startswith("trusted.")]
    return {"uid": st["st_uid"], "gid": st["st_gid"], "mode": stat.S_IMODE(st["st_mode"]),
            "mtime_ns": st["st_mtime_ns"],
            "xattrs": {n: guest.must.getxattr(path, n, False) for n in sorted(names)}}


def test_copy_up_keeps_owner_mode_times_xattrs_and_acl(guest, ovl, lower_fs):
    """open(O_WRONLY) of d/f (no write) copies it up, and its parent d on the way: both
    upper copies, and the overlay's view of both, have the lower's owner, group, mode,
    mtime, user.* xattrs and ACL; the file its data."""
    want = {rel: metadata(guest, lower_fs.path(rel)) for rel in ("d", "d/f")}
    assert want["d/f"]["xattrs"][ACL] == FILE_ACL   # set up as meant
    fd = guest.must.open(ovl.path("d/f"), os.O_WRONLY)
    guest.must.close(fd)
    for rel in ("d", "d/f"):
        assert metadata(guest, ovl.upper_path(rel)) == want[rel], f"upper copy of {rel}"
        assert metadata(guest, ovl.path(rel)) == want[rel], f"overlay view of {rel}"
    assert guest.must.read_file(ovl.upper_path("d/f")) == DATA


def test_copy_up_of_a_symlink_keeps_its_target_and_owner(guest, ovl, lower_fs):
    """link(2) of a lower symlink (not following it) copies the symlink up: the upper copy
    is a symlink to the same target with the lower's owner and group, the new name is a
    second link to it, and the target file is not copied up."""
    assert guest.link(ovl.path("s"), ovl.path("s2"), False) == 0
    up = guest.must.lstat(ovl.upper_path("s"))
    assert stat.S_ISLNK(up["st_mode"])
    assert guest.must.readlink(ovl.upper_path("s")) == "d/f"
    assert (up["st_uid"], up["st_gid"]) == (UID, GID)
    st = guest.must.lstat(ovl.path("s2"))
    assert (st["st_uid"], st["st_gid"], st["st_nlink"]) == (UID, GID, 2)
    assert guest.must.readlink(ovl.path("s2")) == "d/f"
    assert guest.lstat(ovl.upper_path("d/f")) == errno.ENOENT


@pytest.mark.parametrize("fault", WHOLE_DEVICE_FAULTS)
def test_copy_up_onto_a_failing_upper_is_an_error_and_leaves_the_lower_file(guest, upper, ovl,
                                                                           lower_fs, fault):
    """open(O_WRONLY) of d/f while every write to the upper fails: EIO (the copy is fsynced
    before it replaces the lower file). The overlay still shows the lower file, metadata
    and data, during the fault and after the device is healed and the upper filesystem and
    the overlay are mounted again; then a copy-up succeeds and keeps all of it."""
    want = {rel: metadata(guest, lower_fs.path(rel)) for rel in ("d", "d/f")}
    guest.must.sync()
    with upper.dev.failing(fault):
        assert guest.open(ovl.path("d/f"), os.O_WRONLY) == errno.EIO
        assert metadata(guest, ovl.path("d/f")) == want["d/f"]
        assert guest.must.read_file(ovl.path("d/f")) == DATA
    assert ovl.mount_again(upper_fs_too=True) == 0
    for rel in ("d", "d/f"):
        assert metadata(guest, ovl.path(rel)) == want[rel], rel
    assert guest.must.read_file(ovl.path("d/f")) == DATA
    fd = guest.must.open(ovl.path("d/f"), os.O_WRONLY)
    guest.must.close(fd)
    assert metadata(guest, ovl.upper_path("d/f")) == want["d/f"]
    assert guest.must.read_file(ovl.upper_path("d/f")) == DATA
