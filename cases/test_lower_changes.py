"""Lower layers changed while the overlay is mounted (issue 5).

Sources:
- Documentation/filesystems/overlayfs.rst, "Changes to underlying filesystems":
  "Changes to the underlying filesystems while part of a mounted overlay
   filesystem are not allowed.  If the underlying filesystem is changed, the
   behavior of the overlay is undefined, though it will not result in a crash
   or deadlock."
  and: "Offline changes, when the overlay is not mounted, are allowed to the
   lower tree" unless metacopy, index, xino or redirect_dir were used.
- Seed 003 (Amir Goldstein / Vivek Goyal, linux-unionfs, Jul 2020, on the
  "ovl-revalidate" RFC): the statement above stays ("Only we are slightly more
  credible when saying won't result in crash or deadlock..."); revalidation
  of remote lower dentries converts a 0 from ->d_revalidate() into -ESTALE,
  and "xxxat(dfd, ...) syscalls" and ovl_iterate() on an fd whose lower stack
  changed are the paths he names as unguarded.
- fs/overlayfs/super.c, ovl_revalidate_real() (v4.19 .. v6.12 at least): when a
  remote real dentry's ->d_revalidate() returns 0, "d_invalidate(d); ret =
  -ESTALE". Amir's "ovl: do not return error on remote dentry cache expiry"
  was never merged (reference scenario 25).
- overlayfs.rst, "Inode index": "On failure to verify the lower root origin,
  mount will fail with ESTALE."
- nfs(5), "soft": "the NFS client fails an NFS request after retrans
  retransmissions have been sent, causing the NFS client to return an error to
  the calling application"; the error is EIO (net/sunrpc/clnt.c,
  rpc_check_timeout(): soft tasks end with -EIO unless the mount has softerr,
  which gives -ETIMEDOUT; commit "SUNRPC: Add the 'softerr' rpc_client flag").

What a call through a changed overlay may return (reference scenarios 23/24):
success, or one of UNDEFINED_ERRNOS:
- ENOENT: the name is gone, or the real directory was deleted: iterate_dir()
  (fs/readdir.c) and lookup in a dead directory (fs/namei.c) return it;
- ESTALE: overlayfs' own verdict on a real dentry that no longer matches
  (ovl_revalidate_real(); ovl_get_inode() when the real inodes of a cached
  overlay inode differ from the ones found, fs/overlayfs/inode.c),
  d_splice_alias() when a directory alias cannot be moved (fs/dcache.c), and
  the VFS when ->d_weak_revalidate() of a path's last mount root returns 0
  (complete_walk(), fs/namei.c; overlayfs passes it to the remote lower);
- EIO: overlayfs' error for an inconsistent layer stack, and a soft NFS
  request that timed out (above).
Every call must return within CALL_LIMIT (no deadlock), and the kernel log of
the case must hold no oops, BUG, WARNING or hung-task report.
"""

import errno
import os
import re
import time
import types

import pytest

from overlay_harness import (
    GuestTimeout,
    LowerFs,
    NfsLower,
    Overlay,
    is_errno,
    make_tree,
    require,
    skip_unless_nfs,
)

pytestmark = [pytest.mark.lower_changes]

DATA = b"lower data\n" * 100
NEW = b"replaced on the server\n" * 10

UNDEFINED_ERRNOS = {errno.ENOENT, errno.ESTALE, errno.EIO}
CALL_LIMIT = 90  # seconds; a call that takes longer counts as a deadlock (TCG, shared host)

# Kernel log lines that break "it will not result in a crash or deadlock".
SPLAT = re.compile(r"Oops|BUG: |kernel BUG|WARNING: |general protection fault|"
                   r"blocked for more than \d+ seconds|soft lockup|self-detected stall|"
                   r"Call Trace:")


# -- helpers ---------------------------------------------------------------------------
class Probe:
    """Calls through a changed overlay: each returns in time, with success or an errno
    from `allowed`; results are kept for the failure report."""

    def __init__(self, guest, allowed=UNDEFINED_ERRNOS, limit=CALL_LIMIT):
        self.guest = guest
        self.allowed = set(allowed)
        self.limit = limit
        self.seen = []  # (what, result, seconds)

    def __call__(self, what, op, *args, **kwargs):
        try:
            result = self.guest.call(op, *args, _timeout=self.limit, **kwargs)
        except GuestTimeout as e:
            pytest.fail(f"{what}: {op}{args} did not return within {self.limit} s "
                        f"(deadlock?): {e}", pytrace=False)
        seconds = self.guest.log[-1].seconds
        self.seen.append((what, result, seconds))
        shown = result if is_errno(result) or isinstance(result, int) else type(result).__name__
        print(f"{what:32} {shown!s:18} {seconds:6.2f} s")  # in the report of a failed case
        if is_errno(result):
            assert result.code in self.allowed, (
                f"{what}: {op}{args} = {result!r}, not success nor one of "
                f"{sorted(errno.errorcode[e] for e in self.allowed)}")
        elif op == "open":
            self.guest.must.close(result)
        return result


def assert_no_splat(guest, start):
    """overlayfs.rst: lower changes "will not result in a crash or deadlock"."""
    bad = [line for line in guest.kmsg_lines(start) if SPLAT.search(line)]
    assert not bad, "the kernel logged:\n" + "\n".join(bad[:20])


def hold(guest, ovl, rel):
    """Look `rel`/f up through the overlay and keep things inside `rel`: the cwd, a
    directory fd, an O_PATH fd, and an fd open on `rel`/f."""
    assert guest.read_file(ovl.path(f"{rel}/f")) == DATA
    assert "f" in guest.must.listdir(ovl.path(rel))
    guest.must.chdir(ovl.path(rel))
    return types.SimpleNamespace(
        dfd=guest.must.open(ovl.path(rel), os.O_RDONLY | os.O_DIRECTORY),
        pfd=guest.must.open(ovl.path(rel), os.O_PATH | os.O_DIRECTORY),
        ffd=guest.must.open(ovl.path(f"{rel}/f"), os.O_RDONLY))


def probe_names(probe, ovl, rel):
    """stat, open, getdents on a path through the overlay."""
    probe(f"stat {rel}", "stat", ovl.path(rel))
    probe(f"stat {rel}/f", "stat", ovl.path(f"{rel}/f"))
    probe(f"open {rel}/f", "open", ovl.path(f"{rel}/f"), os.O_RDONLY)
    probe(f"read {rel}/f", "read_file", ovl.path(f"{rel}/f"))
    probe(f"getdents {rel}", "listdir", ovl.path(rel))


def probe_holders(probe, h):
    """getdents on the dir fd, openat on the dir fd and the O_PATH fd, calls relative to
    the cwd, and reads on the fd that was open before the change."""
    probe("getdents dirfd", "listdir", h.dfd)
    probe("fstat dirfd", "fstat", h.dfd)
    probe("openat(dirfd, f)", "open", "f", os.O_RDONLY, dir_fd=h.dfd)
    probe("openat(dirfd, sub)", "open", "sub", os.O_RDONLY | os.O_DIRECTORY, dir_fd=h.dfd)
    probe("openat(O_PATH fd, f)", "open", "f", os.O_RDONLY, dir_fd=h.pfd)
    probe("openat(O_PATH fd, sub/g)", "open", "sub/g", os.O_RDONLY, dir_fd=h.pfd)
    probe("fstat O_PATH fd", "fstat", h.pfd)
    probe("stat ./f (cwd)", "stat", "f")
    probe("getdents . (cwd)", "listdir", ".")
    probe("getcwd", "getcwd")
    probe("pread open fd", "pread", h.ffd, 4096, 0)


def release(guest):
    guest.must.chdir("/")
    guest.must.close_all()


# -- local lower: ext4 and xfs on a scratch block device --------------------------------
LOWER_TREE = {"d/f": DATA, "d/sub/g": DATA, "keep/h": DATA, "top": DATA}


@pytest.fixture(params=["ext4", "xfs"])
def lower_fs(guest, request):
    """A fresh `ext4` or `xfs` filesystem on a scratch dm device, holding LOWER_TREE."""
    kind = request.param
    require(guest, "overlay", "loop", "dm", kind)
    return LowerFs(guest, LOWER_TREE, kind=kind, size_mb=320, dirname="lower", sync=False)


def local_overlay(guest, lower_fs):
    ovl = Overlay(guest, "ovl", [lower_fs.path()], f"{guest.scratch}/upperfs")
    assert ovl.mount() == 0
    return ovl


def remount_offline(guest, ovl):
    """Unmount, then mount the same layers again: overlayfs.rst allows offline changes to
    the lower tree when no index, metacopy, xino or redirect_dir was used."""
    release(guest)
    assert ovl.umount() == 0
    assert ovl.mount() == 0


def test_lower_dir_renamed_while_in_use(guest, lower_fs):
    """Scenario 23, overlayfs.rst "Changes to underlying filesystems" and seed 003: the lower
    directory d (looked up, with the cwd, a dir fd, an O_PATH fd and an open file inside
    it) is renamed to d2 on the lower fs. stat, open, getdents and openat on the old and
    the new name, and on the old name again once the new one was looked up, each return
    in time with success or ENOENT/ESTALE/EIO, and the kernel logs no oops, BUG, WARNING
    or hung task. After an unmount the change is an offline one, which overlayfs.rst
    allows: d is gone and d2 holds the lower's data."""
    start = guest.must.kmsg_seq()
    ovl = local_overlay(guest, lower_fs)
    h = hold(guest, ovl, "d")
    guest.must.rename(lower_fs.path("d"), lower_fs.path("d2"))
    probe = Probe(guest)
    probe_names(probe, ovl, "d")
    probe_holders(probe, h)
    probe_names(probe, ovl, "d2")
    probe_names(probe, ovl, "d")
    probe_holders(probe, h)
    assert_no_splat(guest, start)

    remount_offline(guest, ovl)
    assert guest.stat(ovl.path("d")) == errno.ENOENT
    assert guest.read_file(ovl.path("d2/f")) == DATA
    assert guest.listdir(ovl.path("d2")) == ["f", "sub"]
    assert_no_splat(guest, start)


def test_lower_dir_deleted_while_in_use(guest, lower_fs):
    """Scenario 24 and seed 003 ("validate parent stack before ... xxxat(dfd, ...)"): the
    lower directory d is deleted (rm -rf) while the cwd, a dir fd, an O_PATH fd and an
    open file sit inside it. Calls on the old name and through the holders return in
    time with success or ENOENT/ESTALE/EIO and the kernel logs no splat
    (overlayfs.rst); after an unmount d is gone from the overlay."""
    start = guest.must.kmsg_seq()
    ovl = local_overlay(guest, lower_fs)
    h = hold(guest, ovl, "d")
    guest.run(["rm", "-rf", lower_fs.path("d")])
    probe = Probe(guest)
    probe_holders(probe, h)
    probe_names(probe, ovl, "d")
    probe_holders(probe, h)
    assert_no_splat(guest, start)

    remount_offline(guest, ovl)
    assert guest.stat(ovl.path("d")) == errno.ENOENT
    assert guest.listdir(ovl.path()) == ["keep", "top"]
    assert_no_splat(guest, start)


def test_lower_files_replaced_renamed_deleted_while_open(guest, lower_fs):
    """overlayfs.rst "Changes to underlying filesystems": files looked up and held open
    (a regular fd and an O_PATH fd) through the overlay are changed on the lower fs: `top`
    is replaced by rename-over, keep/h renamed to keep/h2, d/f deleted. stat, open and
    reads on the old and new names and through the old fds return in time with success
    or ENOENT/ESTALE/EIO, without a splat; after an unmount the overlay shows the new
    lower tree (offline changes are allowed)."""
    start = guest.must.kmsg_seq()
    ovl = local_overlay(guest, lower_fs)
    fds = {}
    for rel in ("top", "keep/h", "d/f"):
        assert guest.read_file(ovl.path(rel)) == DATA
        fds[rel] = (guest.must.open(ovl.path(rel), os.O_RDONLY),
                    guest.must.open(ovl.path(rel), os.O_PATH))
    kfd = guest.must.open(ovl.path("keep"), os.O_RDONLY | os.O_DIRECTORY)
    guest.must.write_file(lower_fs.path("top.new"), NEW)
    guest.must.rename(lower_fs.path("top.new"), lower_fs.path("top"))
    guest.must.rename(lower_fs.path("keep/h"), lower_fs.path("keep/h2"))
    guest.must.unlink(lower_fs.path("d/f"))
    probe = Probe(guest)
    for rel, (fd, pfd) in fds.items():
        probe(f"pread {rel} fd", "pread", fd, 4096, 0)
        probe(f"fstat {rel} fd", "fstat", fd)
        probe(f"fstat {rel} O_PATH fd", "fstat", pfd)
        probe(f"stat {rel}", "stat", ovl.path(rel))
        probe(f"open {rel}", "open", ovl.path(rel), os.O_RDONLY)
        probe(f"read {rel}", "read_file", ovl.path(rel))
    probe("stat keep/h2", "stat", ovl.path("keep/h2"))
    probe("read keep/h2", "read_file", ovl.path("keep/h2"))
    probe("openat(keep, h)", "open", "h", os.O_RDONLY, dir_fd=kfd)
    probe("openat(keep, h2)", "open", "h2", os.O_RDONLY, dir_fd=kfd)
    probe("getdents keep", "listdir", kfd)
    probe("getdents d", "listdir", ovl.path("d"))
    assert_no_splat(guest, start)

    remount_offline(guest, ovl)
    assert guest.read_file(ovl.path("top")) == NEW
    assert guest.listdir(ovl.path("keep")) == ["h2"]
    assert guest.stat(ovl.path("d/f")) == errno.ENOENT
    assert_no_splat(guest, start)


@pytest.mark.parametrize("change", ["rename", "delete"])
def test_create_through_dir_fd_after_lower_dir_changed(guest, lower_fs, change):
    """Seed 003: "validate parent stack before performing ovl_lookup() to further fortify
    the code against xxxat(dfd, ...) syscalls". With the lower of a looked-up directory
    renamed or deleted, openat(dirfd, O_CREAT) and mkdirat-like creation through the dir
    fd and the cwd (each copies the directory up from its changed lower) return in time
    with success or ENOENT/ESTALE/EIO, and the kernel logs no splat (overlayfs.rst)."""
    start = guest.must.kmsg_seq()
    ovl = local_overlay(guest, lower_fs)
    h = hold(guest, ovl, "d")
    if change == "rename":
        guest.must.rename(lower_fs.path("d"), lower_fs.path("d2"))
    else:
        guest.run(["rm", "-rf", lower_fs.path("d")])
    probe = Probe(guest)
    probe("openat(dirfd, new, O_CREAT)", "open", "new", os.O_CREAT | os.O_WRONLY, 0o644,
          dir_fd=h.dfd)
    probe("openat(O_PATH fd, new2, O_CREAT)", "open", "new2", os.O_CREAT | os.O_WRONLY, 0o644,
          dir_fd=h.pfd)
    probe("open ./new3 O_CREAT (cwd)", "open", "new3", os.O_CREAT | os.O_WRONLY, 0o644)
    probe("mkdir ./sub2 (cwd)", "mkdir", "sub2")
    probe("openat(dirfd, f, O_WRONLY)", "open", "f", os.O_WRONLY, dir_fd=h.dfd)
    probe("getdents dirfd", "listdir", h.dfd)
    probe("getdents . (cwd)", "listdir", ".")
    probe("stat d", "stat", ovl.path("d"))
    probe("getdents d", "listdir", ovl.path("d"))
    assert_no_splat(guest, start)


# -- index=on: the lower root swapped offline ------------------------------------------
@pytest.mark.upper_fs("ext4", "xfs")
def test_index_lower_root_swapped_mount_fails_estale(guest, upper):
    """Scenario 26, overlayfs.rst "Inode index": "On failure to verify the lower root
    origin, mount will fail with ESTALE". Lower and upper on one block filesystem (file
    handles, a UUID): mount with index=on (shown in /proc/self/mounts), umount, replace the
    lower by a copy (new inodes), mount again: ESTALE. With the original lower back in
    place the mount works again, so the ESTALE is the origin check."""
    require(guest, "overlay")
    lower = make_tree(guest, upper.path("lower"), {"f": DATA, "d/g": DATA})
    ovl = Overlay(guest, "idx", [lower], upper, index="on")
    assert ovl.mount() == 0
    line = [m for m in guest.must.read_file("/proc/self/mounts").decode().splitlines()
            if f" {ovl.merged} overlay " in m]
    assert line and "index=on" in line[0].split()[3].split(","), line
    assert guest.read_file(ovl.path("f")) == DATA
    assert ovl.umount() == 0

    guest.must.rename(lower, lower + ".orig")
    guest.run(["cp", "-a", lower + ".orig", lower])
    assert ovl.mount() == errno.ESTALE

    guest.run(["rm", "-rf", lower])
    guest.must.rename(lower + ".orig", lower)
    assert ovl.mount() == 0
    assert guest.read_file(ovl.path("f")) == DATA


# -- remote lower: NFS served from a network namespace of the same guest -----------------
NFS_TREE = {"f": DATA, "d/f": DATA, "d/sub/g": DATA}
# nfs(5): over TCP the timeout grows linearly by timeo per retransmission, so one request
# gives up after at most timeo*(1+2+..+(retrans+1)) = 6 s here (TIMEO=10, RETRANS=2 in
# the library's NFS_OPTIONS); a syscall makes a few.
OUTAGE_CALL_BOUND = 60


@pytest.fixture
def nfs(guest):
    """An NFS lower layer holding NFS_TREE, or a skip naming what the guest lacks."""
    skip_unless_nfs(guest)
    return NfsLower(guest, NFS_TREE).start()


@pytest.mark.nfs
def test_nfs_lower_file_replaced_on_server_estale(guest, nfs):
    """Scenario 25, seed 003 ("conversion of zero return value to -ESTALE") and
    ovl_revalidate_real(): `f` is looked up through the overlay, then replaced on the
    server by rename-over. Its NFS dentry revalidates to 0 (new file handle), which
    overlayfs turns into ESTALE; the VFS re-looks a name up only on 0, so the overlay
    dentry keeps failing, while the plain NFS mount sees the new file. The fd opened
    before returns success or ENOENT/ESTALE/EIO; no splat in the kernel log."""
    g = guest
    start = g.must.kmsg_seq()
    ovl = nfs.overlay()
    assert g.read_file(ovl.path("f")) == DATA
    fd = g.must.open(ovl.path("f"), os.O_RDONLY)
    g.must.write_file(f"{nfs.export}/f.new", NEW)
    g.must.rename(f"{nfs.export}/f.new", f"{nfs.export}/f")

    probe = Probe(g)
    assert probe("stat f", "stat", ovl.path("f")) == errno.ESTALE
    assert probe("open f", "open", ovl.path("f"), os.O_RDONLY) == errno.ESTALE
    assert probe("plain NFS read f", "read_file", f"{nfs.mnt}/f") == NEW
    assert probe("stat f again", "stat", ovl.path("f")) == errno.ESTALE
    probe("pread fd opened before", "pread", fd, 4096, 0)
    probe("getdents /", "listdir", ovl.path())
    assert_no_splat(g, start)


@pytest.mark.nfs
def test_nfs_lower_dir_renamed_on_server(guest, nfs):
    """Seed 003 ("ovl: invalidate dentry if lower was renamed") and ovl_revalidate_real():
    d (looked up, a dir fd open on it) is renamed to d2 on the server. The lookup of d on
    the server now fails, so the NFS dentry revalidates to 0 and the overlay returns
    ESTALE for d and for paths through it. openat/getdents on the old dir fd, and the new
    name, return in time with success or ENOENT/ESTALE/EIO; no splat in the kernel log."""
    g = guest
    start = g.must.kmsg_seq()
    ovl = nfs.overlay()
    h = hold(g, ovl, "d")
    g.must.rename(f"{nfs.export}/d", f"{nfs.export}/d2")

    probe = Probe(g)
    assert probe("stat d", "stat", ovl.path("d")) == errno.ESTALE
    assert probe("stat d/f", "stat", ovl.path("d/f")) == errno.ESTALE
    probe_holders(probe, h)
    probe_names(probe, ovl, "d2")
    probe_names(probe, ovl, "d")
    probe_holders(probe, h)
    assert_no_splat(g, start)


@pytest.mark.nfs
def test_nfs_lower_file_renamed_on_server(guest, nfs):
    """The file counterpart of the directory rename, with the old inode still alive on the
    server: `f`, looked up through the overlay, is renamed to f2 on the server. The lookup
    of f on the server fails, so its NFS dentry revalidates to 0 and the overlay returns
    ESTALE for f (ovl_revalidate_real()), although the file itself is still there: the
    new name reads its data through the overlay. No splat in the kernel log."""
    g = guest
    start = g.must.kmsg_seq()
    ovl = nfs.overlay()
    assert g.read_file(ovl.path("f")) == DATA
    g.must.rename(f"{nfs.export}/f", f"{nfs.export}/f2")

    probe = Probe(g)
    assert probe("stat f", "stat", ovl.path("f")) == errno.ESTALE
    assert probe("open f", "open", ovl.path("f"), os.O_RDONLY) == errno.ESTALE
    assert probe("read f2", "read_file", ovl.path("f2")) == DATA
    assert_no_splat(g, start)


@pytest.mark.nfs
def test_nfs_link_cut_and_restored(guest, nfs):
    """overlayfs.rst ("will not result in a crash or deadlock"), nfs(5) "soft": with the
    overlay in use (cwd, dir fd and an open file inside d), the server's end of the veth
    pair goes down (pyroute2). stat through the overlay fails with EIO, the soft
    timeout's error, which overlayfs passes on from ->d_revalidate(); every other call
    returns within the mount's timeouts with success or ENOENT/ESTALE/EIO. Once the link
    is up again the same calls work and return the data; no splat in the kernel log."""
    g = guest
    start = g.must.kmsg_seq()
    ovl = nfs.overlay()
    h = hold(g, ovl, "d")

    g.defer(nfs.link, "up")
    nfs.link("down")
    probe = Probe(g)
    assert probe("stat d/f (link down)", "stat", ovl.path("d/f")) == errno.EIO
    probe("read d/f", "read_file", ovl.path("d/f"))
    probe("getdents dirfd", "listdir", h.dfd)
    probe("openat(dirfd, f)", "open", "f", os.O_RDONLY, dir_fd=h.dfd)
    probe("stat ./f (cwd)", "stat", "f")
    probe("pread open fd", "pread", h.ffd, 4096, 0)
    probe("getdents /", "listdir", ovl.path())
    slow = [(what, round(s, 1)) for what, _r, s in probe.seen if s > OUTAGE_CALL_BOUND]
    assert not slow, f"calls past the soft mount's timeouts ({OUTAGE_CALL_BOUND} s): {slow}"

    nfs.link("up")
    deadline = time.monotonic() + 120
    while True:
        result = probe("stat d/f (link up)", "stat", ovl.path("d/f"))
        if not is_errno(result) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not is_errno(result), f"the overlay did not work again after the link came back: {result!r}"
    assert g.read_file(ovl.path("d/f")) == DATA
    assert g.listdir(h.dfd) == ["f", "sub"]
    fd = g.open("f", os.O_RDONLY, dir_fd=h.dfd)
    assert not is_errno(fd), fd
    assert g.pread(h.ffd, len(DATA) + 1, 0) == DATA
    assert g.read_file("f") == DATA  # relative to the cwd
    assert_no_splat(g, start)
