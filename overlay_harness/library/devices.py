"""Scratch block devices in the guest, with device-mapper faults switched at any time.

    sparse file (guest tmpfs) -> loop device -> dm device NAME (/dev/dm-N)

The dm table starts `linear` (healthy). A case loads another table whenever it
likes, through suspend --nolockfs / load / resume, so dirty pages are not
flushed on the way:

    error     every I/O fails (dm-error)
    flakey    dm-flakey up/down intervals, optionally error_writes or drop_writes
    targeted  writes fail only on the sectors holding one file's data (FIEMAP),
              reads still work; metadata and journal stay healthy

`dev.failing(...)` is an error window: load the faulty table, let the case
dirty pages, force writeback with sync(2) (which records the error without
consuming it), and heal.
"""

import contextlib
import os
from dataclasses import dataclass, field

from .overlay import make_tree

SECTOR = 512
FLAKEY_DOWN = "0 1"  # up 0 s, down 1 s: always down


class DeviceError(Exception):
    """A device operation did not do what the case relies on."""


@dataclass
class Window:
    """What happened during an error window: the kernel's I/O error lines."""

    io_errors: list = field(default_factory=list)


class ScratchDevice:
    """A dm device in the guest whose table a case switches at any time: healthy (linear),
    error, flakey, or targeted at files' data; `failing()` / `faulty()` are error windows.
    faults=False (--without-faults): faulty tables are not loaded."""

    def __init__(self, guest, name, size_mb=512, backing_dir=None, faults=True):
        self.guest = guest
        self.faults = faults  # False: faulty tables are not loaded (to check that cases can fail)
        self.name = name
        self.size_bytes = size_mb << 20
        self.sectors = self.size_bytes // SECTOR
        self.backing = f"{backing_dir or guest.scratch}/{name}.img"
        self.loop = None
        self.table = None
        self.path = None  # /dev/dm-N once created
        self._heal_queued = False

    def create(self):
        """Make the device: a sparse file on the scratch tmpfs, a loop device, a linear
        dm device (`.path`: /dev/dm-N); removed at the end of the case."""
        g = self.guest
        fd = g.must.open(self.backing, 0o100 | 0o1, 0o600)  # O_CREAT | O_WRONLY
        g.must.ftruncate(fd, self.size_bytes)                 # sparse
        g.must.close(fd)
        self.loop = g.must.loop_attach(self.backing)
        g.defer(self._remove_loop)
        # The agent drives device mapper through its ioctls (as dmsetup does), and the
        # kernel's own node (/dev/dm-N on devtmpfs) is there as soon as the device is.
        self.path = "/dev/" + g.must.dm_create(self.name, self._linear_table())
        self.table = "linear"
        g.defer(self._remove_dm)
        return self

    def _remove_loop(self):
        self.guest.must.loop_detach(self.loop)
        self.guest.must.unlink(self.backing)

    def _remove_dm(self):
        self.guest.must.dm_remove(self.name)

    # -- tables ----------------------------------------------------------------
    def _linear_table(self, start=0, count=None):
        count = self.sectors - start if count is None else count
        return f"{start} {count} linear {self.loop} {start}"

    def load(self, table, label):
        """Switch to `table` (dm table text) without flushing the filesystem above."""
        g = self.guest
        if not self.faults and label != "linear":
            self.table = f"{label} (not loaded: --without-faults)"
            return
        # Resuming with a new table suspends the device first; nolockfs keeps that
        # suspend from freezing (and so flushing) the filesystem above it.
        g.must.dm_load(self.name, table)
        g.must.dm_resume(self.name, nolockfs=True)
        self.table = label
        if label != "linear" and not self._heal_queued:
            # Undo next to the do: a case that fails with a fault loaded still gets its
            # filesystem unmounted through a healthy table.
            g.defer(self._heal)
            self._heal_queued = True

    def _heal(self):
        self._heal_queued = False
        if self.table != "linear":
            self.linear()

    def linear(self):
        """The healthy table: every sector maps to the loop device."""
        self.load(self._linear_table(), "linear")

    def error(self):
        """dm-error over the whole device: every read and write fails with EIO."""
        self.load(f"0 {self.sectors} error", "error")

    def flakey(self, up=0, down=1, feature=None):
        """dm-flakey over the whole device; feature: None, 'error_writes' or 'drop_writes'."""
        features = f" 1 {feature}" if feature else ""
        self.load(f"0 {self.sectors} flakey {self.loop} 0 {up} {down}{features}",
                  f"flakey({up},{down},{feature})")

    def targeted(self, *paths):
        """Fail writes to the data sectors of `paths` (files on this device); all else healthy."""
        ranges = sorted(r for p in paths for r in self.data_sectors(p))
        if not ranges:
            raise DeviceError(f"{paths}: no data blocks on {self.name} to target "
                              "(write and sync the file first)")
        lines, pos = [], 0
        for start, count in ranges:
            if start < pos:
                raise DeviceError(f"overlapping extents in {paths}")
            if start > pos:
                lines.append(self._linear_table(pos, start - pos))
            lines.append(f"{start} {count} flakey {self.loop} {start} {FLAKEY_DOWN} 1 error_writes")
            pos = start + count
        if pos < self.sectors:
            lines.append(self._linear_table(pos))
        self.load("\n".join(lines), f"targeted({', '.join(map(str, paths))})")
        return ranges

    def data_sectors(self, path):
        """[(first sector, count)] of the file's data on this device, from FIEMAP."""
        extents = self.guest.must.fiemap(path)
        out = []
        for _logical, physical, length, flags in extents:
            if flags & (0x2 | 0x4 | 0x8 | 0x200):  # UNKNOWN, DELALLOC, ENCODED, DATA_INLINE
                raise DeviceError(f"{path}: extent without a fixed location (flags {flags:#x})")
            out.append((physical // SECTOR, (length + SECTOR - 1) // SECTOR))
        return out

    # -- fault windows ---------------------------------------------------------
    def _load_fault(self, mode, paths, kwargs):
        if mode == "targeted":
            self.targeted(*paths)
        elif mode == "error":
            self.error()
        elif mode == "error_writes":
            self.flakey(feature="error_writes")
        elif mode == "flakey":
            self.flakey(**kwargs)
        else:
            raise ValueError(f"unknown fault mode {mode!r}")

    @contextlib.contextmanager
    def faulty(self, mode="targeted", paths=(), **kwargs):
        """A fault window without writeback of its own: the faulty table while the block
        runs, healed when it ends (also when it fails).

        mode: 'targeted' (paths= files whose data writes fail), 'error' (every read and
        write fails), 'error_writes' (every write fails, reads work: dm-flakey with that
        feature), or 'flakey' (kwargs up/down/feature).
        """
        self._load_fault(mode, paths, kwargs)
        try:
            yield
        finally:
            self.linear()

    @contextlib.contextmanager
    def failing(self, mode="targeted", paths=(), **kwargs):
        """Error window: faulty table, the case dirties pages, sync(2), heal (modes as
        in faulty())."""
        g = self.guest
        start = g.must.kmsg_seq()
        self._load_fault(mode, paths, kwargs)
        window = Window()
        try:
            yield window
            g.must.sync()
        finally:
            self.linear()
        window.io_errors = [line for line in g.kmsg_lines(start)
                            if "I/O error" in line or "error writing" in line.lower()]


# The whole device failing, the two ways a case under faults is run: every write failing
# (reads work), and every read and write failing.
WHOLE_DEVICE_FAULTS = ("error_writes", "error")

# mkfs argv and mount data per upper filesystem kind; mkfs options keep formatting cheap
# (lazy inode table and journal init; no discard, which on a fresh sparse file only costs:
# 0.14 s instead of 0.2 s for ext4, 0.23 s instead of 0.4-0.55 s for xfs under TCG).
FILESYSTEMS = {
    "ext4": ("ext4", ["mkfs.ext4", "-F", "-q", "-b", "4096",
                      "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"], ""),
    "ext4-nojournal": ("ext4", ["mkfs.ext4", "-F", "-q", "-b", "4096", "-O", "^has_journal",
                                "-E", "lazy_itable_init=1,nodiscard"], ""),
    "xfs": ("xfs", ["mkfs.xfs", "-f", "-q", "-K"], ""),
    "btrfs": ("btrfs", ["mkfs.btrfs", "-f", "-q", "-K"], ""),
}


class Filesystem:
    """A filesystem of kind `kind` on a ScratchDevice, mounted in the scratch directory."""

    def __init__(self, guest, kind, device, mountpoint):
        if kind not in FILESYSTEMS:
            raise ValueError(f"unknown filesystem {kind!r} (known: {', '.join(FILESYSTEMS)})")
        self.guest = guest
        self.kind = kind
        self.fstype, self.mkfs, self.data = FILESYSTEMS[kind]
        self.dev = device
        self.mnt = mountpoint

    def create(self):
        """mkfs on the device, then mount it at the mountpoint (unmounted at the end of the case)."""
        self.guest.run([*self.mkfs, self.dev.path], timeout=120)
        self.guest.must.mkdir(self.mnt)
        self.mount()
        return self

    def mount(self):
        """Mount it (again) at the mountpoint."""
        self.guest.must.mount(self.dev.path, self.mnt, self.fstype, 0, self.data or None)
        self.guest.defer(self.umount)

    def umount(self):
        """Unmount it when it is mounted."""
        if self.mnt in self.guest.mounts():
            self.guest.must.umount2(self.mnt, 0)

    def path(self, rel=""):
        """The path of `rel` on this filesystem."""
        return f"{self.mnt}/{rel}" if rel else self.mnt

    def open_root(self):
        """A fresh fd on the filesystem's root directory: what syncfs(2) on it is given."""
        return self.guest.must.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)


class LowerFs:
    """A lower directory, `dirname`, on a filesystem of its own (a scratch dm device):
    page-cache residency and file handles are the lower's own, not tmpfs'."""

    def __init__(self, guest, files, kind="ext4", size_mb=64, dirname="l", sync=True):
        dev = ScratchDevice(guest, f"ovh-lower-{os.getpid()}", size_mb=size_mb).create()
        self.fs = Filesystem(guest, kind, dev, f"{guest.scratch}/lowerfs").create()
        self.dir = make_tree(guest, self.fs.path(dirname), files)
        if sync:
            guest.must.sync()

    def path(self, rel=""):
        """The path of `rel` in the lower directory."""
        return f"{self.dir}/{rel}" if rel else self.dir

