"""Renaming directories: EXDEV, redirects, and what a remount shows.

Sources: Documentation/filesystems/overlayfs.rst, "renaming directories":
- "When renaming a directory that is on the lower layer or merged (i.e. the directory was
  not created on the upper layer to start with) overlayfs can handle it in two different
  ways: 1. return EXDEV error ... This is the default behavior.  2. If the "redirect_dir"
  feature is enabled, then the directory will be copied up (but not the contents).  Then
  the "trusted.overlay.redirect" extended attribute is set to the path of the original
  location from the root of the overlay.  Finally the directory is moved to the new
  location."
- Mount options: "redirect_dir=on": "Redirects are enabled."; "redirect_dir=follow":
  "Redirects are not created, but followed."; "redirect_dir=nofollow": "Redirects are not
  created and not followed"; "redirect_dir=off": redirects are not created (followed or not
  by the kernel's redirect_always_follow; 6.1 and 7.x word it differently, both create none).
- "Non-standard behavior", 1) "redirect_dir": "If this feature is disabled, then rename(2)
  on a lower or merged directory will fail with EXDEV".

A moved directory keeps its lower contents: the redirect is how the new name finds them,
also after the overlay is mounted again. (For a rename within one directory the kernel
stores the old name alone, relative; only a move to another directory is checked for the
absolute path the document describes.)
"""

import errno

import pytest

from overlay_harness import WHOLE_DEVICE_FAULTS, create_file, make_tree, read_tree

pytestmark = [pytest.mark.rename, pytest.mark.upper_fs("ext4", "xfs")]

LOWER = {"d/a": b"lower a", "d/sub/b": b"lower b", "e/x": b"lower x", "t/": None,
         "f": b"lower f"}
REDIRECT = "trusted.overlay.redirect"


@pytest.fixture
def lower_dir(guest):
    return make_tree(guest, f"{guest.scratch}/rlower", LOWER)


def subtree(guest, root, rel):
    return read_tree(guest, f"{root}/{rel}")


def test_renaming_a_lower_or_merged_directory_without_redirect_dir_is_exdev(
        guest, make_overlay, lower_dir):
    """redirect_dir=off: rename(2) of a lower directory and of a merged one (a lower
    directory with a new upper file) fails with EXDEV and changes nothing; a directory
    made on the upper and a lower file rename normally."""
    ovl = make_overlay(lowers=[lower_dir], redirect_dir="off")
    assert ovl.mount() == 0
    assert create_file(guest, ovl.path("e/y"), b"upper y") == 0
    assert guest.rename(ovl.path("d"), ovl.path("d2")) == errno.EXDEV
    assert guest.rename(ovl.path("e"), ovl.path("e2")) == errno.EXDEV
    assert guest.mkdir(ovl.path("u")) == 0
    assert guest.rename(ovl.path("u"), ovl.path("u2")) == 0
    assert guest.rename(ovl.path("f"), ovl.path("f2")) == 0
    tree = dict(read_tree(guest, ovl.path()))
    assert {"d", "d/a", "d/sub/b", "e/x", "e/y", "u2", "f2"} <= set(tree)
    assert not {"d2", "e2", "u", "f"} & set(tree)
    assert tree["f2"] == b"lower f"


MOVES = {"same_dir": ("d", "d2"), "other_dir": ("d", "t/d3")}
# redirect_dir=on, or metacopy=on alone: commit d47748e5ae5a, "metacopy=on imply redirect_dir=on"
ENABLED_BY = {"redirect_dir=on": {"redirect_dir": "on"}, "metacopy=on": {"metacopy": "on"}}


@pytest.mark.parametrize("enabled_by", [
    "redirect_dir=on", pytest.param("metacopy=on", marks=pytest.mark.metacopy)])
@pytest.mark.parametrize("move", list(MOVES))
def test_renamed_lower_directory_keeps_its_contents_with_redirect_dir(guest, make_overlay,
                                                                      lower_dir, move, enabled_by):
    """redirect_dir=on (or metacopy=on, which implies it): rename(2) of a lower directory
    returns 0; the new name shows the lower contents, the old name is gone, the upper copy
    carries trusted.overlay.redirect (for a move to another directory: "/d", the original
    location from the overlay root); all of it again after mounting again."""
    old, new = MOVES[move]
    ovl = make_overlay(lowers=[lower_dir], **ENABLED_BY[enabled_by])
    assert ovl.mount() == 0
    want = subtree(guest, lower_dir, old)
    assert guest.rename(ovl.path(old), ovl.path(new)) == 0
    for when in ("after rename", "after mounting again"):
        assert subtree(guest, ovl.path(), new) == want, when
        assert guest.stat(ovl.path(old)) == errno.ENOENT, when
        redirect = guest.getxattr(ovl.upper_path(new), REDIRECT, False)
        assert isinstance(redirect, bytes), f"{when}: no {REDIRECT} on {new}: {redirect}"
        if move == "other_dir":
            assert redirect == b"/d", when
        if when == "after rename":
            assert ovl.mount_again() == 0


def test_redirects_are_followed_with_follow_and_not_with_nofollow(guest, make_overlay,
                                                                  lower_dir):
    """A directory renamed under redirect_dir=on, then the overlay mounted with
    redirect_dir=follow: the redirect is followed (the lower contents show) but no new one
    is made (renaming another lower directory is EXDEV); mounted with
    redirect_dir=nofollow: not followed (no lower entry shows through the renamed directory;
    the document does not say whether looking it up is an error, and 6.1 refuses it) and
    none made."""
    ovl = make_overlay(lowers=[lower_dir], redirect_dir="on")
    assert ovl.mount() == 0
    assert guest.rename(ovl.path("d"), ovl.path("d2")) == 0
    want = subtree(guest, lower_dir, "d")
    assert ovl.mount_again(redirect_dir="follow") == 0
    assert subtree(guest, ovl.path(), "d2") == want
    assert guest.stat(ovl.path("d")) == errno.ENOENT
    assert guest.rename(ovl.path("e"), ovl.path("e2")) == errno.EXDEV
    assert ovl.mount_again(redirect_dir="nofollow") == 0
    shown = guest.scandir(ovl.path("d2"))
    assert not isinstance(shown, list) or shown == [], f"redirect followed: {shown}"
    assert guest.stat(ovl.path("d")) == errno.ENOENT
    assert guest.rename(ovl.path("e"), ovl.path("e2")) == errno.EXDEV


@pytest.mark.parametrize("fault", WHOLE_DEVICE_FAULTS)
def test_renaming_a_directory_on_a_failing_upper_loses_no_lower_entry(guest, upper,
                                                                      make_overlay,
                                                                      lower_dir, fault):
    """redirect_dir=on, rename(2) of a lower directory while every write to the upper fails,
    then the device healed and the upper filesystem and the overlay mounted again. The
    rename changes metadata in memory only, so no result is fixed for it; the tree must be
    consistent: if the rename failed, the directory is at its old name with all its lower
    entries; if it returned 0, at exactly one of the two names, with all of them. A rename
    done before the fault (and synced) stays done."""
    ovl = make_overlay(lowers=[lower_dir], redirect_dir="on")
    assert ovl.mount() == 0
    want = subtree(guest, lower_dir, "d")
    assert guest.rename(ovl.path("e"), ovl.path("e2")) == 0
    guest.must.sync()
    with upper.dev.failing(fault):
        result = guest.rename(ovl.path("d"), ovl.path("d2"))
    assert ovl.mount_again(upper_fs_too=True) == 0
    present = [name for name in ("d", "d2") if guest.stat(ovl.path(name)) != errno.ENOENT]
    assert len(present) == 1, f"rename returned {result}; after the remount: {present}"
    if result != 0:
        assert present == ["d"], f"rename failed ({result}), yet the directory moved"
    assert subtree(guest, ovl.path(), present[0]) == want
    assert subtree(guest, ovl.path(), "e2") == subtree(guest, lower_dir, "e")
    assert guest.stat(ovl.path("e")) == errno.ENOENT
