"""Overlay layers as an object: lower dirs, upper and work dirs, options, raw mount(2)."""

import os
import stat
import struct

MS_REMOUNT = 0x20
MNT_DETACH = 0x2
# Options that are flags (present or absent) rather than key=value.
FLAG_OPTIONS = ("volatile", "userxattr")


class Overlay:
    """One overlay mount.

    lowers: lower directories, top first. upper: a Filesystem, a directory (a path),
    or None for a read-only overlay; the overlay's upper and work dirs are
    `<name>/upper` and `<name>/work` on it, so several overlays can share one upper.
    options: volatile=True, metacopy="on", index="on", redirect_dir="follow",
    xino="off", nfs_export="on", userxattr=True, ... passed to the kernel as is.
    """

    def __init__(self, guest, name, lowers, upper=None, merged=None, **options):
        self.guest = guest
        self.name = name
        self.lowers = list(lowers)
        self.upperfs = upper
        self.merged = merged or f"{guest.scratch}/{name}.merged"
        base = upper if isinstance(upper, str) else getattr(upper, "mnt", None)
        self.upper = f"{base}/{name}/upper" if base else None
        self.work = f"{base}/{name}/work" if base else None
        self.options = options
        self.mounted = False

    @property
    def xattr_prefix(self):
        """The overlay xattrs' prefix: user.overlay. with userxattr, else trusted.overlay."""
        return "user.overlay." if self.options.get("userxattr") else "trusted.overlay."

    def mount_data(self):
        """The mount(2) data string: lowerdir=..., upperdir=..., workdir=..., then the options."""
        parts = [f"lowerdir={':'.join(self.lowers)}"]
        if self.upper:
            parts += [f"upperdir={self.upper}", f"workdir={self.work}"]
        for key, value in self.options.items():
            if key in FLAG_OPTIONS:
                if value:
                    parts.append(key)
            elif value is not None:
                parts.append(f"{key}={value}")
        return ",".join(parts)

    def mount(self, flags=0):
        """mount(2) the overlay; 0 or the Errno. Unmounted at the end of the case."""
        for d in [self.merged] + ([self.upper, self.work] if self.upper else []):
            self.guest.must.makedirs(d)
        result = self.guest.mount("overlay", self.merged, "overlay", flags, self.mount_data())
        if result == 0 and not self.mounted:
            self.mounted = True
            self.guest.defer(self._cleanup)
        return result

    def copy_up(self, rel, data, flush):
        """Open `rel` for writing (the copy-up), write `data` at offset 0 and flush it,
        flush="sync" (sync(2)) or "fsync" (the fd): its upper blocks are allocated and
        healthy before a fault window. Returns the fd."""
        g = self.guest
        fd = g.must.open(self.path(rel), os.O_RDWR)
        g.must.pwrite(fd, data, 0)
        if flush == "sync":
            g.must.sync()
        elif flush == "fsync":
            g.must.fsync(fd)
        else:
            raise ValueError(f"flush is 'sync' or 'fsync', not {flush!r}")
        return fd

    def remount(self, flags=0, data=None):
        """Raw MS_REMOUNT: the kernel sees exactly `data` (overlay ignores most of it)."""
        return self.guest.mount("overlay", self.merged, "overlay", MS_REMOUNT | flags, data)

    def umount(self):
        """umount2(2) of the merged directory: 0 or the Errno."""
        result = self.guest.umount2(self.merged, 0)
        if result == 0:
            self.mounted = False
        return result

    def mount_again(self, upper_fs_too=False, **options):
        """Unmount and mount again, so lookups start from what the layers hold; with
        upper_fs_too the upper filesystem is unmounted and mounted in between (what reached
        its disk); `options` change mount options from now on. 0 or the Errno of the
        overlay's mount(2)."""
        self._cleanup()
        self.options.update(options)
        if upper_fs_too:
            self.upperfs.umount()
            self.upperfs.mount()
        return self.mount()

    def _cleanup(self):
        if self.mounted:
            self.guest.chdir("/")
            self.guest.close_all()
            self.guest.must.umount2(self.merged, 0)
            self.mounted = False

    # -- paths -----------------------------------------------------------------
    def path(self, rel=""):
        """The path of `rel` in the merged (overlay) tree."""
        return f"{self.merged}/{rel}" if rel else self.merged

    def upper_path(self, rel=""):
        """The path of `rel` in this overlay's upper directory (`<upper>/<name>/upper`)."""
        return f"{self.upper}/{rel}" if rel else self.upper

    def lower_path(self, rel="", index=0):
        """The path of `rel` in lower directory `index` (0: the top one)."""
        return f"{self.lowers[index]}/{rel}" if rel else self.lowers[index]

    @property
    def volatile_dir(self):
        """Left behind by a volatile mount; its presence refuses the next mount."""
        return f"{self.work}/work/incompat/volatile"

    def clear_volatile_incompat(self):
        """Remove the volatile marker a volatile mount left, so that the upper mounts again."""
        self.guest.run(["rm", "-rf", self.volatile_dir])

    def upper_xattrs(self, rel):
        """The overlay's own xattrs on the upper copy of `rel`: {short name: value}."""
        names = self.guest.must.listxattr(self.upper_path(rel), False)
        out = {}
        for name in names:
            if name.startswith(self.xattr_prefix):
                out[name[len(self.xattr_prefix):]] = self.guest.must.getxattr(
                    self.upper_path(rel), name, False)
        return out


def posix_acl(*entries):
    """The xattr value of a POSIX ACL (system.posix_acl_access): version 2, then a (tag,
    perm, id) triple per entry, e.g. (0x01, 6, 0xFFFFFFFF) for user::rw-."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def create_file(guest, path, data, mode=0o644):
    """open(O_CREAT | O_EXCL | O_WRONLY), write `data`, close: 0, or the open's Errno."""
    fd = guest.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    if not isinstance(fd, int):
        return fd
    guest.must.write(fd, data)
    guest.must.close(fd)
    return 0


def make_tree(guest, root, files):
    """Create directories and files under root: {"d/f": b"data", "d2/": None}."""
    guest.must.makedirs(root)
    for rel, data in files.items():
        path = f"{root}/{rel}"
        if rel.endswith("/"):
            guest.must.makedirs(path)
            continue
        guest.must.makedirs(os.path.dirname(path))
        fd = guest.must.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        if data:
            guest.must.write(fd, data)
        guest.must.close(fd)
    return root


def read_tree(guest, root):
    """Everything under `root` as [(relative path, what)] sorted by path: a file's bytes,
    "dir", "-> target" for a symlink, "mode M rdev R" for anything else. A name that a
    directory lists twice comes twice, so comparing two trees compares their listings too;
    a listed name that cannot be lstat()ed fails the call."""
    out = []

    def walk(rel):
        for name, _ino in guest.must.scandir(f"{root}/{rel}" if rel else root):
            path = f"{rel}/{name}" if rel else name
            full = f"{root}/{path}"
            mode, rdev = (guest.must.lstat(full)[k] for k in ("st_mode", "st_rdev"))
            if stat.S_ISDIR(mode):
                out.append((path, "dir"))
                walk(path)
            elif stat.S_ISREG(mode):
                out.append((path, guest.must.read_file(full)))
            elif stat.S_ISLNK(mode):
                out.append((path, "-> " + guest.must.readlink(full)))
            else:
                out.append((path, f"mode {mode:o} rdev {rdev}"))

    walk("")
    return sorted(out, key=lambda entry: entry[0])
