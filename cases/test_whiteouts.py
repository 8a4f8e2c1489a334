"""Whiteouts and opaque directories.

Sources: Documentation/filesystems/overlayfs.rst,
- "whiteouts and opaque directories": "In order to support rm and rmdir without changing
  the lower filesystem, an overlay filesystem needs to record in the upper filesystem that
  files have been removed.  This is done using whiteouts and opaque directories
  (non-directories are always opaque)."  "A whiteout is created as a character device with
  0/0 device number.  When a whiteout is found in the upper level of a merged directory,
  any matching name in the lower level is ignored, and the whiteout itself is also
  hidden."  "A directory is made opaque by setting the xattr "trusted.overlay.opaque" to
  "y".  Where the upper filesystem contains an opaque directory, any directory in the
  lower filesystem with the same name is ignored."  (7.x adds a second form, a zero-size
  file with "trusted.overlay.whiteout", and says: "These alternative whiteouts are never
  created by overlayfs".)
- "Directories": "If a given name appears in both upper and lower filesystems and refers
  to a non-directory in either, then the lower object is hidden".
- "Changes to underlying filesystems": "Offline changes, when the overlay is not mounted,
  are allowed to the upper tree."

Each case looks twice: through the dentries its calls left, and after the overlay is
mounted again (lookups from what the upper layer holds). Under faults, what the documents
promise is an error to the caller where the call fails, and a merged tree that stays
consistent: every lower entry still there unless its removal returned 0, nothing listed
twice or half made.
"""

import errno
import os
import stat

import pytest

from overlay_harness import WHOLE_DEVICE_FAULTS, create_file, make_tree, read_tree, require_version

pytestmark = [pytest.mark.whiteout, pytest.mark.upper_fs("ext4", "xfs")]

LOWER = {"f": b"lower f", "d/a": b"lower a", "d/b": b"lower b", "d/sub/c": b"lower c",
         "e/x": b"lower x"}
OPAQUE = "trusted.overlay.opaque"


@pytest.fixture
def lower_dir(guest):
    return make_tree(guest, f"{guest.scratch}/wlower", LOWER)


@pytest.fixture
def ovl(guest, make_overlay, lower_dir):
    ovl = make_overlay(lowers=[lower_dir])
    assert ovl.mount() == 0
    return ovl


def is_whiteout(st):
    return stat.S_ISCHR(st["st_mode"]) and st["st_rdev"] == 0


def lower_view(guest, lower_dir, *removed):
    """The lower tree as the overlay should show it with `removed` (and what is under them)
    gone."""
    gone = lambda p: any(p == r or p.startswith(r + "/") for r in removed)  # noqa: E731
    return [e for e in read_tree(guest, lower_dir) if not gone(e[0])]


@pytest.mark.parametrize("rel", ["f", "d/a"])
def test_removed_lower_file_is_hidden_by_a_whiteout(guest, ovl, lower_dir, rel):
    """rm of a lower file, at the root and in a merged directory: the name is gone from
    the overlay (stat ENOENT, not listed), the upper holds a 0/0 character device in its
    place, the lower file is unchanged; the same after mounting again."""
    parent = os.path.dirname(rel)
    assert guest.unlink(ovl.path(rel)) == 0
    for when in ("after unlink", "after mounting again"):
        assert guest.stat(ovl.path(rel)) == errno.ENOENT, when
        assert os.path.basename(rel) not in guest.must.listdir(ovl.path(parent)), when
        assert is_whiteout(guest.must.lstat(ovl.upper_path(rel))), when
        assert read_tree(guest, ovl.path()) == lower_view(guest, lower_dir, rel), when
        if when == "after unlink":
            assert ovl.mount_again() == 0
    assert guest.must.read_file(ovl.lower_path(rel)) == LOWER[rel]


RECREATE = {
    "creat": (lambda g, p: create_file(g, p, b"new"), b"new"),
    "mkdir": (lambda g, p: g.mkdir(p), "dir"),
    "symlink": (lambda g, p: g.symlink("elsewhere", p), "-> elsewhere"),
}


@pytest.mark.parametrize("how", list(RECREATE))
def test_a_removed_name_can_be_made_again(guest, ovl, lower_dir, how):
    """A whiteout stands for "removed", so the name is free again: after rm of a lower
    file, creating a file, a directory or a symlink by that name succeeds (the whiteout is
    replaced) and shows the new object, also after mounting again; the rest of the tree
    is the lower's."""
    make, what = RECREATE[how]
    assert guest.unlink(ovl.path("d/a")) == 0
    assert make(guest, ovl.path("d/a")) == 0
    want = sorted(lower_view(guest, lower_dir, "d/a") + [("d/a", what)], key=lambda e: e[0])
    assert read_tree(guest, ovl.path()) == want
    assert ovl.mount_again() == 0
    assert read_tree(guest, ovl.path()) == want
    assert not is_whiteout(guest.must.lstat(ovl.upper_path("d/a")))


def test_directory_removed_and_made_again_is_opaque(guest, ovl, lower_dir):
    """rm -r of a merged directory, then mkdir of the same name: rmdir succeeds once every
    lower entry is removed (whiteouts do not count as entries), the new directory is empty,
    carries trusted.overlay.opaque = "y" in the upper, and stays empty after mounting again:
    the lower directory's entries never come back. A file made in it is the only entry."""
    for rel in ("d/a", "d/b", "d/sub/c"):
        assert guest.unlink(ovl.path(rel)) == 0
    assert guest.rmdir(ovl.path("d/sub")) == 0
    assert guest.rmdir(ovl.path("d")) == 0
    assert guest.stat(ovl.path("d")) == errno.ENOENT
    assert guest.mkdir(ovl.path("d")) == 0
    assert guest.must.listdir(ovl.path("d")) == []
    assert guest.getxattr(ovl.upper_path("d"), OPAQUE, False) == b"y"
    assert ovl.mount_again() == 0
    assert guest.must.listdir(ovl.path("d")) == []
    assert create_file(guest, ovl.path("d/a"), b"new") == 0
    assert ovl.mount_again() == 0
    assert read_tree(guest, ovl.path("d")) == [("a", b"new")]


def test_rmdir_of_a_merged_directory_with_lower_entries_is_enotempty(guest, ovl):
    """A merged directory whose lower entries are still visible is not empty: rmdir returns
    ENOTEMPTY and the entries stay."""
    assert create_file(guest, ovl.path("e/y"), b"upper y") == 0
    assert guest.rmdir(ovl.path("e")) == errno.ENOTEMPTY
    assert guest.unlink(ovl.path("e/y")) == 0
    assert guest.rmdir(ovl.path("e")) == errno.ENOTEMPTY
    assert guest.must.listdir(ovl.path("e")) == ["x"]


def test_whiteouts_and_opaque_directories_made_offline_are_honoured(guest, make_overlay,
                                                                   lower_dir):
    """The reading side, with the upper prepared while the overlay is not mounted (allowed:
    "Offline changes ... are allowed to the upper tree"): a 0/0 character device hides the
    lower file of that name and is itself hidden; a directory with trusted.overlay.opaque =
    "y" hides the lower directory's entries; an upper file hides a lower directory of the
    same name."""
    ovl = make_overlay(lowers=[lower_dir])
    upper = ovl.upper_path()
    guest.must.makedirs(f"{upper}/d")
    guest.must.setxattr(f"{upper}/d", OPAQUE, b"y")
    guest.must.write_file(f"{upper}/d/u", b"upper u")
    guest.run(["mknod", f"{upper}/f", "c", "0", "0"])
    guest.must.write_file(f"{upper}/e", b"upper e")
    assert ovl.mount() == 0
    assert read_tree(guest, ovl.path()) == [("d", "dir"), ("d/u", b"upper u"), ("e", b"upper e")]


def test_alternative_whiteouts_in_a_lower_layer_hide_the_layers_below(guest, make_overlay,
                                                                     lower_dir):
    """The second form of whiteout (v6.7, commit bc8df7a3dc03 "ovl: Add an alternative type
    of whiteout"), as a tool that generates lower layers writes it: in a directory marked
    trusted.overlay.opaque = "x", a zero-size regular file with trusted.overlay.whiteout
    hides the name in the layers below and is itself hidden; the directory is still merged
    (not opaque), and the other names of the layers below show."""
    require_version(guest, (6, 7), "alternative whiteouts (trusted.overlay.whiteout)")
    top = make_tree(guest, f"{guest.scratch}/xlower", {"d/a": b""})
    guest.must.setxattr(f"{top}/d", OPAQUE, b"x")
    guest.must.setxattr(f"{top}/d/a", "trusted.overlay.whiteout", b"")
    ovl = make_overlay(lowers=[top, lower_dir])
    assert ovl.mount() == 0
    assert guest.stat(ovl.path("d/a")) == errno.ENOENT
    assert guest.must.listdir(ovl.path("d")) == ["b", "sub"]
    assert guest.must.read_file(ovl.path("d/b")) == b"lower b"


@pytest.mark.parametrize("fault", WHOLE_DEVICE_FAULTS)
def test_removing_lower_entries_on_a_failing_upper_loses_nothing_else(guest, upper, ovl,
                                                                      lower_dir, fault):
    """rm of lower files and rmdir of a lower directory while every write to the upper
    fails (the whole device: flakey error_writes, or dm-error, which fails reads too), then
    the device healed and the upper filesystem and the overlay mounted again. The calls
    only change metadata in memory, so the documents fix no result for them; what they
    promise is a consistent tree: an entry whose removal failed is still there with its
    lower content, one whose removal returned 0 is either gone or still the lower's, what
    was removed and made before the fault (and synced) stays so, nothing is listed twice or
    unreadable."""
    assert guest.unlink(ovl.path("e/x")) == 0
    assert create_file(guest, ovl.path("e/y"), b"upper y") == 0
    guest.must.sync()
    removals = {"f": guest.unlink, "d/a": guest.unlink, "d/sub/c": guest.unlink,
                "d/sub": guest.rmdir}
    results = {}
    with upper.dev.failing(fault):
        for rel, call in removals.items():
            results[rel] = call(ovl.path(rel))
    assert ovl.mount_again(upper_fs_too=True) == 0
    tree = read_tree(guest, ovl.path())
    got = dict(tree)
    assert len(got) == len(tree), f"a name listed twice: {[rel for rel, _ in tree]}"
    assert got.pop("e/y", None) == b"upper y"
    lower = dict(lower_view(guest, lower_dir, "e/x"))
    for rel, what in lower.items():
        covering = [r for r in removals if rel == r or rel.startswith(r + "/")]
        if any(results[r] == 0 for r in covering):
            assert got.get(rel, what) == what, f"{rel}: removed, yet shows other content"
        else:
            assert got.get(rel) == what, f"{rel}: not removed ({results}), yet lost or changed"
    assert set(got) <= set(lower), f"names that should not be there: {set(got) - set(lower)}"
