#!/usr/bin/env python3
"""Guest agent: runs system calls for the host and hands back results or errnos.

Standard library only; started once per VM (``python3 -I -S agent.py``).

Protocol: one JSON object per line in each direction.
  request   {"id": 7, "op": "fsync", "args": [5]}
  success   {"id": 7, "ok": 0}
  errno     {"id": 7, "errno": 5, "name": "EIO", "strerror": "Input/output error"}
  bad input {"id": 7, "error": "TypeError: ..."}   (the agent keeps serving)
Bytes travel as {"$b": "<base64>"} in both directions.

File descriptors opened through the agent stay open across calls and
connections; fd arguments must name one of them, so a request can never close
the agent's own channel.
"""

import base64
import ctypes
import errno
import json
import mmap
import os
import sys
import time

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
LIBC.syncfs.argtypes = [ctypes.c_int]
LIBC.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
LIBC.mmap.restype = ctypes.c_void_p
LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
LIBC.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
LIBC.statfs.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
LIBC.syscall.restype = ctypes.c_long

# The new mount API (x86_64 syscall numbers; include/uapi/linux/mount.h constants).
SYS_MOVE_MOUNT, SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 429, 430, 431, 432
FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_SET_FD, FSCONFIG_CMD_CREATE = 0, 1, 5, 6
MOVE_MOUNT_F_EMPTY_PATH, AT_FDCWD = 0x4, -100
FS_IOC_FIEMAP = 0xC020660B
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FICLONE = 0x80086601, 0x40086602, 0x40049409
SYS_IO_SETUP, SYS_IO_DESTROY, SYS_IO_GETEVENTS, SYS_IO_SUBMIT = 206, 207, 208, 209
SYS_NAME_TO_HANDLE_AT, SYS_OPEN_BY_HANDLE_AT = 303, 304
IOCB_CMD_PREAD, IOCB_CMD_PWRITE = 0, 1
MAX_HANDLE_SZ = 128
LOOP_SET_FD, LOOP_CLR_FD, LOOP_CTL_GET_FREE = 0x4C00, 0x4C01, 0x4C82
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
PAGE = os.sysconf("SC_PAGE_SIZE")
READY_MARK = "OVH-AGENT-READY"


class ProtocolError(Exception):
    """The request itself is wrong (not a kernel error)."""


def _check(ret):
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret


def _b(s):
    return None if s is None else os.fsencode(s)


def encode(value):
    if isinstance(value, (bytes, bytearray)):
        return {"$b": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def decode(value):
    if isinstance(value, dict):
        if set(value) == {"$b"}:
            return base64.b64decode(value["$b"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def stat_dict(st):
    return {k: getattr(st, k) for k in (
        "st_mode", "st_ino", "st_dev", "st_rdev", "st_nlink", "st_uid", "st_gid", "st_size",
        "st_blocks", "st_blksize", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}


class Agent:
    def __init__(self):
        self.fds = {}  # fd -> path it was opened with
        self.maps = {}  # handle -> mmap.mmap

    def fd(self, fd):
        if not isinstance(fd, int) or isinstance(fd, bool) or fd not in self.fds:
            raise ProtocolError(f"fd {fd!r} was not opened through the agent "
                                f"(open: {sorted(self.fds)})")
        return fd

    # -- calls ------------------------------------------------------------
    def op_ping(self):
        """The agent's pid and the guest's release: {"pid": N, "release": "..."}."""
        return {"pid": os.getpid(), "release": os.uname().release}

    def op_uname(self):
        """os.uname() as a list: [sysname, nodename, release, version, machine]."""
        return list(os.uname())

    def op_open(self, path, flags, mode=0o644, dir_fd=None):
        """open(2) (openat(2) with dir_fd, an fd from open): the new fd, kept open across calls."""
        if dir_fd is not None:
            self.fd(dir_fd)
        fd = os.open(path, flags, mode, dir_fd=dir_fd)
        self.fds[fd] = path
        return fd

    def op_close(self, fd):
        """close(2) of an fd opened through the agent: 0."""
        os.close(self.fd(fd))
        del self.fds[fd]
        return 0

    def op_close_all(self):
        """Close every fd and mapping opened through the agent: the fds closed, sorted."""
        for m in self.maps.values():
            m.close()
        self.maps.clear()
        closed = sorted(self.fds)
        for fd in closed:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()
        return closed

    def op_fds(self):
        """The fds open through the agent: {"fd": path}."""
        return {str(fd): path for fd, path in self.fds.items()}

    def op_read(self, fd, count):
        """read(2): the bytes read (b"" at the end of the file)."""
        return os.read(self.fd(fd), count)

    def op_pread(self, fd, count, offset):
        """pread(2): the bytes read at offset."""
        return os.pread(self.fd(fd), count, offset)

    def op_write(self, fd, data):
        """write(2): the number of bytes written."""
        return os.write(self.fd(fd), data)

    def op_pwrite(self, fd, data, offset):
        """pwrite(2): the number of bytes written at offset."""
        return os.pwrite(self.fd(fd), data, offset)

    def op_lseek(self, fd, offset, whence=os.SEEK_SET):
        """lseek(2): the new offset."""
        return os.lseek(self.fd(fd), offset, whence)

    def op_fsync(self, fd):
        """fsync(2): 0 (the errno that writeback reports, e.g. EIO, otherwise)."""
        os.fsync(self.fd(fd))
        return 0

    def op_fdatasync(self, fd):
        """fdatasync(2): 0."""
        os.fdatasync(self.fd(fd))
        return 0

    def op_syncfs(self, fd):
        """syncfs(2) of the filesystem that holds fd: 0."""
        return _check(LIBC.syncfs(self.fd(fd)))

    def op_sync(self):
        """sync(2): 0 (sync reports no errors)."""
        os.sync()
        return 0

    def op_mmap(self, fd, length, offset=0):
        """A shared read-write mapping of [offset, offset+length) of the file (inside its
        size); returns a handle for mwrite, msync and munmap."""
        m = mmap.mmap(self.fd(fd), length, mmap.MAP_SHARED,
                      mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        handle = max(self.maps, default=0) + 1
        self.maps[handle] = m
        return handle

    def _map(self, handle):
        if handle not in self.maps:
            raise ProtocolError(f"no mapping {handle!r} (mapped: {sorted(self.maps)})")
        return self.maps[handle]

    def op_mwrite(self, handle, data, offset=0):
        """Store bytes through the mapping (dirties its pages, no write(2))."""
        m = self._map(handle)
        if offset < 0 or offset + len(data) > len(m):
            raise ProtocolError(f"mwrite [{offset}, {offset + len(data)}) outside the "
                                f"{len(m)}-byte mapping")
        m[offset:offset + len(data)] = data
        return len(data)

    def op_msync(self, handle):
        """msync(MS_SYNC) over the whole mapping."""
        self._map(handle).flush()
        return 0

    def op_munmap(self, handle):
        """Unmap a mapping made by mmap: 0."""
        self._map(handle).close()
        del self.maps[handle]
        return 0

    def op_ftruncate(self, fd, length):
        """ftruncate(2): 0."""
        os.ftruncate(self.fd(fd), length)
        return 0

    def op_truncate(self, path, length):
        """truncate(2): 0."""
        os.truncate(path, length)
        return 0

    def op_fallocate(self, fd, mode, offset, length):
        """fallocate(2) with its mode flags: 0."""
        return _check(LIBC.fallocate(self.fd(fd), mode, offset, length))

    def op_fadvise(self, fd, offset, length, advice):
        """posix_fadvise(2): 0."""
        os.posix_fadvise(self.fd(fd), offset, length, advice)
        return 0

    def op_copy_file_range(self, fd_in, fd_out, count, offset_in=None, offset_out=None):
        """copy_file_range(2): the number of bytes copied."""
        return os.copy_file_range(self.fd(fd_in), self.fd(fd_out), count, offset_in, offset_out)

    def op_sendfile(self, out_fd, in_fd, offset, count):
        """sendfile(2) from in_fd (at offset) to out_fd (a file: the kernel splices into
        it): the number of bytes written."""
        return os.sendfile(self.fd(out_fd), self.fd(in_fd), offset, count)

    def op_clone_file(self, src_fd, dst_fd):
        """ioctl(dst_fd, FICLONE, src_fd): dst shares src's data (reflink): 0."""
        import fcntl
        fcntl.ioctl(self.fd(dst_fd), FICLONE, self.fd(src_fd))
        return 0

    def op_get_flags(self, fd):
        """ioctl(FS_IOC_GETFLAGS): the inode flags (FS_APPEND_FL, FS_NOATIME_FL, ...)."""
        import fcntl
        import struct
        return struct.unpack("=i", fcntl.ioctl(self.fd(fd), FS_IOC_GETFLAGS, bytes(4)))[0]

    def op_set_flags(self, fd, flags):
        """ioctl(FS_IOC_SETFLAGS) (what chattr does): 0."""
        import fcntl
        import struct
        fcntl.ioctl(self.fd(fd), FS_IOC_SETFLAGS, struct.pack("=i", flags))
        return 0

    def op_aio(self, fd, op, offset, data_or_count):
        """One request through Linux AIO (io_setup, io_submit, io_getevents: never a
        synchronous kiocb): "pread" with a count returns the bytes read, "pwrite" with
        bytes returns the count written; a failed request raises its errno."""
        import struct
        opcode = {"pread": IOCB_CMD_PREAD, "pwrite": IOCB_CMD_PWRITE}[op]
        size = data_or_count if op == "pread" else len(data_or_count)
        # an anonymous mapping: page-aligned, as O_DIRECT wants it
        m = mmap.mmap(-1, max(PAGE, -(-size // PAGE) * PAGE))
        if op == "pwrite":
            m[:size] = data_or_count
        buf = ctypes.c_char.from_buffer(m)
        ctx = ctypes.c_ulong(0)
        try:
            _check(LIBC.syscall(SYS_IO_SETUP, 1, ctypes.byref(ctx)))
            iocb = ctypes.create_string_buffer(struct.pack(
                "=QIiHhIQQqQII", 7, 0, 0, opcode, 0, self.fd(fd), ctypes.addressof(buf), size,
                offset, 0, 0, 0))
            iocbs = (ctypes.c_void_p * 1)(ctypes.addressof(iocb))
            _check(LIBC.syscall(SYS_IO_SUBMIT, ctx, 1, iocbs))
            event = ctypes.create_string_buffer(32)  # struct io_event: data, obj, res, res2
            while _check(LIBC.syscall(SYS_IO_GETEVENTS, ctx, 1, 1, event, None)) < 1:
                pass
            res = struct.unpack_from("=q", event, 16)[0]
            if res < 0:
                raise OSError(-res, os.strerror(-res))
            return m[:res] if op == "pread" else res
        finally:
            if ctx.value:
                LIBC.syscall(SYS_IO_DESTROY, ctx)
            del buf  # the mapping cannot close while a ctypes view of it lives
            m.close()

    def op_name_to_handle(self, path, follow=True):
        """name_to_handle_at(2): {"handle_type": N, "handle": bytes, "mount_id": N}."""
        import struct
        buf = ctypes.create_string_buffer(struct.pack("=Ii", MAX_HANDLE_SZ, 0) + bytes(MAX_HANDLE_SZ))
        mount_id = ctypes.c_int(0)
        flags = 0x400 if follow else 0  # AT_SYMLINK_FOLLOW
        _check(LIBC.syscall(SYS_NAME_TO_HANDLE_AT, AT_FDCWD, _b(path), buf,
                            ctypes.byref(mount_id), flags))
        nbytes, htype = struct.unpack_from("=Ii", buf)
        return {"handle_type": htype, "handle": buf.raw[8:8 + nbytes], "mount_id": mount_id.value}

    def op_open_by_handle(self, mount_fd, handle_type, handle, flags=os.O_RDONLY):
        """open_by_handle_at(2) with a handle from name_to_handle: a new fd (kept open)."""
        import struct
        buf = ctypes.create_string_buffer(struct.pack("=Ii", len(handle), handle_type) + handle)
        fd = _check(LIBC.syscall(SYS_OPEN_BY_HANDLE_AT, self.fd(mount_fd), buf, flags))
        self.fds[fd] = f"<handle {handle.hex()}>"
        return fd

    def op_statfs(self, path):
        """statfs(2): {"f_type": the filesystem's magic number, "f_bsize", "f_blocks",
        "f_bfree", "f_bavail", "f_files", "f_ffree", "f_namelen", "f_flags"}."""
        import struct
        buf = ctypes.create_string_buffer(120)  # struct statfs on x86_64
        _check(LIBC.statfs(_b(path), buf))
        (f_type, f_bsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree, _fsid,
         f_namelen, _frsize, f_flags) = struct.unpack_from("=qqQQQQQ8sqqq", buf)
        return {"f_type": f_type, "f_bsize": f_bsize, "f_blocks": f_blocks, "f_bfree": f_bfree,
                "f_bavail": f_bavail, "f_files": f_files, "f_ffree": f_ffree,
                "f_namelen": f_namelen, "f_flags": f_flags}

    def op_mknod(self, path, mode, device=0):
        """mknod(2) (mode includes the file type: stat.S_IFIFO | 0o644, S_IFCHR with a
        device number from os.makedev): 0."""
        os.mknod(path, mode, device)
        return 0

    def op_stat(self, path):
        """stat(2): a dict of st_* fields (st_mode, st_ino, st_dev, st_rdev, st_nlink, st_size,
        st_blocks, ...)."""
        return stat_dict(os.stat(path))

    def op_lstat(self, path):
        """lstat(2): the same dict as stat, for the link itself."""
        return stat_dict(os.lstat(path))

    def op_fstat(self, fd):
        """fstat(2): the same dict as stat."""
        return stat_dict(os.fstat(self.fd(fd)))

    def op_getxattr(self, path, name, follow=True):
        """getxattr(2) (lgetxattr with follow=False): the value, bytes."""
        return os.getxattr(path, name, follow_symlinks=follow)

    def op_setxattr(self, path, name, value, flags=0, follow=True):
        """setxattr(2) (lsetxattr with follow=False): 0."""
        os.setxattr(path, name, value, flags, follow_symlinks=follow)
        return 0

    def op_listxattr(self, path, follow=True):
        """listxattr(2): the names, sorted."""
        return sorted(os.listxattr(path, follow_symlinks=follow))

    def op_removexattr(self, path, name, follow=True):
        """removexattr(2): 0."""
        os.removexattr(path, name, follow_symlinks=follow)
        return 0

    def op_mount(self, source, target, fstype, flags=0, data=None):
        """mount(2) as the kernel gets it (data unaltered): 0."""
        return _check(LIBC.mount(_b(source), _b(target), _b(fstype), flags, _b(data)))

    def op_fsmount(self, fstype, params, target):
        """Mount with the new mount API: fsopen(fstype); fsconfig() for each [key, value] of
        params (a string: FSCONFIG_SET_STRING; an fd opened through the agent:
        FSCONFIG_SET_FD; None: FSCONFIG_SET_FLAG); FSCONFIG_CMD_CREATE; fsmount();
        move_mount() onto target. 0, or the errno of the first call that fails."""
        call = lambda nr, *args: _check(LIBC.syscall(nr, *args))  # noqa: E731
        fs = call(SYS_FSOPEN, _b(fstype), 0)
        try:
            for key, value in params:
                if value is None:
                    call(SYS_FSCONFIG, fs, FSCONFIG_SET_FLAG, _b(key), None, 0)
                elif isinstance(value, int):
                    call(SYS_FSCONFIG, fs, FSCONFIG_SET_FD, _b(key), None, self.fd(value))
                else:
                    call(SYS_FSCONFIG, fs, FSCONFIG_SET_STRING, _b(key), _b(value), 0)
            call(SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0)
            mnt = call(SYS_FSMOUNT, fs, 0, 0)
            try:
                call(SYS_MOVE_MOUNT, mnt, b"", AT_FDCWD, _b(target), MOVE_MOUNT_F_EMPTY_PATH)
            finally:
                os.close(mnt)
        finally:
            os.close(fs)
        return 0

    def op_umount2(self, target, flags=0):
        """umount2(2) with flags (2: MNT_DETACH): 0."""
        return _check(LIBC.umount2(_b(target), flags))

    def op_rename(self, src, dst):
        """rename(2): 0."""
        os.rename(src, dst)
        return 0

    def op_unlink(self, path):
        """unlink(2): 0."""
        os.unlink(path)
        return 0

    def op_mkdir(self, path, mode=0o755):
        """mkdir(2): 0."""
        os.mkdir(path, mode)
        return 0

    def op_makedirs(self, path, mode=0o755):
        """mkdir -p: 0."""
        os.makedirs(path, mode, exist_ok=True)
        return 0

    def op_rmdir(self, path):
        """rmdir(2): 0."""
        os.rmdir(path)
        return 0

    def op_link(self, src, dst, follow=True):
        """link(2) (follow=True) or linkat(2) without AT_SYMLINK_FOLLOW (follow=False: a
        symlink src gets a hard link of its own): 0."""
        os.link(src, dst, follow_symlinks=follow)
        return 0

    def op_symlink(self, target, path):
        """symlink(2) at path pointing to target: 0."""
        os.symlink(target, path)
        return 0

    def op_readlink(self, path):
        """readlink(2): the target."""
        return os.readlink(path)

    def op_chown(self, path, uid, gid, follow=True):
        """chown(2) (lchown with follow=False): 0."""
        os.chown(path, uid, gid, follow_symlinks=follow)
        return 0

    def op_chmod(self, path, mode):
        """chmod(2): 0."""
        os.chmod(path, mode)
        return 0

    def op_utime(self, path, ns=None):
        """utimensat(2) with ns = [atime_ns, mtime_ns] (None: now): 0."""
        os.utime(path, ns=tuple(ns) if ns is not None else None)
        return 0

    def op_listdir(self, path_or_fd):
        """The names in a directory (by path, or by an fd: read from its start), sorted."""
        if isinstance(path_or_fd, int):
            # os.listdir(fd) leaves the fd's offset at the end: rewind first.
            os.lseek(self.fd(path_or_fd), 0, os.SEEK_SET)
        return sorted(os.listdir(path_or_fd))

    def op_scandir(self, path):
        """[name, d_ino] of each entry getdents(2) returns, in its order ("." and ".." left
        out by os.scandir; a name the filesystem lists twice comes twice)."""
        with os.scandir(path) as entries:
            return [[e.name, e.inode()] for e in entries]

    def op_chdir(self, path):
        """chdir(2) of the agent: 0."""
        os.chdir(path)
        return 0

    def op_fchdir(self, fd):
        """fchdir(2) of the agent: 0."""
        os.fchdir(self.fd(fd))
        return 0

    def op_getcwd(self):
        """getcwd(3): the agent's working directory."""
        return os.getcwd()

    def op_mincore(self, path):
        """Pages of the file's page cache that are resident, and its size in pages."""
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            pages = (size + PAGE - 1) // PAGE
            if pages == 0:
                return {"resident": 0, "pages": 0}
            addr = LIBC.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
            if addr in (None, ctypes.c_void_p(-1).value):
                _check(-1)
            try:
                vec = ctypes.create_string_buffer(pages)
                _check(LIBC.mincore(addr, size, vec))
                return {"resident": sum(b & 1 for b in vec.raw), "pages": pages}
            finally:
                LIBC.munmap(addr, size)
        finally:
            os.close(fd)

    def op_fiemap(self, path, sync=True):
        """Extents of the file: [[logical, physical, length, flags], ...] in bytes."""
        import fcntl
        import struct
        fd = os.open(path, os.O_RDONLY)
        try:
            extents, start = [], 0
            while True:
                count = 64
                req = struct.pack("=QQIIII", start, 2**64 - 1 - start,
                                  FIEMAP_FLAG_SYNC if sync else 0, 0, count, 0)
                buf = bytearray(req + bytes(56 * count))
                fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
                mapped = struct.unpack_from("=I", buf, 20)[0]
                last = False
                for i in range(mapped):
                    lo, ph, ln, _r1, _r2, fl = struct.unpack_from("=QQQQQI", buf, 32 + 56 * i)
                    extents.append([lo, ph, ln, fl])
                    start = lo + ln
                    last = bool(fl & FIEMAP_EXTENT_LAST)
                if mapped == 0 or last:
                    return extents
        finally:
            os.close(fd)

    def op_loop_attach(self, path):
        """Attach `path` to a free loop device (what `losetup --find --show` does); its name."""
        import fcntl
        with open("/dev/loop-control", "rb", buffering=0) as ctl:
            while True:
                index = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                dev = f"/dev/loop{index}"
                backing = os.open(path, os.O_RDWR)
                loop = os.open(dev, os.O_RDWR)
                try:
                    fcntl.ioctl(loop, LOOP_SET_FD, backing)
                    return dev
                except OSError as e:
                    if e.errno != errno.EBUSY:  # taken between GET_FREE and SET_FD: next one
                        raise
                finally:
                    os.close(loop)
                    os.close(backing)

    def op_loop_detach(self, dev, timeout=10.0):
        """Detach a loop device (`losetup -d`) and wait until it is: while another opener
        (udev's probe) holds it, LOOP_CLR_FD only marks it for autoclear on last close."""
        import fcntl
        fd = os.open(dev, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, LOOP_CLR_FD)
        finally:
            os.close(fd)
        backing = f"/sys/block/{os.path.basename(dev)}/loop/backing_file"
        deadline = time.monotonic() + timeout
        while os.path.exists(backing):
            if time.monotonic() > deadline:
                raise OSError(errno.EBUSY, f"{dev} still attached after {timeout:.0f} s")
            time.sleep(0.01)
        return 0

    # device mapper through its ioctls (what dmsetup create/load/resume/remove do, without
    # a process per call: each dmsetup costs 0.1-0.2 s under TCG)
    def op_dm_create(self, name, table):
        """`dmsetup create NAME --table TABLE`: the device's kernel name (dm-N)."""
        reply = _dm(DM_DEV_CREATE, name)
        try:
            _dm(DM_TABLE_LOAD, name, table=table)
            _dm(DM_DEV_SUSPEND, name)  # without DM_SUSPEND_FLAG: resume, the table goes live
        except OSError:
            _dm(DM_DEV_REMOVE, name)
            raise
        return dm_kernel_name(reply)

    def op_dm_load(self, name, table):
        """`dmsetup load NAME --table TABLE`: the inactive table, live at the next resume."""
        _dm(DM_TABLE_LOAD, name, table=table)
        return 0

    def op_dm_resume(self, name, nolockfs=True):
        """`dmsetup resume [--nolockfs] NAME`. Resuming with a new table suspends the device
        first; skipping lockfs keeps that suspend from freezing (flushing) the fs above."""
        _dm(DM_DEV_SUSPEND, name, flags=DM_SKIP_LOCKFS_FLAG if nolockfs else 0)
        return 0

    def op_dm_remove(self, name, retry_s=5.0):
        """`dmsetup remove --retry NAME`: EBUSY (a probe holding it open) is retried."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                _dm(DM_DEV_REMOVE, name)
                return 0
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def op_run(self, argv, timeout=60, input=None, env=None):
        """Run argv (a list) in the guest: {"rc", "stdout", "stderr"} ("timed_out" after timeout s)."""
        import subprocess
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ProtocolError("run: argv must be a list of strings")
        full_env = dict(os.environ, **(env or {}))
        try:
            p = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                               env=full_env, stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            return {"rc": None, "timed_out": True,
                    "stdout": (e.stdout or b"").decode(errors="replace"),
                    "stderr": (e.stderr or b"").decode(errors="replace")}
        return {"rc": p.returncode, "stdout": p.stdout.decode(errors="replace"),
                "stderr": p.stderr.decode(errors="replace")}

    def op_read_file(self, path, limit=-1):
        """The bytes of a file (up to limit)."""
        with open(path, "rb") as f:
            return f.read(limit)

    def op_write_file(self, path, data):
        """Write data to a file (created or truncated): the number of bytes written."""
        with open(path, "wb", buffering=0) as f:
            return f.write(data)

    def op_trace_functions(self, tracefs="/sys/kernel/tracing"):
        """What the function tracer recorded since the last call, then an empty buffer:
        {"functions": [name, ...] (each once, sorted), "lost": events its buffer
        overwrote before they were read (0: the list is complete)}."""
        names = set()
        with open(f"{tracefs}/trace", "rb") as f:
            for line in f:
                head, sep, _ = line.partition(b" <-")  # "task-pid [cpu] flags ts: func <-caller"
                if sep and not line.startswith(b"#"):
                    names.add(head.rsplit(None, 1)[-1].decode())
        lost = 0
        for cpu in os.listdir(f"{tracefs}/per_cpu"):
            with open(f"{tracefs}/per_cpu/{cpu}/stats", "rb") as f:
                for line in f:
                    if line.startswith(b"overrun:"):
                        lost += int(line.split()[1])
        os.close(os.open(f"{tracefs}/trace", os.O_WRONLY | os.O_TRUNC))  # clears every CPU's buffer
        return {"functions": sorted(names), "lost": lost}

    def op_kmsg(self, after_seq=-1):
        """Kernel log records with sequence number > after_seq: [[seq, level, usec, text]]."""
        return [r for r in self._kmsg_records() if r[0] > after_seq]

    def op_kmsg_seq(self):
        """Sequence number of the newest kernel log record (-1 if none)."""
        records = self._kmsg_records()
        return records[-1][0] if records else -1

    @staticmethod
    def _kmsg_records():
        out = []
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        try:
            while True:
                try:
                    rec = os.read(fd, 8192)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == errno.EPIPE:  # overwritten while reading: go on
                        continue
                    raise
                head, _, body = rec.decode(errors="replace").partition(";")
                prio, seq, usec = head.split(",")[:3]
                out.append([int(seq), int(prio) & 7, int(usec), body.split("\n", 1)[0]])
        finally:
            os.close(fd)
        return out

    # -- dispatch ------------------------------------------------------------
    def handle(self, line):
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ProtocolError("a request must be a JSON object")
        except (ValueError, ProtocolError) as e:
            return {"id": None, "error": f"malformed request: {e}"}
        rid = req.get("id")
        op = req.get("op")
        func = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if func is None:
            return {"id": rid, "error": f"unknown op {op!r}"}
        args, kwargs = req.get("args", []), req.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            return {"id": rid, "error": "args must be a list and kwargs an object"}
        try:
            result = func(*decode(args), **decode(kwargs))
        except OSError as e:
            if e.errno is None:
                return {"id": rid, "error": f"OSError without errno: {e}"}
            return {"id": rid, "errno": e.errno, "name": errno.errorcode.get(e.errno, "?"),
                    "strerror": os.strerror(e.errno)}
        except Exception as e:  # a bad request must never take the agent down
            return {"id": rid, "error": f"{type(e).__name__}: {e}"}
        return {"id": rid, "ok": encode(result)}

    def serve(self, rfile, wfile):
        for line in rfile:
            if not line.strip():
                continue
            wfile.write(json.dumps(self.handle(line)).encode() + b"\n")
            wfile.flush()


# struct dm_ioctl (linux/dm-ioctl.h): version[3], data_size, data_start, target_count,
# open_count, flags, event_nr, padding, dev, name[128], uuid[129], data[7]: 312 bytes.
DM_IOCTL_FMT = "=3IIIIiIIIQ128s129s7s"
DM_IOCTL_SIZE = 312
DM_VERSION = (4, 0, 0)
DM_DEV_CREATE, DM_DEV_REMOVE, DM_DEV_SUSPEND, DM_TABLE_LOAD = 3, 4, 6, 9
DM_SKIP_LOCKFS_FLAG = 1 << 10
DM_TARGET_SPEC_FMT = "=QQiI16s"  # sector_start, length, status, next, target_type[16]


def dm_request(name, flags=0, table=None):
    """The ioctl buffer: struct dm_ioctl, then one dm_target_spec per table line, each
    followed by its parameter string, NUL-terminated and padded to 8 bytes."""
    import struct
    spec_size = struct.calcsize(DM_TARGET_SPEC_FMT)
    specs = b""
    lines = [line.split(None, 3) for line in (table or "").splitlines() if line.strip()]
    for fields in lines:
        if len(fields) < 3:
            raise ValueError(f"dm table line needs 'start length type [args]': {' '.join(fields)!r}")
        params = (fields[3] if len(fields) > 3 else "").encode() + b"\0"
        params += b"\0" * (-(spec_size + len(params)) % 8)
        specs += struct.pack(DM_TARGET_SPEC_FMT, int(fields[0]), int(fields[1]), 0,
                             spec_size + len(params), fields[2].encode()) + params
    size = DM_IOCTL_SIZE + max(len(specs), 16 << 10)  # room for what the kernel writes back
    head = struct.pack(DM_IOCTL_FMT, *DM_VERSION, size, DM_IOCTL_SIZE, len(lines), 0, flags,
                       0, 0, 0, name.encode(), b"", b"")
    return bytearray(head + specs + bytes(size - DM_IOCTL_SIZE - len(specs)))


def _dm(cmd, name, flags=0, table=None):
    import fcntl
    import struct
    buf = dm_request(name, flags, table)
    request = (3 << 30) | (DM_IOCTL_SIZE << 16) | (0xFD << 8) | cmd  # _IOWR(0xfd, cmd, dm_ioctl)
    fd = os.open("/dev/mapper/control", os.O_RDWR)
    try:
        fcntl.ioctl(fd, request, buf)
    finally:
        os.close(fd)
    return struct.unpack_from(DM_IOCTL_FMT, buf)


def dm_kernel_name(reply):
    dev = reply[10]  # huge_encode_dev(): minor's low byte, major, then the minor's high bits
    return f"dm-{(dev & 0xFF) | ((dev >> 12) & ~0xFF)}"


USAGE = """usage: agent.py [--port NAME]
  (no option)   serve requests on stdin/stdout
  --port NAME   serve the host on the virtio-serial port called NAME (in the guest)"""


def port_device(name):
    """/dev/vportNpM of the virtio-serial port called `name`."""
    for dev in os.listdir("/sys/class/virtio-ports"):
        with open(f"/sys/class/virtio-ports/{dev}/name") as f:
            if f.read().strip() == name:
                return f"/dev/{dev}"
    raise SystemExit(f"agent: no virtio-serial port named {name}")


def serve_port(agent, fd):
    """Serve requests on a virtio-serial port for as long as the guest runs. A read gives
    0 bytes while the host end is not connected (before the host connects, or after it
    went away): wait for it and start afresh."""
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            buf = b""
            time.sleep(0.02)
            continue
        buf += chunk
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            if line.strip():
                out = memoryview(json.dumps(agent.handle(line)).encode() + b"\n")
                try:
                    while out:
                        out = out[os.write(fd, out):]
                except OSError as e:  # the host went away mid-answer
                    print(f"agent: answer lost: {e}", file=sys.stderr, flush=True)


def main(argv):
    # No argparse: every import costs time when the guest reads the stdlib over 9p.
    if argv and (len(argv) != 2 or argv[0] != "--port"):
        print(USAGE, file=sys.stderr)
        return 2
    agent = Agent()
    if not argv:
        agent.serve(sys.stdin.buffer, sys.stdout.buffer)
        return 0
    fd = os.open(port_device(argv[1]), os.O_RDWR)
    with open("/proc/uptime") as f:
        uptime = f.read().split()[0]
    print(f"{READY_MARK} {argv[1]} {os.uname().release} uptime {uptime}", flush=True)
    serve_port(agent, fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
