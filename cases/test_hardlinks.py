"""Hard links with and without the inodes index.

Sources: Documentation/filesystems/overlayfs.rst,
- "Non-standard behavior", 2) "inode index": "If this feature is disabled and a file with
  multiple hard links is copied up, then this will "break" the link.  Changes will not be
  propagated to other names referring to the same inode."  So with index=on they are: the
  names stay one inode (one st_ino, one content, st_nlink counting the names).
- "NFS export": "on copy_up of any lower object, an index entry is created under the index
  directory.  The index entry name is the hexadecimal representation of the copy up origin
  file handle.  For a non-directory object, the index entry is a hard link to the upper
  inode."
- "Sharing and copying layers": index=on "will fail with EOPNOTSUPP if the lower filesystem
  does not support NFS export": the lower layer here is an ext4 of its own.

Lower: f and g, two names of one inode (st_nlink 2). Checked through the calls' dentries
and after mounting again; under faults, a failed copy-up leaves both names the lower's.
"""

import errno
import os

import pytest

from overlay_harness import WHOLE_DEVICE_FAULTS, LowerFs

pytestmark = [pytest.mark.hardlinks_index, pytest.mark.upper_fs("ext4", "xfs")]

DATA = b"lower data\n" * 400
NEW = b"written through f"


@pytest.fixture
def lower_fs(guest, upper):
    fs = LowerFs(guest, {"f": DATA}, sync=False)
    guest.must.link(fs.path("f"), fs.path("g"))
    guest.must.sync()
    return fs


def write_through(guest, path, data):
    fd = guest.must.open(path, os.O_WRONLY)
    guest.must.pwrite(fd, data, 0)
    guest.must.close(fd)


def view(guest, ovl):
    """(content, st_ino, st_nlink) of f and of g through the overlay."""
    out = []
    for name in ("f", "g"):
        st = guest.must.stat(ovl.path(name))
        out.append((guest.must.read_file(ovl.path(name)), st["st_ino"], st["st_nlink"]))
    return out


def test_copy_up_without_index_breaks_the_link(guest, make_overlay, lower_fs):
    """index=off: a write through f copies f up alone; g keeps the lower's content, also
    after mounting again."""
    ovl = make_overlay(lowers=[lower_fs.path()], index="off")
    assert ovl.mount() == 0
    write_through(guest, ovl.path("f"), NEW)
    for when in ("after the write", "after mounting again"):
        assert guest.must.read_file(ovl.path("f")) == NEW + DATA[len(NEW):], when
        assert guest.must.read_file(ovl.path("g")) == DATA, when
        if when == "after the write":
            assert ovl.mount_again() == 0


def test_index_keeps_hard_links_one_inode(guest, make_overlay, lower_fs):
    """index=on: before and after a write through f copies it up, and after g is opened
    for write too, f and g are one inode: same content, same st_ino, st_nlink 2 (the
    names, not the index entry); the index holds one entry, named by the origin file
    handle and hard-linked to the upper inode. All of it again after mounting again."""
    ovl = make_overlay(lowers=[lower_fs.path()], index="on")
    assert ovl.mount() == 0
    (_, ino_f, nlink_f), (_, ino_g, nlink_g) = view(guest, ovl)
    assert ino_f == ino_g
    assert nlink_f == nlink_g == 2
    write_through(guest, ovl.path("f"), NEW)
    guest.must.close(guest.must.open(ovl.path("g"), os.O_WRONLY))
    want = NEW + DATA[len(NEW):]
    origin = guest.must.getxattr(ovl.upper_path("f"), "trusted.overlay.origin", False)
    for when in ("after the copy-ups", "after mounting again"):
        (data_f, ino_f, nlink_f), (data_g, ino_g, nlink_g) = view(guest, ovl)
        assert data_f == data_g == want, when
        assert ino_f == ino_g, when
        assert nlink_f == nlink_g == 2, when
        assert guest.must.listdir(f"{ovl.work}/index") == [origin.hex()], when
        index_ino = guest.must.stat(f"{ovl.work}/index/{origin.hex()}")["st_ino"]
        assert index_ino == guest.must.stat(ovl.upper_path("f"))["st_ino"], when
        if when == "after the copy-ups":
            assert ovl.mount_again() == 0


@pytest.mark.parametrize("fault", WHOLE_DEVICE_FAULTS)
def test_indexed_copy_up_on_a_failing_upper_keeps_the_links(guest, upper, make_overlay,
                                                            lower_fs, fault):
    """index=on, open(O_WRONLY) of f while every write to the upper fails: EIO. After the
    device is healed and the upper filesystem and the overlay are mounted again, f and g
    are still one inode with the lower's content and st_nlink 2; then a write through f
    shows through g."""
    ovl = make_overlay(lowers=[lower_fs.path()], index="on")
    assert ovl.mount() == 0
    guest.must.sync()
    with upper.dev.failing(fault):
        assert guest.open(ovl.path("f"), os.O_WRONLY) == errno.EIO
    assert ovl.mount_again(upper_fs_too=True) == 0
    (data_f, ino_f, nlink_f), (data_g, ino_g, nlink_g) = view(guest, ovl)
    assert data_f == data_g == DATA
    assert ino_f == ino_g
    assert nlink_f == nlink_g == 2
    write_through(guest, ovl.path("f"), NEW)
    assert guest.must.read_file(ovl.path("g")) == NEW + DATA[len(NEW):]
