"""Volatile overlays and upper-layer writeback errors.

Seed 002 (Sargun Dhillon, "overlay: Implement volatile-specific fsync error
behaviour", commit 335d3fc57941, v5.11/5.10.15) and its documentation hunk in
Documentation/filesystems/overlayfs.rst ("Volatile mount"):

  "If any writeback error occurs on the upperdir's filesystem after a volatile
   mount takes place, all sync functions will return an error. Once this
   condition is reached, the filesystem will not recover, and every subsequent
   sync call will return an error, even if the upperdir has not experience a
   new error since the last sync call."
  "if the upperdir is an inconsistent state at the initial mount time,
   overlayfs will refuse to mount"  (seed 002, commit message)
  "The advantage of mounting with the "volatile" option is that all forms of
   sync calls to the upper filesystem are omitted."  (overlayfs.rst)

Data faults are targeted: writes to the upper file's data sectors fail, the
upper's metadata and journal stay healthy (see overlay_harness/library/devices.py).
"""

import errno
import os

import pytest

pytestmark = [pytest.mark.volatile, pytest.mark.upper_fs("ext4", "ext4-nojournal", "xfs")]

OLD = b"o" * 65536
NEW = b"n" * 65536


def test_volatile_sync_calls_return_error_every_time(guest, upper, make_overlay):
    """Seed 002 / overlayfs.rst: after an upper writeback error, fsync, fdatasync and
    syncfs on a volatile overlay return the error on every call (sticky)."""
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="sync")
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(fd, NEW, 0)
    assert guest.fsync(fd) == errno.EIO
    assert guest.fsync(fd) == errno.EIO
    assert guest.fdatasync(fd) == errno.EIO
    assert guest.syncfs(fd) == errno.EIO
    assert guest.syncfs(fd) == errno.EIO
    assert guest.syncfs(fd) == errno.EIO


@pytest.mark.errseq
def test_volatile_error_reaches_fds_opened_after_it(guest, upper, make_overlay):
    """Seed 002: the volatile mount samples the upper's errseq at mount time, so every
    fd, also one opened after the error and on another file, sees it."""
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="sync")
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(fd, NEW, 0)
    guest.must.close(fd)
    later = guest.must.open(ovl.path("f"), os.O_RDONLY)
    assert guest.fsync(later) == errno.EIO
    other = guest.must.open(ovl.path("new-file"), os.O_CREAT | os.O_WRONLY)
    assert guest.fsync(other) == errno.EIO
    assert guest.syncfs(other) == errno.EIO
    root = guest.must.open(ovl.path(), os.O_RDONLY | os.O_DIRECTORY)
    assert guest.fsync(root) == errno.EIO  # ovl_dir_fsync checks the same status
    assert guest.syncfs(root) == errno.EIO


def test_volatile_error_reaches_a_lower_only_file(guest, upper, make_overlay):
    """overlayfs.rst: "all sync functions will return an error", also fsync on a file
    never copied up, which on a non-volatile mount returns 0 without syncing (see
    test_nonvolatile.py): ovl_fsync checks the volatile error state first."""
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == 0
    low = guest.must.open(ovl.path("f"), os.O_RDONLY)
    fd = guest.must.open(ovl.path("n"), os.O_CREAT | os.O_RDWR, 0o644)
    guest.must.pwrite(fd, OLD, 0)
    guest.must.sync()
    with upper.dev.failing(paths=[ovl.upper_path("n")]):
        guest.must.pwrite(fd, NEW, 0)
    assert guest.fsync(low) == errno.EIO
    assert guest.fdatasync(low) == errno.EIO
    assert guest.stat(ovl.upper_path("f")) == errno.ENOENT  # still lower-only


@pytest.mark.errseq
@pytest.mark.syncfs
def test_volatile_error_sticks_after_the_upper_consumed_it(guest, upper, make_overlay):
    """Seeds 000/002: the volatile sample is never advanced, so syncfs on the upper
    filesystem itself (which reports and marks the error seen) does not clear it
    for the overlay: "every subsequent sync call will return an error"."""
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="sync")
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(fd, NEW, 0)
    ufd = upper.open_root()
    assert guest.syncfs(ufd) == errno.EIO   # the upper reports its error once ...
    assert guest.syncfs(ufd) == 0           # ... and then it is seen
    assert guest.syncfs(fd) == errno.EIO    # the volatile overlay still fails
    assert guest.fsync(fd) == errno.EIO


@pytest.mark.syncfs
def test_volatile_sync_calls_do_not_reach_the_upper(guest, upper, make_overlay):
    """overlayfs.rst: with volatile, "all forms of sync calls to the upper filesystem
    are omitted". With writes to the file's upper sectors failing, fsync and syncfs
    through the overlay return 0 because they write nothing back; the upper's own
    syncfs then hits the bad sectors, proving the pages were still dirty."""
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="sync")
    ufd = upper.open_root()
    with upper.dev.faulty(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(fd, NEW, 0)
        assert guest.fsync(fd) == 0
        assert guest.fdatasync(fd) == 0
        assert guest.syncfs(fd) == 0
        assert guest.syncfs(ufd) == errno.EIO   # the writeback happens only now


def test_volatile_mount_refused_while_upper_has_unseen_error(guest, upper, make_overlay):
    """Seed 002: "if the upperdir is an inconsistent state at the initial mount time,
    overlayfs will refuse to mount" (EIO, "Cannot mount volatile when upperdir has an
    unseen error"); after syncfs on the upper has seen the error, it mounts."""
    path = upper.path("direct")
    fd = guest.must.open(path, os.O_CREAT | os.O_RDWR)
    guest.must.pwrite(fd, OLD, 0)
    guest.must.fsync(fd)
    with upper.dev.failing(paths=[path]):
        guest.must.pwrite(fd, NEW, 0)
    guest.must.close(fd)  # nobody has seen the error
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == errno.EIO
    ufd = upper.open_root()
    assert guest.syncfs(ufd) == errno.EIO   # sees the error, marks it seen
    assert ovl.mount() == 0
    ofd = guest.must.open(ovl.path("f"), os.O_RDONLY)
    assert guest.syncfs(ofd) == 0           # a fresh sample: no error since the mount


@pytest.mark.upper_fs("ext4", "xfs", "btrfs")
def test_volatile_incompat_dir_refuses_the_next_mount(guest, upper, make_overlay):
    """overlayfs.rst: a volatile mount creates "$workdir/work/incompat/volatile";
    "During next mount, overlay checks for this directory and refuses to mount if
    present" (EINVAL), volatile or not. Removing it lets the mount through."""
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == 0
    assert isinstance(guest.stat(f"{ovl.volatile_dir}/dirty"), dict)
    assert ovl.umount() == 0
    assert isinstance(guest.stat(ovl.volatile_dir), dict)  # left behind on purpose
    assert ovl.mount() == errno.EINVAL
    plain = make_overlay()           # same upper and work dirs, not volatile
    assert plain.mount() == errno.EINVAL
    ovl.clear_volatile_incompat()
    assert plain.mount() == 0


@pytest.mark.errseq
def test_volatile_remount_after_error_starts_clean(guest, upper, make_overlay):
    """Seeds 000/002: the error state lives in the mount, and the overlay's own error
    reports do not mark the upper's error seen ("sampling should also not affect later
    openers on the upper layer"). So after umount a new volatile mount is refused
    (EIO) until syncfs on the upper has seen the error; then it syncs with 0."""
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="sync")
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(fd, NEW, 0)
    assert guest.syncfs(fd) == errno.EIO
    assert guest.fsync(fd) == errno.EIO
    guest.must.close(fd)
    assert ovl.umount() == 0
    ovl.clear_volatile_incompat()          # the incompat check has its own case
    assert ovl.mount() == errno.EIO        # the upper's error is still unseen
    ufd = upper.open_root()
    assert guest.syncfs(ufd) == errno.EIO
    assert ovl.mount() == 0
    fd = guest.must.open(ovl.path("f"), os.O_RDONLY)
    assert guest.syncfs(fd) == 0
    assert guest.fsync(fd) == 0


@pytest.mark.upper_fs("ext4-nojournal", "btrfs")
def test_volatile_whole_device_write_errors_are_sticky(guest, upper, make_overlay):
    """Seed 002 with the upper failing as a whole (dm-flakey error_writes on every
    sector, reads still work): volatile syncfs and fsync report the error on every
    call, as with a data-only fault."""
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="sync")
    with upper.dev.failing("flakey", feature="error_writes"):
        guest.must.pwrite(fd, NEW, 0)
    for _ in range(3):
        assert guest.syncfs(fd) == errno.EIO
        assert guest.fsync(fd) == errno.EIO


# ovl_mmap() (fs/overlayfs/file.c, since v4.19's stacked file operations; through
# backing_file_mmap() since v6.8, f567377e406c) hands the mapping to the real upper file
# with vma_set_file(), so msync(2) calls vfs_fsync_range() on that
# file itself: the overlay's ->fsync, where a volatile mount checks its error state
# (ovl_sync_status) and skips the upper, is never called. The reference lists this as an
# untested inference (behaviours.md, section 3, "fsync edge cases").
MSYNC_BYPASSES_OVERLAY = (
    "msync on a volatile overlay's mapping goes straight to the real upper file (ovl_mmap "
    "sets the vma's file to it with vma_set_file, through backing_file_mmap() since v6.8), "
    "so it writes back to the upper and "
    "reports an upper writeback error only once, through that file's own errseq cursor, "
    "never through the volatile mount's error state; documented since commit 335d3fc57941 "
    "(v5.11) for all sync functions")


@pytest.mark.known_issue(MSYNC_BYPASSES_OVERLAY, since="5.11")
def test_volatile_msync_returns_the_error_every_time(guest, upper, make_overlay):
    """overlayfs.rst: after an upper writeback error "all sync functions will return an
    error ... every subsequent sync call will return an error"; msync(MS_SYNC) is one
    of them. Pages dirtied through a shared mapping of the overlay file."""
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="sync")
    m = guest.must.mmap(fd, len(OLD))
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.mwrite(m, NEW, 0)
    assert guest.msync(m) == errno.EIO
    assert guest.msync(m) == errno.EIO
    assert guest.fsync(fd) == errno.EIO   # the overlay's own sync calls agree


@pytest.mark.known_issue(MSYNC_BYPASSES_OVERLAY, since="5.11")
def test_volatile_msync_does_not_reach_the_upper(guest, upper, make_overlay):
    """overlayfs.rst: with volatile, "all forms of sync calls to the upper filesystem are
    omitted", msync included. With the file's upper sectors failing, msync through the
    overlay's mapping writes nothing back and returns 0; the upper's own syncfs then hits
    the bad sectors."""
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="sync")
    m = guest.must.mmap(fd, len(OLD))
    ufd = upper.open_root()
    with upper.dev.faulty(paths=[ovl.upper_path("f")]):
        guest.must.mwrite(m, NEW, 0)
        assert guest.msync(m) == 0
        assert guest.syncfs(ufd) == errno.EIO   # the writeback happens only now
