"""readdir of merged directories.

Sources: Documentation/filesystems/overlayfs.rst,
- "readdir": "When a 'readdir' request is made on a merged directory, the upper and lower
  directories are each read and the name lists merged in the obvious way (upper is read
  first, then lower - entries that already exist are not re-added).  This merged name list
  is cached in the 'struct file' and so remains as long as the file is kept open."  "A
  seekdir to the start of the directory (offset 0) followed by a readdir will cause the
  cache to be discarded and rebuilt."
- "whiteouts and opaque directories": a whiteout's lower name "is ignored, and the
  whiteout itself is also hidden".
- "Multiple lower layers": "lower1 will be the top, lower2 the middle and lower3 the bottom
  layer."

So every name of the merged directory comes exactly once (getdents(2) as os.scandir reads
it), from the topmost layer that has it, whiteouts and their names never.
"""

import os

import pytest

from overlay_harness import create_file, make_tree, read_tree

pytestmark = [pytest.mark.readdir, pytest.mark.upper_fs("ext4", "xfs")]


def names(guest, path):
    """The names getdents(2) returns, in its order, duplicates kept."""
    return [name for name, _ino in guest.must.scandir(path)]


def test_merged_directory_lists_every_name_once(guest, make_overlay):
    """Two lower layers and the upper share some names and not others; some lower names are
    removed through the overlay. The listing holds each remaining name once, with the
    content of its topmost layer, and none of the removed ones; the same after mounting
    again."""
    top = make_tree(guest, f"{guest.scratch}/top", {
        "d/common": b"top common", "d/top_only": b"top", "d/gone_top": b"x", "d/both": b"top both"})
    bottom = make_tree(guest, f"{guest.scratch}/bottom", {
        "d/common": b"bottom common", "d/bottom_only": b"bottom", "d/gone_bottom": b"x",
        "d/both": b"bottom both", "d/sub/s": b"s"})
    ovl = make_overlay(lowers=[top, bottom])
    assert ovl.mount() == 0
    fd = guest.must.open(ovl.path("d/common"), os.O_WRONLY | os.O_TRUNC)
    guest.must.write(fd, b"upper common")
    guest.must.close(fd)
    assert create_file(guest, ovl.path("d/upper_only"), b"upper") == 0
    assert guest.unlink(ovl.path("d/gone_top")) == 0
    assert guest.unlink(ovl.path("d/gone_bottom")) == 0
    want = [("both", b"top both"), ("bottom_only", b"bottom"), ("common", b"upper common"),
            ("sub", "dir"), ("sub/s", b"s"), ("top_only", b"top"), ("upper_only", b"upper")]
    for when in ("after the changes", "after mounting again"):
        listed = names(guest, ovl.path("d"))
        assert sorted(listed) == sorted(set(listed)), f"{when}: listed twice: {listed}"
        assert read_tree(guest, ovl.path("d")) == want, when
        if when == "after the changes":
            assert ovl.mount_again() == 0


LARGE = 1500


def test_large_merged_directory_lists_every_name_once(guest, make_overlay):
    """A lower directory of 1500 names (many getdents(2) calls), a third of them removed
    and 300 names added through the overlay: every remaining name once, none removed, the
    same after mounting again."""
    lower = f"{guest.scratch}/big"
    guest.run(["python3", "-I", "-c", "import os, sys\nos.makedirs(sys.argv[1] + '/d')\n"
               f"for i in range({LARGE}): open(f'{{sys.argv[1]}}/d/n{{i:04}}', 'w').close()",
               lower])
    ovl = make_overlay(lowers=[lower])
    assert ovl.mount() == 0
    removed = {f"n{i:04}" for i in range(0, LARGE, 3)}
    added = {f"u{i:03}" for i in range(300)}
    for name in sorted(removed):
        assert guest.unlink(ovl.path(f"d/{name}")) == 0
    for name in sorted(added):
        assert create_file(guest, ovl.path(f"d/{name}"), b"") == 0
    want = sorted({f"n{i:04}" for i in range(LARGE)} - removed | added)
    for when in ("after the changes", "after mounting again"):
        assert sorted(names(guest, ovl.path("d"))) == want, when
        if when == "after the changes":
            assert ovl.mount_again() == 0


def test_rewinding_an_open_merged_directory_rebuilds_its_list(guest, make_overlay, lower):
    """The merged list is cached in the open file; a seek to offset 0 and a new read
    discard it and rebuild it: names made and removed since the first read show on the
    open fd after the rewind."""
    extra = make_tree(guest, f"{guest.scratch}/extra", {"g": b"g"})
    ovl = make_overlay(lowers=[lower, extra])
    assert ovl.mount() == 0
    fd = guest.must.open(ovl.path(), os.O_RDONLY | os.O_DIRECTORY)
    assert guest.must.listdir(fd) == ["f", "g"]
    assert create_file(guest, ovl.path("new"), b"") == 0
    assert guest.unlink(ovl.path("g")) == 0
    assert guest.must.listdir(fd) == ["f", "new"]   # listdir(fd) seeks to 0 first
