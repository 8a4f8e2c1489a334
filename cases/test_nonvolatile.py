"""Non-volatile overlays: how upper writeback errors reach fsync and syncfs.

Sources:
- vfs.rst, "Handling errors during writeback", and the errseq_t series
  (Jeff Layton, v4.13): fsync reports a writeback error once to every file
  description that was open when it happened; a file opened later still sees an
  error nobody has seen yet (errseq_sample returns 0 then: seed 001, "making
  errseq_sample return 0 when there are unseen errors").
- commit 735e4ae5ba28 (v5.8) "vfs: track per-sb writeback errors and report them
  to syncfs": "syncfs is then changed to reliably report writeback errors after
  they occur, much in the same fashion as fsync does now."
- commit 5679897eb104 (v5.17) "vfs: make sync_filesystem return errors from
  ->sync_fs"; overlayfs' ->sync_fs is sync_filesystem() of the upper.
- seed 000 (Jeff Layton): non-volatile overlays "want to be able to track errors
  as if the files were being opened on the upper layer".
- fstests overlay/087: syncfs on an overlay whose xfs upper was shut down fails
  with EIO, unless the overlay is volatile.
"""

import errno
import os

import pytest

pytestmark = [pytest.mark.errseq, pytest.mark.upper_fs("ext4", "ext4-nojournal", "xfs")]

OLD = b"o" * 65536
NEW = b"n" * 65536


def test_fsync_reports_the_error_once_per_open_file(guest, upper, make_overlay):
    """vfs.rst: an error is reported to fsync on every file description open when it
    happened, once each. Every overlay open has its own real upper file."""
    ovl = make_overlay()
    assert ovl.mount() == 0
    a = ovl.copy_up("f", OLD, flush="fsync")
    b = guest.must.open(ovl.path("f"), os.O_RDWR)
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(a, NEW, 0)
    assert guest.fsync(a) == errno.EIO
    assert guest.fsync(a) == 0
    assert guest.fsync(b) == errno.EIO
    assert guest.fsync(b) == 0


def test_fdatasync_reports_the_error_once(guest, upper, make_overlay):
    """vfs.rst: fdatasync reports writeback errors like fsync, once per file."""
    ovl = make_overlay()
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="fsync")
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(fd, NEW, 0)
    assert guest.fdatasync(fd) == errno.EIO
    assert guest.fdatasync(fd) == 0


def test_new_fd_sees_an_unseen_error_once(guest, upper, make_overlay):
    """Seed 001 / lib/errseq.c: errseq_sample returns 0 while an error is unseen, so a
    file opened after the error, before anyone saw it, gets it from fsync once; a file
    opened after that gets 0."""
    ovl = make_overlay()
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="fsync")
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(fd, NEW, 0)
    guest.must.close(fd)  # keep the inode cached; nobody has seen the error
    c = guest.must.open(ovl.path("f"), os.O_RDONLY)
    assert guest.fsync(c) == errno.EIO
    assert guest.fsync(c) == 0
    d = guest.must.open(ovl.path("f"), os.O_RDONLY)
    assert guest.fsync(d) == 0


def test_error_seen_before_an_open_is_not_reported_to_it(guest, upper, make_overlay):
    """vfs.rst / errseq: once fsync on a file open at the time has reported the error,
    a file opened afterwards samples the current state and gets 0."""
    ovl = make_overlay()
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="fsync")
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(fd, NEW, 0)
    assert guest.fsync(fd) == errno.EIO
    later = guest.must.open(ovl.path("f"), os.O_RDWR)
    assert guest.fsync(later) == 0


def test_fsync_of_a_lower_only_file_reports_nothing(guest, upper, make_overlay):
    """Reference section 3 (fsync edge cases), fs/overlayfs/file.c ovl_fsync: "Don't sync
    lower file for fear of receiving EROFS error". fsync on an overlay fd of a file never
    copied up returns 0, while the upper holds a writeback error that the fd of a file
    on the upper gets."""
    ovl = make_overlay()
    assert ovl.mount() == 0
    low = guest.must.open(ovl.path("f"), os.O_RDONLY)
    fd = guest.must.open(ovl.path("n"), os.O_CREAT | os.O_RDWR, 0o644)
    guest.must.pwrite(fd, OLD, 0)
    guest.must.fsync(fd)
    with upper.dev.failing(paths=[ovl.upper_path("n")]):
        guest.must.pwrite(fd, NEW, 0)
    assert guest.fsync(low) == 0
    assert guest.fdatasync(low) == 0
    assert guest.fsync(fd) == errno.EIO
    assert guest.stat(ovl.upper_path("f")) == errno.ENOENT  # still lower-only


def test_overlay_and_upper_fds_have_their_own_cursors(guest, upper, make_overlay):
    """Seed 000: non-volatile overlays track errors "as if the files were being opened
    on the upper layer": an fd on the overlay and an fd on the upper path of the same
    file, both open before the error, each get it once."""
    ovl = make_overlay()
    assert ovl.mount() == 0
    fd_ovl = ovl.copy_up("f", OLD, flush="fsync")
    fd_up = guest.must.open(ovl.upper_path("f"), os.O_RDONLY)
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(fd_ovl, NEW, 0)
    assert guest.fsync(fd_up) == errno.EIO
    assert guest.fsync(fd_ovl) == errno.EIO
    assert guest.fsync(fd_up) == 0
    assert guest.fsync(fd_ovl) == 0


@pytest.mark.syncfs
def test_upper_syncfs_reports_to_fds_opened_before_and_after(guest, upper):
    """The plain-filesystem column of seed 001's table, on the upper fs itself:
    "On a 'normal' (non-overlay) fs, you'd get an error back on both syncfs calls":
    fd1 opened before the error, fd2 after it (sampled 0 while unseen). A third fd,
    opened once the error was seen, gets 0, and so does fd1 the second time."""
    path = upper.path("f")
    fd = guest.must.open(path, os.O_CREAT | os.O_RDWR)
    guest.must.pwrite(fd, OLD, 0)
    guest.must.fsync(fd)
    fd1 = upper.open_root()
    with upper.dev.failing(paths=[path]):
        guest.must.pwrite(fd, NEW, 0)
    fd2 = upper.open_root()
    assert guest.syncfs(fd2) == errno.EIO
    assert guest.syncfs(fd1) == errno.EIO
    fd3 = upper.open_root()
    assert guest.syncfs(fd3) == 0
    assert guest.syncfs(fd1) == 0


@pytest.mark.syncfs
@pytest.mark.known_issue(
    "a non-volatile overlay never records upper writeback errors in its own superblock "
    "(s_wb_err), so syncfs on an overlay fd misses a data-only writeback error that "
    "syncfs on an upper fd reports; Vivek Goyal's \"[PATCH 3/3] overlayfs: Report "
    "writeback errors on upper\" (Dec 2020, the thread of seed 001) was not merged")
def test_overlay_syncfs_reports_upper_data_writeback_error(guest, upper, make_overlay):
    """Scenario 8 of the reference. Commit 735e4ae5ba28: syncfs reports writeback errors
    "much in the same fashion as fsync"; seed 000: a non-volatile overlay should track
    errors as the upper does. With only the file's data sectors failing (journal and
    metadata healthy), syncfs on an overlay fd opened before the error should fail as
    syncfs on an upper fd does."""
    ovl = make_overlay()
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="fsync")
    ufd = upper.open_root()
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(fd, NEW, 0)
    assert guest.syncfs(ufd) == errno.EIO   # the upper reports its data error ...
    assert guest.syncfs(fd) == errno.EIO    # ... the overlay should too


@pytest.mark.syncfs
@pytest.mark.upper_fs("ext4-nojournal")
def test_overlay_syncfs_reports_a_failing_upper_device(guest, upper, make_overlay):
    """Commit 5679897eb104: syncfs returns what ->sync_fs returns; overlayfs' ->sync_fs
    syncs the upper, whose metadata writeback to a device failing every write fails."""
    ovl = make_overlay()
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", OLD, flush="fsync")
    with upper.dev.failing("error_writes"):
        guest.must.pwrite(fd, NEW, 0)
        guest.must.write_file(ovl.path("new-file"), b"metadata to write back")
        assert guest.syncfs(fd) == errno.EIO


def shut_down(guest, fs):
    """XFS_IOC_GOINGDOWN (EXT4_IOC_SHUTDOWN is the same ioctl) through xfs_io."""
    guest.run(["xfs_io", "-x", "-c", "shutdown", fs.path()])


@pytest.mark.syncfs
@pytest.mark.upper_fs("xfs", "ext4")
@pytest.mark.known_issue(
    "before v6.13 ext4's ->sync_fs returns 0 on a shut-down filesystem (ext4_sync_fs: "
    "\"if (unlikely(ext4_forced_shutdown(sb))) return 0;\"), so syncfs through a normal "
    "overlay reports nothing (Amir Goldstein on fstests overlay/087: ext4 \"returns "
    "success on syncfs post shutdown\"); his \"ext4: return error on syncfs after "
    "shutdown\" (v6.13) returns -EIO", fixed="6.13", commit="150c174a6053", upper_fs=["ext4"])
def test_syncfs_fails_after_upper_shutdown(guest, upper, make_overlay):
    """fstests overlay/087 (087.out: "syncfs: Input/output error"): after the upper
    filesystem is shut down, syncfs on a normal overlay fails with EIO."""
    ovl = make_overlay()
    assert ovl.mount() == 0
    root = guest.must.open(ovl.path(), os.O_RDONLY | os.O_DIRECTORY)
    shut_down(guest, upper)
    assert guest.syncfs(root) == errno.EIO


@pytest.mark.syncfs
@pytest.mark.volatile
@pytest.mark.upper_fs("xfs", "ext4")
def test_volatile_syncfs_ignores_upper_shutdown(guest, upper, make_overlay):
    """fstests overlay/087: a volatile overlay's syncfs returns 0 after the upper was
    shut down, since its sync calls never reach the upper (overlayfs.rst)."""
    ovl = make_overlay(volatile=True)
    assert ovl.mount() == 0
    root = guest.must.open(ovl.path(), os.O_RDONLY | os.O_DIRECTORY)
    shut_down(guest, upper)
    assert guest.syncfs(root) == 0
