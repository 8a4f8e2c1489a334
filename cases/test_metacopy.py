"""Metadata-only copy-up (metacopy=on).

Sources:
- seed 004, Vivek Goyal's "[RFC PATCH 00/11][V4] overlayfs: Delayed copy up of
  data" (Oct 2017): "only metadat is copied up during chown() and if file is
  opened for READ, d_real() returns lower dentry/inode. That way, different
  containers can still continue to use page cache"; patch 05 (no metadata-only
  copy-up when opened for WRITE or with O_TRUNC), 06 (OVL_XATTR_METACOPY "set
  when a metadata copy takes place and cleared when data copy takes place"),
  07 ("query the number of blocks from lower"), 08 (metacopy upper without a
  lower: an error), 10 (readers must never see the effects of clearing the
  metacopy flag before those of the data copy-up).
- overlayfs.rst, "Metadata only copy up": the upper file "is marked with
  "trusted.overlayfs.metacopy" xattr [the code's name is trusted.overlay.metacopy]
  which indicates that the upper file contains no data. The data will be copied
  up later when file is opened for WRITE operation. After the lower file's data
  is copied up, the "trusted.overlayfs.metacopy" xattr is removed"; "Note:
  redirect_dir={off|nofollow|follow[*]} and nfs_export=on mount options conflict
  with metacopy=on, and will result in an error. [*] redirect_dir=follow only
  conflicts with metacopy=on if upperdir=... is given."
- overlayfs.rst, "index": without it "a file with multiple hard links is copied
  up, then this will "break" the link"; "NFS export": "The index entry name is the
  hexadecimal representation of the copy up origin file handle. For a
  non-directory object, the index entry is a hard link to the upper inode."
- commit d47748e5ae5a "ovl: automatically enable redirect_dir on metacopy=on":
  "This patch makes metacopy=on imply redirect_dir=on".
- commit 2d2f2d7322ff "ovl: user xattr" (v5.11): "Disable redirect_dir and metacopy
  options, because these would allow privilege escalation"; d47748e5ae5a explains why an
  explicit metacopy=on that cannot be honoured is an error rather than silently dropped
  ("no mount failure, yet metacopy is disabled" confuses the user).
- commit 9d3dfea3d35a "ovl: Modify ovl_lookup() and friends to lookup metacopy
  dentry": "Do not follow metacopy origin if we find a metacopy only inode and
  metacopy feature is not enabled for that mount".
- commit 641089c1549d "ovl: fsync after copy-up": "Make sure the copied up file
  hits the disk"; for a metacopy file the data copy-up fsyncs the upper before it
  removes the metacopy xattr, so a failed write cannot leave the xattr gone.

The lower layer lives on its own block device (ext4 on a loop + dm device), not
on tmpfs, so that page cache residency (mincore) says which inode holds pages.
"""

import errno
import json
import os
import stat

import pytest

from overlay_harness import WHOLE_DEVICE_FAULTS, LowerFs, Overlay, expect_kmsg, guest_script, make_tree

pytestmark = [pytest.mark.metacopy, pytest.mark.upper_fs("ext4", "xfs")]

SIZE = (1 << 20) + 1000  # >= 1 MiB, not a whole number of pages
METACOPY = "metacopy"
ORIGIN = "origin"
RACE_SCRIPT = guest_script("copyup_race.py")


def pattern(size, salt=0):
    """Bytes that are never zero, so zeros read back are always wrong."""
    block = bytes((i * 7 + 13 + salt) % 251 + 1 for i in range(251 * 16))
    return (block * (size // len(block) + 1))[:size]


DATA = pattern(SIZE)


@pytest.fixture
def lower_fs(guest, upper):
    """Lower layer on its own ext4 with one metacopy candidate, `f` (SIZE bytes of DATA)."""
    return LowerFs(guest, {"f": DATA})


def overlay(guest, upper, lowers, name="ovl", **options):
    return Overlay(guest, name, [str(x) for x in lowers], upper, **options)


def read_all(guest, path):
    fd = guest.must.open(path, os.O_RDONLY)
    data = guest.must.pread(fd, SIZE + 1, 0)
    guest.must.close(fd)
    return data


def drop_caches(guest):
    guest.must.sync()
    guest.must.write_file("/proc/sys/vm/drop_caches", b"3")


def mounts_line(guest, merged):
    for line in guest.must.read_file("/proc/self/mounts").decode().splitlines():
        if line.split()[1] == merged:
            return line
    raise AssertionError(f"{merged} is not in /proc/self/mounts")


def no_data_blocks(guest, upper, path):
    """The upper file holds no data: no extents (FIEMAP), and st_blocks counts at most
    ext4's external xattr block (ext4 counts it in i_blocks; xfs keeps small xattrs in
    the inode)."""
    assert guest.must.fiemap(path) == []
    blocks = guest.must.stat(path)["st_blocks"]
    if upper.kind == "ext4":
        assert blocks in (0, 4096 // 512), f"st_blocks {blocks}: more than one xattr block"
    else:
        assert blocks == 0


# -- metadata-only copy-up ---------------------------------------------------------------

METADATA_OPS = {
    "chown": (lambda g, p: g.chown(p, 1000, 1000), lambda st: (st["st_uid"], st["st_gid"]),
              (1000, 1000)),
    "chmod": (lambda g, p: g.chmod(p, 0o600), lambda st: stat.S_IMODE(st["st_mode"]), 0o600),
    "utimes": (lambda g, p: g.utime(p, [1_000_000_000 * 10**9, 1_100_000_000 * 10**9]),
               lambda st: st["st_mtime_ns"], 1_100_000_000 * 10**9),
}


@pytest.mark.parametrize("op", list(METADATA_OPS))
def test_metadata_change_copies_up_metadata_only(guest, upper, lower_fs, op):
    """Seed 004 (cover letter, patches 05/06/07) and overlayfs.rst "Metadata only copy
    up": chown/chmod/utimes of a lower file copy up metadata only. The upper file has
    trusted.overlay.metacopy and trusted.overlay.origin (nlink 1), no data blocks and the
    lower's size; through the overlay st_size and st_blocks are the lower's ("query the
    number of blocks from lower") and the new metadata shows."""
    change, field, value = METADATA_OPS[op]
    ovl = overlay(guest, upper, [lower_fs.path()], metacopy="on")
    assert ovl.mount() == 0
    lower_st = guest.must.stat(lower_fs.path("f"))
    assert change(guest, ovl.path("f")) == 0
    xattrs = ovl.upper_xattrs("f")
    assert METACOPY in xattrs
    assert ORIGIN in xattrs
    up = guest.must.stat(ovl.upper_path("f"))
    assert up["st_size"] == lower_st["st_size"] == SIZE
    no_data_blocks(guest, upper, ovl.upper_path("f"))
    st = guest.must.stat(ovl.path("f"))
    assert st["st_size"] == lower_st["st_size"]
    assert st["st_blocks"] == lower_st["st_blocks"]
    assert field(st) == value
    assert field(up) == value
    assert read_all(guest, ovl.path("f")) == DATA


# -- reads come from the lower's page cache ---------------------------------------------

def test_reads_are_served_from_the_lower_page_cache(guest, upper, lower_fs):
    """Seed 004 cover letter: after a metadata-only copy-up, "if file is opened for READ,
    d_real() returns lower dentry/inode", so reads return the lower's bytes and fill the
    lower inode's page cache; the upper inode stays without pages."""
    ovl = overlay(guest, upper, [lower_fs.path()], metacopy="on")
    assert ovl.mount() == 0
    assert guest.chown(ovl.path("f"), 1000, 1000) == 0
    drop_caches(guest)
    assert guest.must.mincore(lower_fs.path("f"))["resident"] == 0
    assert read_all(guest, ovl.path("f")) == DATA
    lower = guest.must.mincore(lower_fs.path("f"))
    assert lower["resident"] == lower["pages"]
    assert guest.must.mincore(ovl.upper_path("f"))["resident"] == 0


def test_two_overlays_share_the_lower_page_cache(guest, upper, lower_fs):
    """Seed 004 cover letter, the use case: containers that chown a shared image should
    "continue to use page cache". Two overlays on one lower, the file chowned in both:
    reading it through both fills the lower inode's cache once; neither upper copy
    caches a page, so the cached pages are not doubled."""
    o1 = overlay(guest, upper, [lower_fs.path()], name="o1", metacopy="on")
    o2 = overlay(guest, upper, [lower_fs.path()], name="o2", metacopy="on")
    assert o1.mount() == 0
    assert o2.mount() == 0
    assert guest.chown(o1.path("f"), 1000, 1000) == 0
    assert guest.chown(o2.path("f"), 2000, 2000) == 0
    drop_caches(guest)
    assert read_all(guest, o1.path("f")) == DATA
    assert read_all(guest, o2.path("f")) == DATA
    lower = guest.must.mincore(lower_fs.path("f"))
    assert lower["resident"] == lower["pages"]
    assert guest.must.mincore(o1.upper_path("f"))["resident"] == 0
    assert guest.must.mincore(o2.upper_path("f"))["resident"] == 0
    assert guest.must.stat(o1.path("f"))["st_uid"] == 1000
    assert guest.must.stat(o2.path("f"))["st_uid"] == 2000


# -- data copy-up triggers ----------------------------------------------------------------

def open_and_close(flags):
    def run(guest, path):
        fd = guest.open(path, flags)
        if isinstance(fd, int):
            guest.must.close(fd)
            return 0
        return fd
    return run


DATA_COPY_UP = {
    "O_WRONLY": (open_and_close(os.O_WRONLY), DATA),
    "O_RDWR": (open_and_close(os.O_RDWR), DATA),
    "O_TRUNC": (open_and_close(os.O_WRONLY | os.O_TRUNC), b""),
    "truncate": (lambda g, p: g.truncate(p, SIZE // 2), DATA[:SIZE // 2]),
}


@pytest.mark.parametrize("trigger", list(DATA_COPY_UP))
def test_open_for_write_and_truncate_copy_the_data_up(guest, upper, lower_fs, trigger):
    """overlayfs.rst: "The data will be copied up later when file is opened for WRITE
    operation. After the lower file's data is copied up, the ... metacopy xattr is
    removed"; seed 004 patch 05: O_TRUNC and FMODE_WRITE opens are no metadata-only
    copy-ups; mainline ovl_setattr: "Truncate should trigger data copy up as well".
    Afterwards the upper holds the data (unchanged, but for the truncated sizes) and
    no metacopy xattr; origin stays."""
    action, expected = DATA_COPY_UP[trigger]
    ovl = overlay(guest, upper, [lower_fs.path()], metacopy="on")
    assert ovl.mount() == 0
    assert guest.chown(ovl.path("f"), 1000, 1000) == 0
    assert METACOPY in ovl.upper_xattrs("f")
    assert action(guest, ovl.path("f")) == 0
    xattrs = ovl.upper_xattrs("f")
    assert METACOPY not in xattrs
    assert ORIGIN in xattrs
    assert read_all(guest, ovl.path("f")) == expected
    assert read_all(guest, ovl.upper_path("f")) == expected
    assert guest.must.stat(ovl.path("f"))["st_size"] == len(expected)
    assert read_all(guest, lower_fs.path("f")) == DATA  # the lower is never written
    if expected:
        assert guest.must.fiemap(ovl.upper_path("f")) != []


def test_open_read_only_copies_no_data(guest, upper, lower_fs):
    """Seed 004 patch 05/06 and overlayfs.rst: only an open "for WRITE" copies the data
    up; O_RDONLY opens and reads keep the metacopy xattr and leave the upper empty."""
    ovl = overlay(guest, upper, [lower_fs.path()], metacopy="on")
    assert ovl.mount() == 0
    assert guest.chown(ovl.path("f"), 1000, 1000) == 0
    fd = guest.must.open(ovl.path("f"), os.O_RDONLY)
    assert guest.read(fd, SIZE + 1) == DATA
    assert guest.close(fd) == 0
    assert METACOPY in ovl.upper_xattrs("f")
    no_data_blocks(guest, upper, ovl.upper_path("f"))


# -- hard links ----------------------------------------------------------------------------

@pytest.fixture
def linked_lowerfs(guest, upper):
    """Lower `f` with a second hard link `f2` (nlink 2)."""
    fs = LowerFs(guest, {"f": DATA})
    guest.must.link(fs.path("f"), fs.path("f2"))
    guest.must.sync()
    return fs


def test_hardlink_metacopy_without_index_breaks_the_link(guest, upper, linked_lowerfs):
    """overlayfs.rst "index": with index=off, copying up a file with several hard links
    "will "break" the link": f2 keeps the old owner. The upper f is a metacopy without
    an origin xattr: mainline sets origin only for nlink == 1 or indexed files ("Don't
    set origin when we are breaking the association with a lower hard link", copy_up.c);
    seed 004 patch 01 proposed origin "even for hardlinks even with index=off", which
    was not merged. Reads of both names still return the lower's bytes."""
    lfs = linked_lowerfs
    ovl = overlay(guest, upper, [lfs.path()], metacopy="on", index="off")
    assert ovl.mount() == 0
    assert guest.chown(ovl.path("f"), 1000, 1000) == 0
    xattrs = ovl.upper_xattrs("f")
    assert METACOPY in xattrs
    assert ORIGIN not in xattrs
    assert guest.stat(ovl.upper_path("f2")) == errno.ENOENT
    assert guest.must.stat(ovl.path("f"))["st_uid"] == 1000
    assert guest.must.stat(ovl.path("f2"))["st_uid"] == 0
    assert read_all(guest, ovl.path("f")) == DATA
    assert read_all(guest, ovl.path("f2")) == DATA
    assert guest.stat(f"{ovl.work}/index") == errno.ENOENT


def test_hardlink_metacopy_with_index_keeps_the_link(guest, upper, linked_lowerfs):
    """overlayfs.rst "index"/"NFS export": with index=on the copy-up of a hard-linked
    file is indexed: an entry named by the hex origin file handle under workdir/index,
    hard-linked to the upper inode; the link is not broken (f2 shows the new owner,
    st_nlink stays 2). The metacopy upper has origin. Opening f2 for write links it to
    the same upper inode and copies the data up once: the metacopy xattr goes, origin
    stays, and the bytes are the lower's."""
    lfs = linked_lowerfs
    ovl = overlay(guest, upper, [lfs.path()], metacopy="on", index="on")
    assert ovl.mount() == 0
    assert guest.chown(ovl.path("f"), 1000, 1000) == 0
    xattrs = ovl.upper_xattrs("f")
    assert METACOPY in xattrs
    assert ORIGIN in xattrs
    entries = guest.must.listdir(f"{ovl.work}/index")
    assert entries == [xattrs[ORIGIN].hex()]
    up = guest.must.stat(ovl.upper_path("f"))
    assert guest.must.stat(f"{ovl.work}/index/{entries[0]}")["st_ino"] == up["st_ino"]
    for name in ("f", "f2"):
        st = guest.must.stat(ovl.path(name))
        assert (st["st_uid"], st["st_nlink"]) == (1000, 2)
    assert read_all(guest, ovl.path("f2")) == DATA
    fd = guest.must.open(ovl.path("f2"), os.O_WRONLY)
    assert guest.close(fd) == 0
    assert guest.must.stat(ovl.upper_path("f2"))["st_ino"] == up["st_ino"]
    xattrs = ovl.upper_xattrs("f")
    assert METACOPY not in xattrs
    assert ORIGIN in xattrs
    assert read_all(guest, ovl.path("f")) == DATA
    assert read_all(guest, ovl.upper_path("f")) == DATA


# -- mount options ---------------------------------------------------------------------------

CONFLICTS = {
    "redirect_dir=off": {"redirect_dir": "off"},
    "redirect_dir=follow": {"redirect_dir": "follow"},
    "redirect_dir=nofollow": {"redirect_dir": "nofollow"},
    "nfs_export=on": {"nfs_export": "on"},
    "userxattr": {"userxattr": True},
}


@pytest.mark.upper_fs("ext4")
@pytest.mark.parametrize("option", list(CONFLICTS))
def test_conflicting_options_with_upper_fail(guest, make_overlay, option):
    """overlayfs.rst: "redirect_dir={off|nofollow|follow} and nfs_export=on mount options
    conflict with metacopy=on, and will result in an error" (commits d47748e5ae5a,
    b0def88d807f: "Both explicit mount options result in an error"); commit 2d2f2d7322ff
    disables metacopy with userxattr, so an explicit metacopy=on with it is the same kind
    of conflict. The error of a bad mount option is EINVAL (mount(2))."""
    ovl = make_overlay(metacopy="on", **CONFLICTS[option])
    assert ovl.mount() == errno.EINVAL


def redirect_always_follow(guest):
    return guest.must.read_file("/sys/module/overlay/parameters/redirect_always_follow").strip() == b"Y"


NO_UPPER = ["redirect_dir=off", "redirect_dir=follow", "redirect_dir=nofollow", "userxattr",
            pytest.param("nfs_export=on", marks=pytest.mark.known_issue(
                "with no upper layer the nfs_export -> index resolution runs first and, "
                "redirects being followed, falls back to nfs_export=off (\"NFS export "
                "requires redirect_dir=nofollow on non-upper mount\"), so the conflict with "
                "metacopy=on that overlayfs.rst promises never arises and the mount "
                "succeeds; mainline params.c does the same"))]


@pytest.mark.parametrize("option", NO_UPPER)
def test_conflicting_options_without_upper(guest, lower, option):
    """overlayfs.rst: the conflicts "will result in an error", but "redirect_dir=follow
    only conflicts with metacopy=on if upperdir=... is given", and redirect_dir=off
    "translates to "follow"" when redirect_always_follow is set, else to "nofollow".
    So with two lower layers and no upper: follow mounts, nofollow fails, off follows
    the module's redirect_always_follow, userxattr and nfs_export=on fail (EINVAL)."""
    second = make_tree(guest, f"{guest.scratch}/lower2", {"g": b"g"})
    expected = errno.EINVAL
    if option == "redirect_dir=follow" or (option == "redirect_dir=off"
                                           and redirect_always_follow(guest)):
        expected = 0
    ovl = Overlay(guest, "ro", [lower, second], None, metacopy="on", **CONFLICTS[option])
    assert ovl.mount() == expected


@pytest.mark.upper_fs("ext4")
def test_metacopy_alone_enables_redirect_dir(guest, lower, make_overlay):
    """Commit d47748e5ae5a: "metacopy=on imply redirect_dir=on". overlayfs.rst
    "redirect_dir": when it is disabled "rename(2) on a lower or merged directory will
    fail with EXDEV"; with it, the directory is copied up and gets
    trusted.overlay.redirect. An overlay mounted with redirect_dir=off gets EXDEV; one
    with metacopy=on alone renames the directory and records the redirect."""
    make_tree(guest, f"{lower}/d", {"x": b"x"})
    plain = make_overlay("plain", redirect_dir="off")
    assert plain.mount() == 0
    assert guest.rename(plain.path("d"), plain.path("d2")) == errno.EXDEV
    ovl = make_overlay(metacopy="on")
    assert ovl.mount() == 0
    assert guest.rename(ovl.path("d"), ovl.path("d2")) == 0
    assert "redirect" in ovl.upper_xattrs("d2")
    assert guest.must.read_file(ovl.path("d2/x")) == b"x"


@pytest.mark.known_issue(
    "before v6.5 show_options() prints the redirect_dir mode string, which the implied "
    "redirect_dir=on of metacopy=on never updates (it sets only the redirect_dir and "
    "redirect_follow booleans); Amir Goldstein's \"ovl: store enum redirect_mode in "
    "config instead of a string\" (June 2023, v6.5): \"The displayed mode reflects the "
    "effective mode\"", fixed="6.5", commit="af5f2396b671")
@pytest.mark.upper_fs("ext4")
def test_metacopy_alone_shows_redirect_dir_on_in_mounts(guest, make_overlay):
    """Commit d47748e5ae5a: "metacopy=on imply redirect_dir=on"; /proc/self/mounts shows the
    options that differ from the defaults, so where redirect_dir is off by default (the
    module's redirect_dir parameter, Debian's CONFIG_OVERLAY_FS_REDIRECT_DIR unset) the line
    of a metacopy=on mount carries redirect_dir=on."""
    if guest.must.read_file("/sys/module/overlay/parameters/redirect_dir").strip() == b"Y":
        pytest.skip("redirect_dir is on by default: /proc/self/mounts does not show it")
    ovl = make_overlay(metacopy="on")
    assert ovl.mount() == 0
    options = mounts_line(guest, ovl.merged).split()[3].split(",")
    assert "metacopy=on" in options
    assert "redirect_dir=on" in options


# -- metacopy files the mount cannot follow ----------------------------------------------------

def test_metacopy_off_refuses_metacopy_files(guest, upper, lower_fs):
    """Commit 9d3dfea3d35a: "Do not follow metacopy origin if we find a metacopy only inode
    and metacopy feature is not enabled for that mount" (reference scenario 20: EPERM,
    "refusing to follow metacopy origin"). Mounted again with metacopy=off over the same
    dirs (a raw MS_REMOUNT would ignore the options), stat and open of the metacopy file
    fail with EPERM; the lower's data is never exposed as the file's; umount is clean."""
    ovl = overlay(guest, upper, [lower_fs.path()], metacopy="on")
    assert ovl.mount() == 0
    assert guest.chown(ovl.path("f"), 1000, 1000) == 0
    assert ovl.umount() == 0
    off = overlay(guest, upper, [lower_fs.path()], metacopy="off")
    assert off.mount() == 0
    with expect_kmsg(guest, "refusing to follow metacopy origin for (%pd2)"):
        assert guest.stat(off.path("f")) == errno.EPERM
        assert guest.open(off.path("f"), os.O_RDONLY) == errno.EPERM
    start = guest.must.kmsg_seq()
    assert off.umount() == 0
    assert not [line for line in guest.kmsg_lines(start)
                if "still in use" in line or "BUG" in line]


def test_metacopy_without_lower_data_is_an_error(guest, upper, lower_fs):
    """Reference scenario 21 / mainline ovl_lookup: a metacopy upper whose lower data is
    gone (lower file removed while unmounted) fails lookup with EIO ("metacopy with no
    lower data found - abort lookup"); seed 004 patch 08 used ESTALE for the same state
    ("Something is not right"). overlayfs.rst makes such offline lower changes undefined
    but promises no crash; the file's data is never served from anywhere else."""
    ovl = overlay(guest, upper, [lower_fs.path()], metacopy="on")
    assert ovl.mount() == 0
    assert guest.chown(ovl.path("f"), 1000, 1000) == 0
    assert ovl.umount() == 0
    guest.must.unlink(lower_fs.path("f"))
    assert ovl.mount() == 0
    with expect_kmsg(guest, "metacopy with no lower data found - abort lookup (%pd2)"):
        assert guest.stat(ovl.path("f")) == errno.EIO
        assert guest.open(ovl.path("f"), os.O_RDONLY) == errno.EIO


# -- data copy-up onto a failing upper ---------------------------------------------------------

def read_or_errno(guest, path):
    fd = guest.open(path, os.O_RDONLY)
    if not isinstance(fd, int):
        return fd
    data = guest.pread(fd, SIZE + 1, 0)
    guest.must.close(fd)
    return data


def assert_lower_bytes_or_error(result, where):
    if isinstance(result, bytes):
        assert result == DATA, (f"{where}: read {len(result)} bytes that are not the lower's "
                                f"(zeros: {result[:64].count(0) == 64})")


@pytest.mark.parametrize("fault", WHOLE_DEVICE_FAULTS)
def test_data_copy_up_onto_failing_upper(guest, upper, lower_fs, fault):
    """Commit 641089c1549d ("ovl: fsync after copy-up") with seed 004 patch 06: the data
    copy-up of a metacopy file writes the data, fsyncs it, and only then removes the
    metacopy xattr. With every write to the upper failing (the whole device: targeted
    faults need data sectors that a metacopy file does not have), open(O_WRONLY) returns
    EIO, the upper keeps trusted.overlay.metacopy (in memory and on disk, checked after
    remounting the upper), and reads return the lower's bytes or a clear error, never
    other bytes (zeros). Once healed, an open for write copies the data up."""
    ovl = overlay(guest, upper, [lower_fs.path()], metacopy="on")
    assert ovl.mount() == 0
    assert guest.chown(ovl.path("f"), 1000, 1000) == 0
    guest.must.sync()  # the metadata-only copy is on disk before the fault
    with upper.dev.failing(fault):
        assert guest.open(ovl.path("f"), os.O_WRONLY) == errno.EIO
        assert METACOPY in ovl.upper_xattrs("f")
        assert_lower_bytes_or_error(read_or_errno(guest, ovl.path("f")), "during the fault")
    assert_lower_bytes_or_error(read_or_errno(guest, ovl.path("f")), "after healing")
    # What reached the disk: unmount the overlay and the upper, mount both again.
    guest.must.close_all()
    assert ovl.umount() == 0
    upper.umount()
    upper.mount()
    assert guest.getxattr(ovl.upper_path("f"), "trusted.overlay.metacopy", False) == b""
    assert ovl.mount() == 0
    assert read_or_errno(guest, ovl.path("f")) == DATA
    fd = guest.must.open(ovl.path("f"), os.O_WRONLY)
    assert guest.close(fd) == 0
    assert METACOPY not in ovl.upper_xattrs("f")
    assert read_all(guest, ovl.upper_path("f")) == DATA


# -- readers racing the data copy-up -------------------------------------------------------------

RACE_FILES = 24
RACE_SIZE = 256 << 10


@pytest.mark.upper_fs("ext4")
def test_readers_racing_data_copy_up_see_lower_bytes(guest, upper):
    """Seed 004 patches 10/11: with the metacopy flag read locklessly, a reader must never
    perceive "the effects of clearing of metacopy flag but not effects of preceeding
    operations" (the data copy-up): readers doing open/pread/fstat/stat while a writer's
    open(O_WRONLY) copies the same file's data up never read bytes other than the lower's
    (zeros) and never see an st_blocks that is neither the lower's nor the finished upper
    copy's. Bounded in time; the order and the writer's delays come from
    OVH_RACE_SEED (default 4)."""
    seed = int(os.environ.get("OVH_RACE_SEED", "4"))
    names = [f"r{i:02d}" for i in range(RACE_FILES)]
    lfs = LowerFs(guest, {n: pattern(RACE_SIZE, salt=i) for i, n in enumerate(names)})
    ovl = overlay(guest, upper, [lfs.path()], metacopy="on")
    assert ovl.mount() == 0
    for n in names:
        assert guest.chown(ovl.path(n), 1000, 1000) == 0
    res = guest.run(["/usr/bin/python3", RACE_SCRIPT, "--merged", ovl.path(), "--lower",
                     lfs.path(), "--upper", ovl.upper_path(), "--seed", seed, "--seconds", 60,
                     *names], timeout=150)
    result = json.loads(res.stdout)
    print(f"copyup_race: {result}")
    assert result["errors"] == []
    assert result["rounds"] >= 4, f"only {result['rounds']} rounds ran (seed {seed})"
    assert result["bad_data"] == [], f"seed {seed}"
    assert result["bad_blocks"] == [], f"seed {seed}"
    assert result["not_copied_up"] == []
    assert result["reads"] >= result["rounds"]
