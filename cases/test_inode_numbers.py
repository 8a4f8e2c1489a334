"""Inode numbers: st_ino, st_dev and d_ino, on one filesystem, with xino and without.

Source: Documentation/filesystems/overlayfs.rst, "Overlay objects" and its table "Inode
properties":
- "In the special case of all overlay layers on the same underlying filesystem, all objects
  will report an st_dev from the overlay filesystem and st_ino from the underlying
  filesystem."
- "On 64bit systems, even if all overlay layers are not on the same underlying filesystem,
  the same compliant behavior could be achieved with the "xino" feature."  "If all
  underlying filesystems support NFS file handles, the value of st_ino for overlay
  filesystem objects is not only unique, but also persistent over the lifetime of the
  filesystem."
- The table, columns Persistent st_ino / Uniform st_dev / st_ino == d_ino, for dir and
  !dir: "All layers on same fs" Y everywhere; "xino=on/auto" Y everywhere; "Layers not on
  same fs, xino=off": only uniform st_dev for directories and st_ino == d_ino for
  non-directories are Y (the N's promise nothing either way, so nothing is asserted there).
- "Non-standard behavior", 3) "xino": without it "the value of st_ino for filesystem
  objects may not be persistent and could change even while the overlay filesystem is
  mounted".

Persistent is checked across a copy-up and across mounting the overlay again; uniform as
"the overlay root's st_dev"; d_ino as getdents(2) gives it. The separate-filesystem layouts
put the lower layer on an ext4 of its own under an ext4 upper (both have 32-bit inode
numbers: free high bits for xino).
"""

import os
import stat

import pytest

from overlay_harness import LowerFs, make_tree

pytestmark = [pytest.mark.inode_numbers]

FILES = {"d/f": b"f", "d/sub/g": b"g", "h": b"h"}
OBJECTS = ["d", "d/f", "d/sub", "d/sub/g", "h"]


def observe(guest, ovl):
    """{rel: (st_ino, st_dev, d_ino, is a directory)} through the overlay, and the
    overlay's own st_dev."""
    out = {}
    for rel in OBJECTS:
        st = guest.must.lstat(ovl.path(rel))
        parent, name = os.path.split(rel)
        d_ino = dict(guest.must.scandir(ovl.path(parent)))[name]
        out[rel] = (st["st_ino"], st["st_dev"], d_ino, stat.S_ISDIR(st["st_mode"]))
    return out, guest.must.stat(ovl.path())["st_dev"]


def copy_up(guest, ovl):
    """Copy up the files and, on the way, their directories (open for write, no write)."""
    for rel in ("d/f", "d/sub/g", "h"):
        guest.must.close(guest.must.open(ovl.path(rel), os.O_WRONLY))


def check_layout(guest, ovl, persistent, uniform, d_ino_matches):
    """Observe before the copy-up, after it, and after mounting again; check the table's
    Y's: persistent/uniform/d_ino_matches are sets of "dir"/"!dir"."""
    seen = []
    for when in ("before copy-up", "after copy-up", "after mounting again"):
        if when == "after copy-up":
            copy_up(guest, ovl)
        elif when == "after mounting again":
            assert ovl.mount_again() == 0
        objs, root_dev = observe(guest, ovl)
        for rel, (ino, dev, d_ino, is_dir) in objs.items():
            kind = "dir" if is_dir else "!dir"
            if kind in uniform:
                assert dev == root_dev, f"{when}: {rel} st_dev {dev}, the overlay's {root_dev}"
            if kind in d_ino_matches:
                assert ino == d_ino, f"{when}: {rel} st_ino {ino}, d_ino {d_ino}"
        seen.append((when, objs))
    first = seen[0][1]
    for when, objs in seen[1:]:
        for rel, (ino, _dev, _d, is_dir) in objs.items():
            if ("dir" if is_dir else "!dir") in persistent:
                assert ino == first[rel][0], f"{rel}: st_ino {first[rel][0]} before copy-up, " \
                                             f"{ino} {when}"
    return first


EVERYTHING = {"dir", "!dir"}


@pytest.mark.upper_fs("ext4", "xfs")
def test_all_layers_on_one_filesystem(guest, upper, make_overlay):
    """Lower directory on the upper filesystem: every object has the overlay's st_dev, the
    underlying st_ino (the lower's until and after copy-up), equal to d_ino, persistent."""
    lower = make_tree(guest, upper.path("lower"), FILES)
    ovl = make_overlay(lowers=[lower])
    assert ovl.mount() == 0
    first = check_layout(guest, ovl, EVERYTHING, EVERYTHING, EVERYTHING)
    for rel in OBJECTS:
        assert first[rel][0] == guest.must.lstat(f"{lower}/{rel}")["st_ino"], rel


@pytest.fixture
def lower_fs(guest, upper):
    return LowerFs(guest, FILES)


@pytest.mark.upper_fs("ext4")
def test_xino_on_with_layers_on_two_filesystems(guest, make_overlay, lower_fs):
    """xino=on, lower on an ext4 of its own: like one filesystem, every object has the
    overlay's st_dev, st_ino equal to d_ino and persistent."""
    ovl = make_overlay(lowers=[lower_fs.path()], xino="on")
    assert ovl.mount() == 0
    check_layout(guest, ovl, EVERYTHING, EVERYTHING, EVERYTHING)


@pytest.mark.upper_fs("ext4")
def test_xino_off_directories_have_the_overlay_st_dev(guest, make_overlay, lower_fs):
    """xino=off, lower on an ext4 of its own: what the table still promises for
    directories, the overlay's st_dev, before and after copy-up and after mounting again."""
    ovl = make_overlay(lowers=[lower_fs.path()], xino="off")
    assert ovl.mount() == 0
    check_layout(guest, ovl, set(), {"dir"}, set())


@pytest.mark.upper_fs("ext4")
@pytest.mark.known_issue(
    "with layers on two filesystems and xino=off, readdir keeps the upper's own d_ino for a "
    "copied-up file while stat(2) reports its lower origin's st_ino: ovl_cache_update_ino() "
    "(fs/overlayfs/readdir.c) recalculates d_ino only when ovl_same_dev() (6.1, 6.12 and 7.3 "
    "alike), so the table's st_ino == d_ino for non-directories holds only before copy-up")
def test_xino_off_non_directories_have_st_ino_equal_to_d_ino(guest, make_overlay, lower_fs):
    """xino=off, lower on an ext4 of its own: what the table still promises for
    non-directories, st_ino equal to d_ino, before and after copy-up and after mounting
    again."""
    ovl = make_overlay(lowers=[lower_fs.path()], xino="off")
    assert ovl.mount() == 0
    check_layout(guest, ovl, set(), set(), {"!dir"})
