"""One case of one's own: an upper writeback error reaches fsync on the overlay file,
once (vfs.rst, "errseq")."""

import errno

import pytest

pytestmark = pytest.mark.upper_fs("ext4", "xfs")


def test_fsync_reports_an_upper_write_error_once(guest, upper, make_overlay):
    ovl = make_overlay()
    assert ovl.mount() == 0
    fd = ovl.copy_up("f", b"o" * 65536, flush="fsync")
    with upper.dev.failing(paths=[ovl.upper_path("f")]):
        guest.must.pwrite(fd, b"n" * 65536, 0)
    assert guest.fsync(fd) == errno.EIO
    assert guest.fsync(fd) == 0
