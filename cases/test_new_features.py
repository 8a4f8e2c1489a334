"""Features newer than 6.1: data-only lower layers, the new mount API's layer options, layers
given as file descriptors. Each case is skipped, naming the feature, on a kernel older than
the version the document gives (6.1's overlayfs.rst has none of these sections).

Source: Documentation/filesystems/overlayfs.rst of 7.3,
- "Data-only lower layers" (added in v6.5): "an overlayfs regular file may be a composition
  of information from up to three different layers: 1) metadata from a file in the upper
  layer 2) st_ino and st_dev object identifier from a file in a lower layer 3) data from a
  file in another lower layer (further below)"; "any number of lowermost layers may be
  defined as "data-only" lower layers, using double colon ("::") separators"; "The paths of
  files in the "data-only" lower layers are not visible in the merged overlayfs directories
  and the metadata and st_ino/st_dev of files in the "data-only" lower layers are not
  visible in overlayfs inodes."  "Only the data of the files in the "data-only" lower layers
  may be visible when a "metacopy" file in one of the lower layers above it, has a
  "redirect" to the absolute path of the "lower data" file in the "data-only" lower layer."
  (The metacopy feature is enabled explicitly: 7.x's document adds that a data-only layer
  alone is enough, 6.12's does not, and 6.12 refuses it.)
- "Since kernel version v6.8, directory names containing colons can also be configured as
  lower layer using the "lowerdir+" mount options and the fsconfig syscall from new mount
  api"; "colons in lower layer directory names will be escaped as an octal characters
  (\\072) when displayed in /proc/self/mountinfo."  "Since kernel version v6.8, "data-only"
  lower layers can also be added using the "datadir+" mount options".
- "Specifying layers via file descriptors": "Since kernel v6.13, overlayfs supports
  specifying layers via file descriptors ... for the "datadir+", "lowerdir+", "upperdir",
  and "workdir+" mount options with the fsconfig syscall" (the example passes "workdir").
"""

import os

import pytest

from overlay_harness import Overlay, create_file, make_tree, read_tree, require_version

pytestmark = [pytest.mark.new_features]

DATA = b"data from the data-only layer\n" * 100
UID, GID = 1234, 5678


def data_only_layers(guest):
    """l1: `f`, a metacopy file (no data, the data's size, 1234:5678) redirected to
    /blobs/b1; do: the data-only layer with blobs/b1 and a file no merged directory may
    show."""
    do = make_tree(guest, f"{guest.scratch}/do", {"blobs/b1": DATA, "only_in_do": b"x"})
    l1 = make_tree(guest, f"{guest.scratch}/l1", {"f": b""})
    g = guest.must
    g.truncate(f"{l1}/f", len(DATA))
    g.chown(f"{l1}/f", UID, GID)
    g.setxattr(f"{l1}/f", "trusted.overlay.metacopy", b"")
    g.setxattr(f"{l1}/f", "trusted.overlay.redirect", b"/blobs/b1")
    return l1, do


def check_composition(guest, merged, l1):
    """The merged view: only l1's name; f's data from the data-only layer, its metadata
    and st_ino from l1 (all layers on one filesystem: the underlying st_ino)."""
    assert guest.must.listdir(merged) == ["f"]
    assert guest.must.read_file(f"{merged}/f") == DATA
    st, meta = guest.must.stat(f"{merged}/f"), guest.must.stat(f"{l1}/f")
    assert (st["st_uid"], st["st_gid"], st["st_size"]) == (UID, GID, len(DATA))
    assert st["st_ino"] == meta["st_ino"]


def fsmount(guest, params, name):
    """Mount an overlay through fsopen/fsconfig/fsmount/move_mount; unmounted at the end."""
    merged = f"{guest.scratch}/{name}.merged"
    guest.must.makedirs(merged)
    result = guest.fsmount("overlay", params, merged)
    if result == 0:
        guest.defer(guest.umount2, merged, 0)
    return result, merged


def test_data_only_lower_layer_gives_data_to_a_metacopy_file(guest):
    """lowerdir=l1::do, metacopy=on, read-only: the metacopy file of l1 reads the data of
    the file its redirect names in the data-only layer, keeps l1's metadata, and nothing of
    the data-only layer is listed."""
    require_version(guest, (6, 5), "data-only lower layers")
    l1, do = data_only_layers(guest)
    ovl = Overlay(guest, "dataonly", [f"{l1}::{do}"], metacopy="on")
    assert ovl.mount() == 0
    check_composition(guest, ovl.path(), l1)


def test_datadir_plus_adds_a_data_only_layer(guest):
    """The same composition mounted with the new mount API: lowerdir+ l1, datadir+ do."""
    require_version(guest, (6, 8), "the lowerdir+ and datadir+ mount options")
    l1, do = data_only_layers(guest)
    result, merged = fsmount(guest, [["lowerdir+", l1], ["datadir+", do], ["metacopy", "on"]],
                             "datadir")
    assert result == 0
    check_composition(guest, merged, l1)


@pytest.mark.known_issue(
    "a layer added with lowerdir+ is shown in /proc/self/mountinfo as its own lowerdir+= option "
    "with the colons as they are: ovl_show_options() (fs/overlayfs/params.c, 6.12 and 7.3 alike) "
    "passes it to seq_show_option(), which escapes commas, equals signs, whitespace and "
    "backslashes, not colons; the mount itself works", since="6.8")
def test_lowerdir_plus_takes_a_directory_name_with_colons(guest):
    """lowerdir+ with a directory named a:lower::dir, over a second lower layer: the
    overlay merges both, and /proc/self/mountinfo shows the colons as \\072."""
    require_version(guest, (6, 8), "the lowerdir+ mount option")
    top = make_tree(guest, f"{guest.scratch}/a:lower::dir", {"d/top": b"top"})
    bottom = make_tree(guest, f"{guest.scratch}/bottom", {"d/bottom": b"bottom"})
    result, merged = fsmount(guest, [["lowerdir+", top], ["lowerdir+", bottom]], "colons")
    assert result == 0
    assert read_tree(guest, merged) == [("d", "dir"), ("d/bottom", b"bottom"), ("d/top", b"top")]
    line = next(x for x in guest.must.read_file("/proc/self/mountinfo").decode().splitlines()
                if x.split()[4] == merged)
    assert "a\\072lower\\072\\072dir" in line, line


@pytest.mark.upper_fs("ext4")
def test_layers_given_as_file_descriptors(guest, upper):
    """lowerdir+, upperdir and workdir given as open directory fds (FSCONFIG_SET_FD): the
    overlay shows the lower's files, and a file made through it lands in the upper
    directory the fd named."""
    require_version(guest, (6, 13), "layers given as file descriptors")
    lower = make_tree(guest, f"{guest.scratch}/fdlower", {"f": b"lower f"})
    dirs = {key: upper.path(key) for key in ("upperdir", "workdir")}
    fds = {}
    for key, path in [("lowerdir+", lower), *dirs.items()]:
        guest.must.makedirs(path)
        fds[key] = guest.must.open(path, os.O_RDONLY | os.O_DIRECTORY)
    result, merged = fsmount(guest, list(fds.items()), "fds")
    assert result == 0
    assert guest.must.read_file(f"{merged}/f") == b"lower f"
    assert create_file(guest, f"{merged}/new", b"new") == 0
    assert guest.must.read_file(f"{dirs['upperdir']}/new") == b"new"
