"""NFS export: file handles of overlay objects (name_to_handle_at, open_by_handle_at) with
`nfs_export=on`.

Sources: Documentation/filesystems/overlayfs.rst, "NFS export": "When the underlying
filesystems supports NFS export and the "nfs_export" feature is enabled, an overlay
filesystem may be exported to NFS. With the "nfs_export" feature, on copy_up of any lower
object, an index entry is created under the index directory"; the encoding rules ("1. For a
non-upper object, encode a lower file handle from lower inode 2. For an indexed object,
encode a lower file handle from copy_up origin 3. For a pure-upper object ... encode an
upper file handle from upper inode"); decoding ("4. If a whiteout is found in index, return
ESTALE. This represents an overlay object that was deleted after its file handle was
encoded. ... 6. For a directory, use the connected underlying decoded dentry, path type and
index, to lookup a connected overlay dentry"); "Note: the mount options
index=off,nfs_export=on are conflicting for a read-write mount". open_by_handle_at(2): it
"opens the file referred to by handle"; "ESTALE The specified handle is not valid for
opening a file. This error will occur if, for example, the file has been deleted."

The lower layer is an ext4 of its own (LowerFs): it exports file handles and has a UUID.
Before a handle is opened, the overlay's fds are closed and the dentry caches dropped, so
the handle is decoded from the layers (the index, the lower and upper file handles), not
found in a cache.
"""

import errno
import os

import pytest

from overlay_harness import LowerFs

pytestmark = [pytest.mark.file_handles, pytest.mark.upper_fs("ext4", "xfs")]

DATA = b"lower data\n" * 100
NEW = b"upper data\n"


@pytest.fixture
def ovl(guest, upper, make_overlay):
    lower = LowerFs(guest, {"d/f": DATA, "d/g": DATA, "top": DATA})
    o = make_overlay(lowers=[lower.path()], index="on", nfs_export="on")
    assert o.mount() == 0
    assert "nfs_export=on" in guest.mount_options(o.path())
    return o


def open_handle(guest, ovl, handle, flags=os.O_RDONLY):
    """Close the overlay's fds, drop the dentry and inode caches, open `handle`."""
    guest.must.close_all()
    guest.must.sync()
    guest.must.write_file("/proc/sys/vm/drop_caches", b"2")
    root = guest.must.open(ovl.path(), os.O_RDONLY | os.O_DIRECTORY)
    return guest.open_by_handle(root, handle["handle_type"], handle["handle"], flags)


def same_file(guest, fd, path):
    """fd and path name one inode (st_dev and st_ino of one fstat and one stat)."""
    a, b = guest.must.fstat(fd), guest.must.stat(path)
    return (a["st_dev"], a["st_ino"]) == (b["st_dev"], b["st_ino"])


def test_handle_of_a_lower_file_opens_it(guest, ovl):
    """A lower (not copied-up) file's handle opens the same file: its data, its inode."""
    handle = guest.must.name_to_handle(ovl.path("d/f"))
    fd = open_handle(guest, ovl, handle)
    assert same_file(guest, fd, ovl.path("d/f"))
    assert guest.pread(fd, len(DATA), 0) == DATA


def test_handle_still_opens_the_file_after_copy_up(guest, ovl):
    """A handle taken before copy-up is the copied-up file's handle too, and opens the
    copied-up file (indexed by its origin): the new data, the copied-up inode."""
    handle = guest.must.name_to_handle(ovl.path("d/f"))
    fd = guest.must.open(ovl.path("d/f"), os.O_WRONLY | os.O_TRUNC)
    guest.must.write(fd, NEW)
    # "2. For an indexed object, encode a lower file handle from copy_up origin": the handle
    # of the copied-up file is the one of the lower file it was copied from
    assert guest.must.name_to_handle(ovl.path("d/f")) == handle
    fd = open_handle(guest, ovl, handle)
    assert same_file(guest, fd, ovl.path("d/f"))
    assert guest.pread(fd, 100, 0) == NEW
    assert guest.must.listdir(f"{ovl.work}/index")  # the copy-up made an index entry


@pytest.mark.parametrize("parent", ["d", "new-dir"])
def test_handle_of_a_pure_upper_file_opens_it(guest, ovl, parent):
    """A file made through the overlay (pure upper; in a lower directory, or in one made
    through the overlay too) is encoded from the upper inode."""
    if parent == "new-dir":
        guest.must.mkdir(ovl.path(parent))
    fd = guest.must.open(ovl.path(f"{parent}/new"), os.O_CREAT | os.O_WRONLY)
    guest.must.write(fd, NEW)
    handle = guest.must.name_to_handle(ovl.path(f"{parent}/new"))
    fd = open_handle(guest, ovl, handle)
    assert same_file(guest, fd, ovl.path(f"{parent}/new"))
    assert guest.pread(fd, 100, 0) == NEW


@pytest.mark.parametrize("copied_up", [False, True], ids=["lower", "copied-up"])
def test_handle_of_a_deleted_file_is_stale(guest, ovl, copied_up):
    """The handle of a file deleted through the overlay (lower, or copied up first): ESTALE."""
    handle = guest.must.name_to_handle(ovl.path("d/g"))
    if copied_up:
        guest.must.chmod(ovl.path("d/g"), 0o600)
    assert guest.unlink(ovl.path("d/g")) == 0
    assert open_handle(guest, ovl, handle) == errno.ESTALE


@pytest.mark.parametrize("copied_up", [False, True], ids=["lower", "copied-up"])
def test_handle_of_a_directory_opens_the_merged_directory(guest, ovl, copied_up):
    """A directory's handle opens the connected merged directory: its path in the overlay,
    its inode, its entries (also one made through the overlay after the handle was taken).
    (Its st_ino is not compared across the dropped caches: with layers on two filesystems
    a directory's st_ino need not be persistent, overlayfs.rst's table of inode properties.)"""
    handle = guest.must.name_to_handle(ovl.path("d"))
    if copied_up:
        guest.must.chmod(ovl.path("d"), 0o750)
        # copied up, the directory is indexed: its handle is still its origin's (encoding
        # rule 2)
        assert guest.must.name_to_handle(ovl.path("d")) == handle
    guest.must.close(guest.must.open(ovl.path("d/h"), os.O_CREAT | os.O_WRONLY))
    fd = open_handle(guest, ovl, handle, os.O_RDONLY | os.O_DIRECTORY)
    assert guest.readlink(f"/proc/self/fd/{fd}") == ovl.path("d")  # connected: the agent's own fd
    assert same_file(guest, fd, ovl.path("d"))
    assert sorted(guest.must.listdir(fd)) == ["f", "g", "h"]
