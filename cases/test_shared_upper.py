"""Several overlays on one upper filesystem.

Seed 001 (Jeff Layton, Dec 2020, on "[PATCH 3/3] overlayfs: Report writeback
errors on upper") gives the sequence these cases follow:

    ovlfs1                  ovlfs2
    mount
    open fd1
    write to fd1
    <writeback fails>
                            mount (upper errseq_t SEEN flag marked)
                            open fd2
                            syncfs(fd2)
    syncfs(fd1)

  "On a 'normal' (non-overlay) fs, you'd get an error back on both syncfs calls."

Seed 002 settled the volatile side: a volatile mount over an upper with an
unseen error is refused, so the "SEEN flag marked" step is the user's syncfs on
the upper. overlayfs.rst ("Sharing and copying layers"): "Using an upper layer
path and/or a workdir path that are already used by another overlay mount is
not allowed and may fail with EBUSY"; commit 0be0bfd2de9d: "index=off only
relaxes exclusive upper/work dir checks with another overlayfs mount".
"""

import errno
import os

import pytest

from overlay_harness import expect_kmsg, make_tree

pytestmark = [pytest.mark.shared_upper, pytest.mark.upper_fs("ext4", "xfs")]

OLD = b"o" * 65536
NEW = b"n" * 65536


def two_overlays(make_overlay, **options):
    return make_overlay("o1", **options), make_overlay("o2", **options)


@pytest.mark.volatile
@pytest.mark.errseq
def test_seed001_table_volatile(guest, upper, make_overlay):
    """Seed 001's table with two volatile overlays: ovl2's mount is refused while the
    upper's error is unseen (seed 002); once syncfs on the upper has seen it, ovl2
    mounts with a fresh sample and syncs with 0, while ovl1 keeps failing."""
    ovl1, ovl2 = two_overlays(make_overlay, volatile=True)
    assert ovl1.mount() == 0                               # ovlfs1: mount
    fd1 = guest.must.open(ovl1.path("f"), os.O_RDWR)       # ovlfs1: open fd1
    guest.must.pwrite(fd1, OLD, 0)                         # ovlfs1: write to fd1
    guest.must.sync()
    with upper.dev.failing(paths=[ovl1.upper_path("f")]):  # <writeback fails>
        guest.must.pwrite(fd1, NEW, 0)
    with expect_kmsg(guest, "Cannot mount volatile when upperdir has an unseen error. "
                     "Sync upperdir fs to clear state."):
        assert ovl2.mount() == errno.EIO                   # ovlfs2: mount, refused (seed 002)
    ufd = upper.open_root()
    assert guest.syncfs(ufd) == errno.EIO                  # the upper errseq_t SEEN flag is marked
    assert ovl2.mount() == 0                               # ovlfs2: mount
    fd2 = guest.must.open(ovl2.path("f"), os.O_RDWR)       # ovlfs2: open fd2
    assert guest.syncfs(fd2) == 0                          # ovlfs2: syncfs(fd2)
    assert guest.syncfs(fd1) == errno.EIO                  # ovlfs1: syncfs(fd1)


def nonvolatile_sequence(guest, upper, make_overlay):
    """Seed 001's table with normal overlays, up to the two syncfs calls."""
    ovl1, ovl2 = two_overlays(make_overlay)
    assert ovl1.mount() == 0                               # ovlfs1: mount
    fd1 = guest.must.open(ovl1.path("f"), os.O_RDWR)       # ovlfs1: open fd1
    guest.must.pwrite(fd1, OLD, 0)                         # ovlfs1: write to fd1
    guest.must.fsync(fd1)
    with upper.dev.failing(paths=[ovl1.upper_path("f")]):  # <writeback fails>
        guest.must.pwrite(fd1, NEW, 0)
    assert ovl2.mount() == 0                               # ovlfs2: mount (only volatile checks)
    fd2 = guest.must.open(ovl2.path("f"), os.O_RDWR)       # ovlfs2: open fd2
    return fd1, fd2


@pytest.mark.errseq
def test_seed001_table_normal_fsync(guest, upper, make_overlay):
    """Seed 001's table with normal overlays: fsync on fd1 reports the writeback error
    of its file once (vfs.rst), whatever the second overlay did meanwhile."""
    fd1, fd2 = nonvolatile_sequence(guest, upper, make_overlay)
    guest.must.pwrite(fd2, b"ovl2 writes too", 0)
    guest.must.fsync(fd2)
    assert guest.fsync(fd1) == errno.EIO
    assert guest.fsync(fd1) == 0


@pytest.mark.errseq
@pytest.mark.syncfs
@pytest.mark.known_issue(
    "a non-volatile overlay never records upper writeback errors in its own superblock "
    "(s_wb_err), so syncfs on overlay fds misses data writeback errors of the upper; "
    "the fix discussed in seed 001's thread (Vivek Goyal's \"[PATCH 3/3] overlayfs: "
    "Report writeback errors on upper\") was not merged")
def test_seed001_table_normal_syncfs(guest, upper, make_overlay):
    """Seed 001's table with normal overlays: tracking errors "as if the files were
    being opened on the upper layer" (seed 000), both syncfs calls report the error,
    as they would on a plain filesystem (fd2 sampled while the error was unseen)."""
    fd1, fd2 = nonvolatile_sequence(guest, upper, make_overlay)
    assert guest.syncfs(fd2) == errno.EIO                  # ovlfs2: syncfs(fd2)
    assert guest.syncfs(fd1) == errno.EIO                  # ovlfs1: syncfs(fd1)


def shared_dirs(guest, upper, make_overlay, index):
    """Two overlays with the very same upper and work dirs (lower on the upper fs, so
    that index=on has file handles and a UUID to work with)."""
    lower = make_tree(guest, upper.path("lower"), {"f": b"L"})
    a = make_overlay("same", lowers=[lower], index=index)
    b = make_overlay("same", lowers=[lower], index=index, merged=a.merged + "2")
    return a, b


@pytest.mark.upper_fs("ext4", "xfs", "btrfs")
def test_same_upperdir_with_index_is_refused(guest, upper, make_overlay):
    """overlayfs.rst: reusing an upper/work dir of another overlay mount "may fail with
    EBUSY"; with index=on it does (commit 0be0bfd2de9d)."""
    a, b = shared_dirs(guest, upper, make_overlay, "on")
    assert a.mount() == 0
    assert "index=on" in guest.must.read_file("/proc/self/mounts").decode()
    assert b.mount() == errno.EBUSY


@pytest.mark.parametrize("shared", ["upperdir", "workdir"])
def test_upperdir_or_workdir_alone_in_use_with_index_is_refused(guest, upper, make_overlay, shared):
    """The same with only one of the two dirs shared ("an upper layer path and/or a workdir
    path"): with index=on each in-use check refuses the second mount by itself."""
    a, b = shared_dirs(guest, upper, make_overlay, "on")
    other = make_overlay("other")
    if shared == "upperdir":
        b.work = other.work
    else:
        b.upper = other.upper
    assert a.mount() == 0
    assert b.mount() == errno.EBUSY


@pytest.mark.upper_fs("ext4", "xfs", "btrfs")
def test_same_upperdir_without_index_mounts_with_a_warning(guest, upper, make_overlay):
    """Commit 0be0bfd2de9d: "index=off only relaxes exclusive upper/work dir checks with
    another overlayfs mount": the second mount succeeds and the kernel warns."""
    a, b = shared_dirs(guest, upper, make_overlay, "off")
    assert a.mount() == 0
    start = guest.must.kmsg_seq()
    assert b.mount() == 0
    warnings = [line for line in guest.kmsg_lines(start) if "in-use" in line]
    assert warnings, "no 'in-use' warning from overlayfs"
