"""What overlayfs refuses, and what it falls back from, at mount time.

Each case drives one pr_err/pr_warn site of fs/overlayfs (docs/refusals.md lists them
all, per kernel) and asserts what the site promises as a value: the mount's errno, a
read-only mount, a feature shown off in /proc/self/mounts, or an option ignored, and
the message itself (expect_kmsg: any other error-level line still fails the case).

Sources:
- mount(2): EINVAL "source ... had an invalid superblock" / invalid options; ENOENT "a
  pathname was empty or had a nonexistent component".
- overlayfs.rst: "The upper filesystem ... must support the creation of trusted.* and/or
  user.* extended attributes"; "redirect_dir={off|nofollow|follow[*]} and nfs_export=on
  mount options conflict with metacopy=on, and will result in an error"; "the mount
  options index=off,nfs_export=on are conflicting for a read-write mount and will result
  in an error"; "Using an upper layer path and/or a workdir path that are already used by
  another overlay mount is not allowed and may fail with EBUSY. Using partially
  overlapping paths is not allowed and may fail with EBUSY"; volatile: "During next
  mount, overlay checks for this directory and refuses to mount if present".
- commit 2d2f2d7322ff "ovl: user xattr": userxattr disables redirect_dir and metacopy,
  an explicit one of them with it is an error.
- the messages themselves ("falling back to index=off", "mounting read-only",
  "useless in a non-upper mount, ignore").

Upper and work dirs live on the case's scratch tmpfs unless the case needs a block
filesystem (file handles and a UUID for index=on, chattr for an immutable workdir).
"""

import errno

import pytest

from overlay_harness import Filesystem, ScratchDevice, expect_kmsg, is_errno, make_tree, require_version

pytestmark = pytest.mark.refusals

MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096


def mount_options(guest, merged):
    """The options /proc/self/mounts shows for the mount at `merged`."""
    for line in guest.must.read_file("/proc/self/mounts").decode().splitlines():
        fields = line.split()
        if fields[1] == merged:
            return fields[3].split(",")
    raise AssertionError(f"{merged} is not mounted")


def raw_mount(guest, data, name="raw"):
    """mount(2) of an overlay with exactly `data`: 0 or the Errno; unmounted at the end."""
    merged = f"{guest.scratch}/{name}.merged"
    guest.must.makedirs(merged)
    result = guest.mount("overlay", merged, "overlay", 0, data)
    if result == 0:
        guest.defer(guest.must.umount2, merged, 0)
    return result


def dirs(guest, *names):
    paths = [f"{guest.scratch}/{n}" for n in names]
    for p in paths:
        guest.must.makedirs(p)
    return paths


def set_param(guest, name, value):
    """Set a parameter of the overlay module (they are 0644), restored at the end."""
    path = f"/sys/module/overlay/parameters/{name}"
    old = guest.must.read_file(path).strip()
    guest.must.write_file(path, value)
    guest.defer(guest.must.write_file, path, old)


def plain(guest, lower):
    """lowerdir=..., upperdir=..., workdir=... on the scratch tmpfs."""
    up, work = dirs(guest, "u", "w")
    return f"lowerdir={lower},upperdir={up},workdir={work}"


# -- mount options -----------------------------------------------------------------------------

UNKNOWN = ('unrecognized mount option "%s" or missing value', "Unknown parameter '%s'")

# (id, extra options, messages): each is refused with EINVAL (mount(2): invalid options;
# overlayfs.rst: the conflicts "will result in an error"). A message is a format string of
# the kernel's source, or a tuple of the wordings of the kernels this suite runs.
REFUSED_OPTIONS = [
    ("unknown", "bogus", [UNKNOWN]),
    ("bad-redirect-mode", "redirect_dir=bogus",
     [('bad mount option "redirect_dir=%s"', "Bad value for '%s'")]),
    ("metacopy-redirect-nofollow", "metacopy=on,redirect_dir=nofollow",
     ["conflicting options: metacopy=on,redirect_dir=%s"]),
    ("nfs_export-index-off", "nfs_export=on,index=off", ["conflicting options: nfs_export=on,index=off"]),
    ("nfs_export-metacopy", "nfs_export=on,metacopy=on", ["conflicting options: nfs_export=on,metacopy=on"]),
    ("userxattr-redirect", "userxattr,redirect_dir=on", ["conflicting options: userxattr,redirect_dir=%s"]),
    ("userxattr-metacopy", "userxattr,metacopy=on", ["conflicting options: userxattr,metacopy=on"]),
]


@pytest.mark.parametrize("extra,messages", [pytest.param(e, m, id=i) for i, e, m in REFUSED_OPTIONS])
def test_refused_option(guest, lower, extra, messages):
    """mount(2) fails with EINVAL for an option overlayfs does not know, a bad
    redirect_dir mode, and each documented conflict (overlayfs.rst; commit 2d2f2d7322ff
    for userxattr), and the kernel says which."""
    with expect_kmsg(guest, *messages):
        assert raw_mount(guest, f"{plain(guest, lower)},{extra}") == errno.EINVAL


def lowers(guest, n):
    return [make_tree(guest, f"{guest.scratch}/l{i}", {f"f{i}": b"x"}) for i in range(n)]


def test_missing_lowerdir_is_refused(guest):
    """Without lowerdir there is no overlay: EINVAL, "missing 'lowerdir'"."""
    up, work = dirs(guest, "u", "w")
    with expect_kmsg(guest, "missing 'lowerdir'"):
        assert raw_mount(guest, f"upperdir={up},workdir={work}") == errno.EINVAL


def test_missing_workdir_is_refused(guest, lower):
    """overlayfs.rst: "The "workdir" needs to be an empty directory on the same filesystem
    as upperdir"; upperdir without it: EINVAL, "missing 'workdir'"."""
    up, = dirs(guest, "u")
    with expect_kmsg(guest, "missing 'workdir'"):
        assert raw_mount(guest, f"lowerdir={lower},upperdir={up}") == errno.EINVAL


def test_single_lower_without_upper_is_refused(guest, lower):
    """overlayfs.rst "Multiple lower layers": upperdir and workdir may be omitted with
    several lower layers; one lower layer alone is no overlay: EINVAL."""
    with expect_kmsg(guest, "at least 2 lowerdir are needed while upperdir nonexistent"):
        assert raw_mount(guest, f"lowerdir={lower}") == errno.EINVAL


def test_nonexistent_lowerdir_is_refused(guest):
    """mount(2) ENOENT: "A pathname was empty or had a nonexistent component"."""
    up, work = dirs(guest, "u", "w")
    with expect_kmsg(guest, "failed to resolve '%s': %i"):
        assert raw_mount(guest, f"lowerdir={guest.scratch}/nope,upperdir={up},workdir={work}") \
            == errno.ENOENT


def test_lowerdir_that_is_a_file_is_refused(guest, lower):
    """A layer is a directory ("'%s' not a directory"): EINVAL."""
    up, work = dirs(guest, "u", "w")
    with expect_kmsg(guest, ("'%s' not a directory", "%s is not a directory")):
        assert raw_mount(guest, f"lowerdir={lower}/f,upperdir={up},workdir={work}") == errno.EINVAL


def fs_context_parser(guest):
    """Whether the guest's overlayfs parses its options with the fs_context API (v6.5, "ovl:
    port to new mount api"): its own checks then answer first, with their own messages."""
    try:
        require_version(guest, (6, 5), "the fs_context option parser")
    except pytest.skip.Exception:
        return False
    return True


@pytest.mark.parametrize("lowerdir,old,new", [
    pytest.param("{l}:", "empty lowerdir", "unescaped trailing colons in lowerdir mount option.",
                 id="trailing-colon"),
    pytest.param("{l}:::{m}", "empty lowerdir", "only single ':' or double '::' sequences of "
                 "unescaped colons in lowerdir mount option allowed.", id="three-colons"),
])
def test_empty_lower_layer_is_refused(guest, lower, lowerdir, old, new):
    """An empty name in the colon-separated lowerdir list names no layer: EINVAL (before
    v6.5: "empty lowerdir"; the fs_context parser refuses the stray colons itself)."""
    up, work, m = dirs(guest, "u", "w", "m")
    data = f"lowerdir={lowerdir.format(l=lower, m=m)},upperdir={up},workdir={work}"
    with expect_kmsg(guest, new if fs_context_parser(guest) else old):
        assert raw_mount(guest, data) == errno.EINVAL


def test_too_many_lower_layers_are_refused(guest):
    """OVL_MAX_STACK (500) lower layers at most: 501 are refused with EINVAL."""
    with expect_kmsg(guest, ("too many lower directories, limit is %d",)):
        assert raw_mount(guest, "lowerdir=" + ":".join(["/"] * 501)) == errno.EINVAL


def test_stacking_depth_is_limited(guest):
    """overlayfs.rst: "The lower filesystem can even be another overlayfs", up to
    FILESYSTEM_MAX_STACK_DEPTH (2): a third overlay over two is refused with EINVAL."""
    a, b, c = lowers(guest, 3)
    assert raw_mount(guest, f"lowerdir={a}:{b}", "one") == 0
    assert raw_mount(guest, f"lowerdir={guest.scratch}/one.merged:{c}", "two") == 0
    with expect_kmsg(guest, "maximum fs stacking depth exceeded"):
        assert raw_mount(guest, f"lowerdir={guest.scratch}/two.merged:{c}", "three") == errno.EINVAL


# -- options a mount ignores -------------------------------------------------------------------

NO_INDEX = 'option "index=on" is useless in a non-upper mount, ignore'
NO_NFS_EXPORT = ('NFS export requires "redirect_dir=nofollow" on non-upper mount, falling back to '
                 'nfs_export=off.')


@pytest.mark.parametrize("extra,messages,not_shown", [
    pytest.param("workdir={w}", ['option "workdir=%s" is useless in a non-upper mount, ignore'],
                 "workdir", id="workdir"),
    pytest.param("index=on", [NO_INDEX], "index=on", id="index"),
    pytest.param("volatile", ['option "volatile" is meaningless in a non-upper mount, ignoring it.'],
                 "volatile", id="volatile"),
    pytest.param("nfs_export=on,redirect_dir=follow", [NO_NFS_EXPORT], "nfs_export=on",
                 id="nfs_export-redirect-follow"),
    # nfs_export needs index: the index=on that is ignored must not keep it on (with the
    # default redirect_dir, which follows redirects, it falls back as above).
    pytest.param("index=on,nfs_export=on", [NO_INDEX, NO_NFS_EXPORT], "nfs_export=on",
                 id="index-nfs_export"),
])
def test_option_ignored_without_upper(guest, extra, messages, not_shown):
    """overlayfs.rst: without upperdir "the overlay will be read-only"; options that need an
    upper layer are ignored (the message says so), so the read-only mount succeeds and
    /proc/self/mounts shows neither the option nor a writable mount."""
    a, b = lowers(guest, 2)
    w, = dirs(guest, "w")
    with expect_kmsg(guest, *messages):
        assert raw_mount(guest, f"lowerdir={a}:{b},{extra.format(w=w)}") == 0
    shown = mount_options(guest, f"{guest.scratch}/raw.merged")
    assert "ro" in shown
    assert not [o for o in shown if o.startswith(not_shown)]


@pytest.mark.parametrize("with_upper", [True, False], ids=["upper", "lowers-only"])
def test_xino_on_with_one_filesystem_is_ignored(guest, with_upper):
    """'"xino=on" is useless with all layers on same fs, ignore.': with every layer on the
    scratch tmpfs (an upper and a lower, or two lowers and no upper) the overlay's st_ino
    is the real inode's, no layer's fsid in its high bits (overlayfs.rst, "Inode
    properties": all layers on the same fs keep the real st_ino)."""
    a, b = lowers(guest, 2)
    data = plain(guest, a) if with_upper else f"lowerdir={a}:{b}"
    with expect_kmsg(guest, '"xino=on" is useless with all layers on same fs, ignore.'):
        assert raw_mount(guest, f"{data},xino=on") == 0
    merged = f"{guest.scratch}/raw.merged"
    assert guest.must.stat(f"{merged}/f0")["st_ino"] == guest.must.stat(f"{a}/f0")["st_ino"]


# -- module parameters: an explicit option wins over a default ---------------------------------

@pytest.mark.parametrize("param,extra,message,shown", [
    pytest.param("metacopy", "redirect_dir=off", "disabling metacopy due to redirect_dir=%s",
                 "metacopy=off", id="metacopy-redirect_dir-off"),
    pytest.param("metacopy", "nfs_export=on", "disabling metacopy due to nfs_export=on",
                 "metacopy=off", id="metacopy-nfs_export"),
    pytest.param("nfs_export", "index=off", "disabling nfs_export due to index=off",
                 "nfs_export=off", id="nfs_export-index-off"),
    pytest.param("nfs_export", "metacopy=on", "disabling nfs_export due to metacopy=on",
                 "nfs_export=off", id="nfs_export-metacopy"),
])
def test_default_feature_yields_to_explicit_option(guest, lower, param, extra, message, shown):
    """With a feature on by default (the module parameter, what CONFIG_OVERLAY_FS_* sets) an
    explicit conflicting option disables it instead of failing the mount (commit
    d47748e5ae5a: only "explicit mount options result in an error"); /proc/self/mounts
    shows the feature off, as it differs from the default."""
    set_param(guest, param, b"Y")
    with expect_kmsg(guest, message):
        assert raw_mount(guest, f"{plain(guest, lower)},{extra}") == 0
    assert shown in mount_options(guest, f"{guest.scratch}/raw.merged")


def test_check_copy_up_parameter_is_obsolete(guest):
    """check_copy_up is an obsolete module parameter: setting it warns and it stays N."""
    path = "/sys/module/overlay/parameters/check_copy_up"
    with expect_kmsg(guest, '"check_copy_up" module option is obsolete'):
        guest.must.write_file(path, b"Y")
    assert guest.must.read_file(path).strip() == b"N"


# -- layers ------------------------------------------------------------------------------------

def test_workdir_inside_upperdir_is_refused(guest, lower):
    """overlayfs.rst: "The "workdir" needs to be an empty directory on the same filesystem
    as upperdir"; one inside the other is refused with EINVAL."""
    up, = dirs(guest, "u")
    work, = dirs(guest, "u/w")
    with expect_kmsg(guest, "workdir and upperdir must be separate subtrees"):
        assert raw_mount(guest, f"lowerdir={lower},upperdir={up},workdir={work}") == errno.EINVAL


def bind(guest, src, dst, flags=0):
    guest.must.makedirs(dst)
    guest.must.mount(src, dst, "none", MS_BIND)
    guest.defer(guest.must.umount2, dst, 0)
    if flags:
        guest.must.mount("none", dst, "none", MS_BIND | MS_REMOUNT | flags)


def test_workdir_on_another_mount_is_refused(guest, lower):
    """workdir on the same filesystem as upperdir, and under the same mount: a bind mount
    of the very directory is another mount, EINVAL."""
    up, work = dirs(guest, "u", "w")
    bind(guest, work, f"{guest.scratch}/wbind")
    with expect_kmsg(guest, "workdir and upperdir must reside under the same mount"):
        assert raw_mount(guest, f"lowerdir={lower},upperdir={up},workdir={guest.scratch}/wbind") \
            == errno.EINVAL


def test_read_only_upper_is_refused(guest, lower):
    """An upper layer is written: a read-only mount of it is refused with EINVAL (since
    v6.5 the option parser says so first, "filesystem on %s is read-only")."""
    base, = dirs(guest, "base")
    dirs(guest, "base/u", "base/w")
    bind(guest, base, f"{guest.scratch}/ro", MS_RDONLY)
    ro = f"{guest.scratch}/ro"
    with expect_kmsg(guest, "filesystem on %s is read-only" if fs_context_parser(guest)
                     else "upper fs is r/o, try multi-lower layers mount"):
        assert raw_mount(guest, f"lowerdir={lower},upperdir={ro}/u,workdir={ro}/w") == errno.EINVAL


def test_overlay_as_upper_is_refused(guest, lower):
    """An overlay is no upper filesystem (its dentries are not the real ones): EINVAL."""
    a, b = lowers(guest, 2)
    assert raw_mount(guest, f"lowerdir={a}:{b}", "ro") == 0
    ro = f"{guest.scratch}/ro.merged"
    with expect_kmsg(guest, ("filesystem on '%s' not supported as upperdir",
                             "filesystem on %s not supported as upperdir")):
        assert raw_mount(guest, f"lowerdir={lower},upperdir={ro},workdir={ro}") == errno.EINVAL


OVERLAPS = {
    # lowerdir=, upperdir=, workdir= relative to the scratch dir; the message
    "same-lower-twice": ("l0:l0", None, None, "conflicting %s path"),
    "lower-inside-upper": ("base/u/l", "base/u", "base/w", "overlapping %s path"),
}


@pytest.mark.parametrize("overlap", list(OVERLAPS))
def test_overlapping_layers_are_refused(guest, overlap):
    """overlayfs.rst: "Using partially overlapping paths is not allowed": the mount fails
    and the kernel names the overlapping layer."""
    lowerdir, up, work, message = OVERLAPS[overlap]
    lowers(guest, 1)
    s = guest.scratch
    if up:
        dirs(guest, lowerdir)
    data = f"lowerdir={':'.join(f'{s}/{x}' for x in lowerdir.split(':'))}"
    if up:
        dirs(guest, up, work)
        data += f",upperdir={s}/{up},workdir={s}/{work}"
    with expect_kmsg(guest, message):
        result = raw_mount(guest, data)
    assert result != 0


@pytest.mark.known_issue(
    "overlapping layers are refused with ELOOP (trap inodes of commit 146d62e5a586 \"ovl: "
    "detect overlapping layers\", v5.2), not the EBUSY overlayfs.rst names", since="5.2")
def test_overlapping_layers_fail_with_ebusy(guest):
    """overlayfs.rst: "Using partially overlapping paths is not allowed and may fail with
    EBUSY"."""
    lowers(guest, 1)
    dirs(guest, "base/u/l", "base/w")
    s = guest.scratch
    with expect_kmsg(guest, "overlapping %s path"):
        result = raw_mount(guest, f"lowerdir={s}/base/u/l,upperdir={s}/base/u,workdir={s}/base/w")
    assert result == errno.EBUSY


# -- an upper without xattrs, a lower without file handles --------------------------------------

@pytest.fixture
def ramfs(guest):
    """A ramfs in the scratch dir: no xattrs, no RENAME_WHITEOUT, no file handles."""
    path = f"{guest.scratch}/ramfs"
    guest.must.makedirs(path)
    guest.must.mount("ramfs", path, "ramfs", 0, None)
    guest.defer(guest.must.umount2, path, 0)
    return path


@pytest.mark.parametrize("extra,messages,not_shown,since", [
    pytest.param("", [], None, None, id="plain"),
    pytest.param("index=on", [("...falling back to index=off,metacopy=off.",
                               "...falling back to index=off.")], "index=on", None, id="index"),
    pytest.param("metacopy=on", [("...falling back to index=off,metacopy=off.",
                                  "...falling back to metacopy=off.")], "metacopy=on", None, id="metacopy"),
    pytest.param("xino=auto", ["...falling back to xino=off."], "xino=auto", None, id="xino"),
    pytest.param("nfs_export=on", ['NFS export requires "index=on", falling back to nfs_export=off.'],
                 "nfs_export=on", None, id="nfs_export"),
    pytest.param("redirect_dir=on", ["...falling back to redirect_dir=nofollow."], "redirect_dir=on",
                 (6, 6), id="redirect_dir"),
    pytest.param("uuid=on", ["...falling back to uuid=null."], "uuid=on",
                 (6, 6), id="uuid"),
])
def test_upper_without_xattrs_falls_back(guest, lower, ramfs, extra, messages, not_shown, since):
    """overlayfs.rst: the upper "must support the creation of trusted.* and/or user.*
    extended attributes"; on a ramfs upper the kernel says it cannot ("failed to set xattr
    on upper", "does not support RENAME_WHITEOUT"), still mounts, and turns off what
    needs xattrs: /proc/self/mounts does not show the feature the option asked for."""
    if since:   # 6.1 drops these silently with the xattrs: the per-feature messages came later
        require_version(guest, since, f"the {extra} fallback message")
    dirs(guest, "ramfs/u", "ramfs/w")
    data = f"lowerdir={lower},upperdir={ramfs}/u,workdir={ramfs}/w" + (f",{extra}" if extra else "")
    with expect_kmsg(guest, "failed to set xattr on upper", "upper fs does not support RENAME_WHITEOUT.",
                     *messages):
        assert raw_mount(guest, data) == 0
    shown = mount_options(guest, f"{guest.scratch}/raw.merged")
    assert "rw" in shown
    if not_shown:
        assert not_shown not in shown


def test_userxattr_upper_without_user_xattrs_falls_back_to_index_off(guest, lower):
    """With userxattr the overlay keeps its xattrs as user.overlay.*: an upper that has file
    handles but no user.* xattrs (tmpfs before 6.6) cannot hold them, so, as on an upper
    without xattrs, "failed to set xattr on upper" and "...falling back to index=off,
    metacopy=off.": the mount is read-write and index=on, which needs the xattrs, is not shown."""
    probe = make_tree(guest, f"{guest.scratch}/probe", {"f": b""})
    if guest.setxattr(f"{probe}/f", "user.probe", b"1") == 0:
        pytest.skip("the scratch tmpfs holds user.* xattrs on this kernel (tmpfs has had them since 6.6)")
    with expect_kmsg(guest, "failed to set xattr on upper", ("...falling back to index=off,metacopy=off.",
                                                             "...falling back to index=off.")):
        assert raw_mount(guest, f"{plain(guest, lower)},userxattr,index=on") == 0
    shown = mount_options(guest, f"{guest.scratch}/raw.merged")
    assert "rw" in shown and "userxattr" in shown
    assert "index=on" not in shown


@pytest.mark.parametrize("extra,message,not_shown", [
    pytest.param("index=on", "fs on '%s' does not support file handles, falling back to "
                 "index=off,nfs_export=off.", "index=on", id="index"),
    pytest.param("xino=auto", "fs on '%s' does not support file handles, falling back to xino=off.",
                 "xino=auto", id="xino"),
])
def test_lower_without_file_handles_falls_back(guest, ramfs, extra, message, not_shown):
    """index and xino=auto need file handles of every layer: a ramfs lower has none, so the
    mount falls back (the message) and /proc/self/mounts does not show the feature."""
    make_tree(guest, f"{ramfs}/l", {"f": b"x"})
    data = f"{plain(guest, f'{ramfs}/l')},{extra}"
    with expect_kmsg(guest, message):
        assert raw_mount(guest, data) == 0
    assert not_shown not in mount_options(guest, f"{guest.scratch}/raw.merged")


# -- upper and work dirs that cannot be used -----------------------------------------------------

def test_volatile_leftover_refuses_the_next_mount(guest, lower):
    """overlayfs.rst: a volatile mount leaves $workdir/work/incompat/volatile; "During next
    mount, overlay checks for this directory and refuses to mount if present": EINVAL."""
    data = f"{plain(guest, lower)},volatile"
    merged, = dirs(guest, "vol.merged")
    guest.must.mount("overlay", merged, "overlay", 0, data)
    guest.must.umount2(merged, 0)
    with expect_kmsg(guest, "overlay with incompat feature '%s' cannot be mounted"):
        assert raw_mount(guest, data, "vol") == errno.EINVAL


@pytest.mark.upper_fs("ext4")
@pytest.mark.parametrize("index", ["on", "off"])
def test_upperdir_in_use(guest, upper, make_overlay, index):
    """overlayfs.rst: an upper path "already used by another overlay mount is not allowed
    and may fail with EBUSY"; commit 0be0bfd2de9d: "index=off only relaxes exclusive
    upper/work dir checks": with index=on EBUSY, with index=off the mount succeeds with the
    warning that "accessing files from both mounts will result in undefined behavior"."""
    lower = make_tree(guest, upper.path("lower"), {"f": b"L"})
    a = make_overlay("same", lowers=[lower], index=index)
    b = make_overlay("same", lowers=[lower], index=index, merged=a.merged + "2")
    assert a.mount() == 0
    if index == "on":
        with expect_kmsg(guest, "%s is in-use as upperdir/workdir of another mount, mount with "
                         "'-o index=off' to override exclusive upperdir protection."):
            assert b.mount() == errno.EBUSY
    else:
        with expect_kmsg(guest, "%s is in-use as upperdir/workdir of another mount, accessing "
                         "files from both mounts will result in undefined behavior."):
            assert b.mount() == 0


@pytest.mark.upper_fs("ext4")
def test_index_over_another_lower_is_refused(guest, upper, make_overlay):
    """overlayfs.rst "Sharing and copying layers": with the inodes index "On failure to
    verify the lower root origin, mount will fail with ESTALE"."""
    l1 = make_tree(guest, upper.path("l1"), {"f": b"1"})
    l2 = make_tree(guest, upper.path("l2"), {"f": b"2"})
    a = make_overlay("ix", lowers=[l1], index="on")
    assert a.mount() == 0
    assert a.umount() == 0
    b = make_overlay("ix", lowers=[l2], index="on")
    with expect_kmsg(guest, "failed to verify upper root origin"):
        assert b.mount() == errno.ESTALE


@pytest.mark.upper_fs("ext4")
@pytest.mark.parametrize("extra,messages", [
    pytest.param({}, [], id="plain"),
    pytest.param({"nfs_export": "on"}, ["NFS export requires an index dir, falling back to nfs_export=off."],
                 id="nfs_export"),
])
def test_workdir_that_cannot_be_made_mounts_read_only(guest, upper, make_overlay, extra, messages):
    """"failed to create directory %s/%s (errno: %i); mounting read-only": an immutable
    workdir (chattr +i) cannot hold work/work, so the overlay mounts read-only
    (/proc/self/mounts: ro), and nfs_export, which needs the index dir, is off."""
    lower = make_tree(guest, upper.path("lower"), {"f": b"L"})
    ovl = make_overlay("imm", lowers=[lower], **extra)
    guest.must.makedirs(ovl.work)
    guest.must.makedirs(ovl.upper)
    guest.run(["chattr", "+i", ovl.work])
    guest.defer(guest.run, ["chattr", "-i", ovl.work])
    with expect_kmsg(guest, "failed to create directory %s/%s (errno: %i); mounting read-only", *messages):
        assert ovl.mount() == 0
    shown = mount_options(guest, ovl.merged)
    assert "ro" in shown
    assert "nfs_export=on" not in shown


def test_uuid_on_without_upper_falls_back(guest):
    """Since v6.6 uuid=on needs an upper layer to store the uuid: without one the mount
    falls back to uuid=null (the message) and does not show uuid=on."""
    require_version(guest, (6, 6), "uuid=on")
    a, b = lowers(guest, 2)
    with expect_kmsg(guest, 'option "uuid=on" requires an upper fs, falling back to uuid=null.'):
        assert raw_mount(guest, f"lowerdir={a}:{b},uuid=on") == 0
    assert "uuid=on" not in mount_options(guest, f"{guest.scratch}/raw.merged")



@pytest.mark.upper_fs("ext4")
def test_index_dir_of_another_upper_is_refused(guest, upper, make_overlay):
    """With index=on the work dir's index dir belongs to one upper dir (its "upper"
    xattr): another upper dir over the same workdir is refused, and the kernel advises
    "try deleting index dir or mounting with '-o index=off'"; with index=off it mounts."""
    lower = make_tree(guest, upper.path("lower"), {"f": b"L"})
    a = make_overlay("ia", lowers=[lower], index="on")
    assert a.mount() == 0
    assert a.umount() == 0
    b = make_overlay("ib", lowers=[lower], index="on")
    b.work = a.work
    with expect_kmsg(guest, "failed to verify index dir 'upper' xattr",
                     ("failed to verify %s (%pd2, ino=%lu, err=%i)",
                      "failed to verify %s (%pd2, ino=%llu, err=%i)"),
                     "try deleting index dir or mounting with '-o index=off' to disable inodes index."):
        assert b.mount() != 0
    b.options["index"] = "off"
    assert b.mount() == 0


@pytest.mark.upper_fs("ext4")
def test_xino_over_two_filesystems_is_announced(guest, upper, make_overlay, lower):
    """overlayfs.rst "xino": with layers on several filesystems "the high bits of the inode
    number are used to store the fsid"; the kernel announces how many: the overlay's st_ino
    of a lower file is the lower's with bits above its 32 set."""
    ovl = make_overlay("xi", xino="on")
    with expect_kmsg(guest, '"xino" feature enabled using %d upper inode bits.'):
        assert ovl.mount() == 0
    merged, real = guest.must.stat(ovl.path("f"))["st_ino"], guest.must.stat(f"{lower}/f")["st_ino"]
    assert merged != real
    assert merged & 0xFFFFFFFF == real


SAME_UUID = "0b5e55ed-0000-4000-8000-000000000029"


def ext4_lower(guest, name, uuid):
    """A lower directory on an ext4 of its own whose UUID is `uuid`."""
    dev = ScratchDevice(guest, f"ovh-{name}", size_mb=64).create()
    fs = Filesystem(guest, "ext4", dev, f"{guest.scratch}/{name}")
    fs.mkfs = [*fs.mkfs, "-U", uuid]
    fs.create()
    return make_tree(guest, fs.path("l"), {name: b"x"})


@pytest.mark.upper_fs("ext4")
def test_lowers_with_one_uuid_turn_index_off(guest, upper, make_overlay):
    """overlayfs.rst "Sharing and copying layers": the index keeps lower file handles with
    the lower fs' UUID, so two lower filesystems with the same UUID cannot be told apart:
    index=on falls back to index=off (the message) and /proc/self/mounts does not show it."""
    ovl = make_overlay("uu", lowers=[ext4_lower(guest, "la", SAME_UUID), ext4_lower(guest, "lb", SAME_UUID)],
                       index="on")
    with expect_kmsg(guest, ("%s uuid detected in lower fs '%pd2', falling back to "
                             "xino=%s,index=off,nfs_export=off.",
                             "%s uuid in non-single lower fs '%pd2', falling back to "
                             "xino=%s,index=off,nfs_export=off.")):
        assert ovl.mount() == 0
    assert "index=on" not in mount_options(guest, ovl.merged)


# -- layers appended and data-only layers (new lowerdir syntax) ----------------------------------

@pytest.mark.parametrize("lowerdir,message,since", [
    pytest.param("lowerdir={l},lowerdir+={m}", "lowerdir+ and datadir+ cannot follow lowerdir", (6, 8),
                 id="lowerdir-then-lowerdir+"),
    pytest.param("lowerdir+={l},datadir+={d},lowerdir+={m}", "regular lower layers cannot follow data layers",
                 (6, 8), id="lowerdir+-after-datadir+"),
    pytest.param("lowerdir={l}::{d}:{m}", "regular lower layers cannot follow data lower layers", (6, 5),
                 id="layer-after-data-layer"),
    pytest.param("datadir+={d}", "at least one non-data lowerdir is required", (6, 8), id="data-only"),
])
def test_bad_layer_order_is_refused(guest, lowerdir, message, since):
    """overlayfs.rst "Data-only lower layers": data-only layers ("::" or datadir+) come
    after every regular lower layer, lowerdir+ does not mix with lowerdir=, and at least
    one regular lower layer is needed: anything else is refused with EINVAL."""
    require_version(guest, since, "data-only lower layers" if since == (6, 5) else "lowerdir+/datadir+")
    top, data, mid = lowers(guest, 3)
    up, work = dirs(guest, "u", "w")
    with expect_kmsg(guest, message):
        assert raw_mount(guest, f"{lowerdir.format(l=top, d=data, m=mid)},upperdir={up},workdir={work}") \
            == errno.EINVAL


# -- a user namespace's mount: no trusted.* xattrs -------------------------------------------------

USERNS_MOUNT = ("import ctypes, sys\n"
                "libc = ctypes.CDLL(None, use_errno=True)\n"
                "rc = libc.mount(b'overlay', sys.argv[1].encode(), b'overlay', 0, sys.argv[2].encode())\n"
                "print(0 if rc == 0 else ctypes.get_errno())\n")


def userns_mount(guest, data):
    """mount(2) of an overlay by root of a new user namespace (unshare -Urm): 0 or the errno
    (the mount goes with the namespace)."""
    merged, = dirs(guest, "userns.merged")
    r = guest.run(["unshare", "-Urm", "python3", "-I", "-S", "-c", USERNS_MOUNT, merged, data])
    return int(r.stdout.strip())


def test_user_namespace_mount_without_trusted_xattrs(guest, lower):
    """A user namespace's root may mount an overlay (FS_USERNS_MOUNT) but not set trusted.*
    xattrs: the mount works without them and the kernel points at userxattr ("try mounting
    with 'userxattr' option")."""
    with expect_kmsg(guest, "failed to set xattr on upper", "try mounting with 'userxattr' option"):
        assert userns_mount(guest, plain(guest, lower)) == 0


@pytest.mark.parametrize("extra,message", [
    pytest.param("redirect_dir=on", "redirect_dir requires permission to access trusted xattrs",
                 id="redirect_dir"),
    pytest.param("metacopy=on", "metacopy requires permission to access trusted xattrs", id="metacopy"),
])
def test_user_namespace_mount_refuses_trusted_xattr_features(guest, lower, extra, message):
    """An explicit feature that needs trusted.* xattrs, asked for where they cannot be set (a
    user namespace without userxattr), is refused with EPERM (mount(2): "The caller does
    not have the required privileges") instead of being dropped."""
    require_version(guest, (6, 6), "the trusted xattr permission check of the mount options")
    with expect_kmsg(guest, message):
        assert userns_mount(guest, f"{plain(guest, lower)},{extra}") == errno.EPERM


def test_user_namespace_mount_refuses_data_only_layers(guest):
    """Data-only layers need trusted.* xattrs (metacopy redirects): refused with EPERM in a
    user namespace without userxattr."""
    require_version(guest, (6, 6), "the trusted xattr permission check of the mount options")
    top, data = lowers(guest, 2)
    up, work = dirs(guest, "u", "w")
    with expect_kmsg(guest, "lower data-only dirs require permission to access trusted xattrs"):
        assert userns_mount(guest, f"lowerdir={top}::{data},upperdir={up},workdir={work}") == errno.EPERM


# -- layers crafted by hand (setfattr on the raw upper before the mount) ------------------------

def crafted(guest, lower_files, upper_files, xattrs, options=""):
    """Lower and upper trees on the scratch tmpfs, `xattrs` {upper path: {name: value}}
    set on the raw upper, then the overlay mounted: its merged dir."""
    lower = make_tree(guest, f"{guest.scratch}/lower", lower_files)
    up = make_tree(guest, f"{guest.scratch}/u", upper_files)
    work, = dirs(guest, "w")
    for rel, pairs in xattrs.items():
        for name, value in pairs.items():
            guest.must.setxattr(f"{up}/{rel}", name, value)
    data = f"lowerdir={lower},upperdir={up},workdir={work}" + (f",{options}" if options else "")
    assert raw_mount(guest, data) == 0
    return f"{guest.scratch}/raw.merged"


def test_invalid_origin_is_ignored(guest):
    """trusted.overlay.origin holds a file handle of the lower inode a file was copied up
    from; one that is no file handle at all is reported ("invalid origin") and ignored: the
    file is the upper's, as without the xattr."""
    merged = crafted(guest, {"f": b"lower"}, {"f": b"upper"}, {"f": {"trusted.overlay.origin": b"\x00"}})
    with expect_kmsg(guest, "invalid origin (%*phN)"):
        assert guest.must.read_file(f"{merged}/f") == b"upper"


def test_invalid_redirect_fails_the_lookup(guest):
    """A relative trusted.overlay.redirect names an entry of the same parent, so one with a
    '/' in it is no redirect: the kernel reports it ("invalid redirect") and the lookup of
    the directory fails rather than following it."""
    merged = crafted(guest, {"d/x": b"lower"}, {"d/y": b"upper"},
                     {"d": {"trusted.overlay.redirect": b"a/b"}}, "redirect_dir=on")
    with expect_kmsg(guest, "invalid redirect (%s)"):
        assert is_errno(guest.stat(f"{merged}/d"))


def test_redirect_not_followed_with_nofollow(guest):
    """overlayfs.rst "redirect_dir=nofollow": redirects are "not followed"; a directory
    that carries one is refused ("refusing to follow redirect"): its lookup fails and the
    redirect's target in the lower layer is not exposed under it."""
    merged = crafted(guest, {"secret/x": b"lower"}, {"d/y": b"upper"},
                     {"d": {"trusted.overlay.redirect": b"/secret"}}, "redirect_dir=nofollow")
    with expect_kmsg(guest, "refusing to follow redirect for (%pd2)"):
        assert is_errno(guest.stat(f"{merged}/d"))
    assert is_errno(guest.stat(f"{merged}/d/x"))


@pytest.mark.parametrize("value,message", [
    pytest.param(b"\x00\x01", "metacopy file '%pd' has too small xattr", id="too-small"),
])
def test_malformed_metacopy_xattr_fails_the_lookup(guest, value, message):
    """Since the metacopy xattr carries a version and an fs-verity digest (struct
    ovl_metacopy: version, len, flags, digest_algo, digest), one shorter than that header
    is reported and the file's lookup fails: its data is never taken from the lower as if
    it were a valid metacopy file. (Version and length are checked only when the digest is
    read, with verity=on.)"""
    require_version(guest, (6, 6), "the versioned metacopy xattr (fs-verity digests)")
    merged = crafted(guest, {"f": b"lower"}, {"f": b""}, {"f": {"trusted.overlay.metacopy": value}},
                     "metacopy=on")
    with expect_kmsg(guest, message):
        assert is_errno(guest.stat(f"{merged}/f"))
