"""The guest agent, run locally in a subprocess against a temporary directory (no VM).

Only calls that stay inside tmp_path are made: nothing here mounts or touches
the host outside it.
"""

import errno
import hashlib
import json
import os
import subprocess
import sys

import pytest

from overlay_harness.host.agent_client import (
    AgentClient,
    AgentError,
    Errno,
    GuestLost,
    GuestTimeout,
    LineChannel,
)
from overlay_harness.library import repro
from overlay_harness.library.guest import CallFailed, CommandFailed, Guest
from overlay_harness.library.repro import AGENT_PATH, reproducer


@pytest.fixture
def proc():
    p = subprocess.Popen([sys.executable, "-I", "-S", str(AGENT_PATH)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    yield p
    if p.poll() is None:
        p.kill()
    p.wait()


@pytest.fixture
def guest(proc):
    return Guest(AgentClient(LineChannel.from_process(proc), call_timeout=20))


def raw(proc, line):
    proc.stdin.write(line + b"\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def test_open_write_read_close_keeps_fds_across_calls(guest, tmp_path):
    path = tmp_path / "f"
    fd = guest.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    assert isinstance(fd, int) and fd > 2
    assert guest.fds() == {str(fd): str(path)}
    assert guest.write(fd, b"\x00\xffbinary\n") == 9
    assert guest.pwrite(fd, b"AB", 2) == 2
    assert guest.pread(fd, 9, 0) == b"\x00\xffABnary\n"
    assert guest.fsync(fd) == 0
    assert guest.fdatasync(fd) == 0
    assert guest.syncfs(fd) == 0
    assert guest.ftruncate(fd, 4) == 0
    assert guest.fstat(fd)["st_size"] == 4
    assert guest.close(fd) == 0
    assert path.read_bytes() == b"\x00\xffAB"
    assert guest.fds() == {}


def test_errno_is_a_value_with_name_and_number(guest, tmp_path):
    r = guest.open(tmp_path / "missing", os.O_RDONLY)
    assert isinstance(r, Errno)
    assert r == errno.ENOENT and r != errno.EIO and r != 0
    assert (r.code, r.name) == (errno.ENOENT, "ENOENT")
    assert repr(r) == "Errno(ENOENT)"
    assert guest.mkdir(tmp_path) == errno.EEXIST
    assert guest.rmdir(tmp_path / "missing") == errno.ENOENT
    assert guest.unlink(tmp_path) in (errno.EISDIR, errno.EPERM)


def test_errno_never_equals_a_success_value():
    assert Errno(errno.EIO) != 0
    assert Errno(errno.EIO) == Errno(errno.EIO)
    assert Errno(errno.EIO) != True  # noqa: E712 - bool is not an errno
    assert len({Errno(5), Errno(5), Errno(2)}) == 2


def test_fd_bookkeeping_protects_foreign_fds(guest, tmp_path):
    with pytest.raises(AgentError, match="not opened through the agent"):
        guest.close(0)
    with pytest.raises(AgentError, match="not opened through the agent"):
        guest.write(1, b"x")
    fd = guest.must.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)
    guest.must.close(fd)
    with pytest.raises(AgentError):
        guest.close(fd)  # already closed
    a = guest.must.open(tmp_path / "a", os.O_CREAT | os.O_WRONLY)
    b = guest.must.open(tmp_path / "b", os.O_CREAT | os.O_WRONLY)
    assert guest.close_all() == sorted([a, b])
    assert guest.fds() == {}


def test_shared_mapping_write_msync_munmap(guest, tmp_path):
    path = tmp_path / "m"
    path.write_bytes(b"." * 8192)
    fd = guest.must.open(path, os.O_RDWR)
    m = guest.must.mmap(fd, 8192)
    assert guest.mwrite(m, b"mapped", 4096) == 6
    assert guest.msync(m) == 0
    assert path.read_bytes()[4096:4102] == b"mapped"
    with pytest.raises(AgentError, match="outside the 8192-byte mapping"):
        guest.mwrite(m, b"x", 8192)  # past the mapping: refused, not SIGBUS
    assert guest.munmap(m) == 0
    with pytest.raises(AgentError, match="no mapping"):
        guest.msync(m)
    with pytest.raises(AgentError, match="greater than file size"):
        guest.mmap(fd, 3 * 8192)  # a mapping past EOF would SIGBUS the agent
    guest.must.mmap(fd, 4096)
    guest.must.close_all()  # unmaps too
    with pytest.raises(AgentError, match="no mapping"):
        guest.munmap(1)


def test_open_relative_to_a_directory_fd(guest, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"inside")
    dfd = guest.must.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    fd = guest.must.open("f", os.O_RDONLY, dir_fd=dfd)
    assert guest.read(fd, 100) == b"inside"
    assert guest.listdir(dfd) == ["f"]
    assert guest.listdir(dfd) == ["f"]  # rewinds: the same answer twice
    assert guest.open("missing", os.O_RDONLY, dir_fd=dfd) == errno.ENOENT


def test_malformed_requests_get_an_error_and_the_agent_keeps_serving(proc):
    assert "malformed request" in raw(proc, b"{not json")["error"]
    assert "malformed request" in raw(proc, b"[1, 2]")["error"]
    assert "unknown op" in raw(proc, b'{"id": 1, "op": "reboot"}')["error"]
    assert "unknown op" in raw(proc, b'{"id": 2, "op": 42}')["error"]
    assert "TypeError" in raw(proc, b'{"id": 3, "op": "fsync", "args": []}')["error"]
    assert "args must be a list" in raw(proc, b'{"id": 4, "op": "ping", "args": {}}')["error"]
    resp = raw(proc, b'{"id": 5, "op": "ping"}')
    assert resp["id"] == 5 and resp["ok"]["pid"] == proc.pid


def test_errno_answer_on_the_wire(proc):
    resp = raw(proc, b'{"id": 9, "op": "stat", "args": ["/nonexistent/x"]}')
    assert resp == {"id": 9, "errno": errno.ENOENT, "name": "ENOENT",
                    "strerror": os.strerror(errno.ENOENT)}


def test_stat_fields(guest, tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 5000)
    os.link(tmp_path / "f", tmp_path / "g")
    st = guest.stat(tmp_path / "f")
    real = os.stat(tmp_path / "f")
    for key in ("st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_mode", "st_size", "st_blocks"):
        assert st[key] == getattr(real, key), key
    assert st["st_nlink"] == 2
    os.symlink("f", tmp_path / "s")
    assert guest.lstat(tmp_path / "s")["st_ino"] != st["st_ino"]
    assert guest.readlink(tmp_path / "s") == "f"


def test_namespace_calls(guest, tmp_path):
    d = tmp_path
    assert guest.mkdir(d / "sub", 0o700) == 0
    assert guest.symlink("sub", d / "link") == 0
    assert guest.rename(d / "sub", d / "sub2") == 0
    assert guest.stat(d / "link") == errno.ENOENT  # dangling now
    (d / "sub2" / "f").write_text("x")
    assert guest.link(d / "sub2" / "f", d / "hard") == 0
    assert guest.chmod(d / "hard", 0o600) == 0
    assert guest.stat(d / "sub2" / "f")["st_mode"] & 0o777 == 0o600
    assert guest.chown(d / "hard", os.getuid(), os.getgid()) == 0
    assert guest.utime(d / "hard", [1_000_000_000, 2_000_000_000]) == 0
    assert guest.stat(d / "hard")["st_mtime_ns"] == 2_000_000_000
    assert guest.truncate(d / "hard", 0) == 0
    assert guest.unlink(d / "hard") == 0
    assert guest.rmdir(d / "sub2") == errno.ENOTEMPTY
    assert guest.listdir(d) == ["link", "sub2"]
    assert guest.chdir(d / "sub2") == 0
    assert guest.getcwd() == str(d / "sub2")
    assert guest.chdir(d / "missing") == errno.ENOENT


def test_xattrs(guest, tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    r = guest.setxattr(f, "user.ovh", b"\x01value")
    if r == errno.EOPNOTSUPP:
        pytest.skip(f"{tmp_path} has no user xattrs")
    assert r == 0
    assert guest.getxattr(f, "user.ovh") == b"\x01value"
    assert "user.ovh" in guest.listxattr(f)
    assert guest.setxattr(f, "user.ovh", b"v", os.XATTR_CREATE) == errno.EEXIST
    assert guest.removexattr(f, "user.ovh") == 0
    assert guest.getxattr(f, "user.ovh") == errno.ENODATA


def test_fallocate_and_fiemap(guest, tmp_path):
    fd = guest.must.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)
    r = guest.fallocate(fd, 0, 0, 1 << 20)
    if r == errno.EOPNOTSUPP:
        pytest.skip("no fallocate here")
    assert r == 0
    assert guest.fstat(fd)["st_size"] == 1 << 20
    guest.must.write(fd, b"y" * 8192)
    guest.must.fsync(fd)
    extents = guest.fiemap(tmp_path / "f")
    if extents == errno.EOPNOTSUPP:
        pytest.skip("no FIEMAP on this filesystem")
    assert extents and extents[0][0] == 0
    assert sum(e[2] for e in extents) >= 8192


def test_mincore_counts_resident_pages(guest, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"z" * (3 * 4096 + 1))
    os.open(f, os.O_RDONLY)  # leave it in the page cache
    res = guest.mincore(f)
    assert res["pages"] == 4
    assert 0 <= res["resident"] <= 4
    (tmp_path / "empty").touch()
    assert guest.mincore(tmp_path / "empty") == {"resident": 0, "pages": 0}


def test_run_returns_rc_and_output(guest):
    r = guest.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (r.rc, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert guest.run(["cat"], input=b"piped").stdout == "piped"
    with pytest.raises(CommandFailed, match="exited 3"):
        guest.run(["sh", "-c", "exit 3"])
    slow = guest.run(["sleep", "10"], timeout=0.5, check=False)
    assert slow.timed_out and slow.rc is None
    missing = guest.run(["/nonexistent-binary"], check=False)
    assert missing.rc is None and "No such file" in missing.stderr
    with pytest.raises(TypeError, match="argv list"):
        guest.run("echo pasted shell string")


def test_read_write_file(guest, tmp_path):
    assert guest.write_file(tmp_path / "f", b"abc") == 3
    assert guest.read_file(tmp_path / "f") == b"abc"
    assert guest.read_file(tmp_path / "nope") == errno.ENOENT


def test_must_turns_an_errno_into_a_failure(guest, tmp_path):
    with pytest.raises(CallFailed, match=r"open\(.*\) = Errno\(ENOENT\)"):
        guest.must.open(tmp_path / "missing", os.O_RDONLY)


def test_errno_result_cannot_be_passed_on(guest, tmp_path):
    bad = guest.open(tmp_path / "missing", os.O_RDONLY)
    with pytest.raises(TypeError, match="result of a failed call"):
        guest.fsync(bad)


def test_call_log_and_reproducer_replay(guest, tmp_path):
    fd = guest.must.open(tmp_path / "f", os.O_CREAT | os.O_RDWR, 0o644)
    guest.write(fd, b"\x00data")
    guest.fsync(fd)
    guest.stat(tmp_path / "missing")
    guest.close(fd)
    assert [c.op for c in guest.log] == ["open", "write", "fsync", "stat", "close"]
    assert guest.log[3].result == errno.ENOENT
    script = reproducer(guest.log, "for a self-test")
    assert "fd1 = call('open'" in script and "call('fsync', fd1)" in script
    assert "# got Errno(ENOENT)" in script
    (tmp_path / "f").unlink()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "f").read_bytes() == b"\x00data"  # the replay did the same writes
    assert "stat" in out.stdout and "ENOENT" in out.stdout


def test_reproducer_data_is_an_expression_or_a_side_file_and_replays(guest, tmp_path):
    """The lower fixture's 64 KiB of b"L" once made a reproducer of 87 KB; data now reads
    as the expression that makes it, or as a digest whose bytes sit beside the script."""
    noise = os.urandom(4096)
    fd = guest.must.open(tmp_path / "f", os.O_CREAT | os.O_RDWR, 0o644)
    guest.write(fd, b"L" * 65536)
    guest.write(fd, b"ab" * 1000)
    guest.write(fd, noise)
    guest.close(fd)
    path = repro.write(tmp_path / "case.py", guest.log, "for a self-test")
    script = path.read_text()
    assert "b'L' * 65536" in script and "b'ab' * 1000" in script
    digest = hashlib.sha256(noise).hexdigest()[:16]
    assert f"data({digest!r}, 4096)" in script
    assert (tmp_path / "case.data" / f"{digest}.bin").read_bytes() == noise
    assert max(len(line) for line in script.splitlines()) < 200
    (tmp_path / "f").unlink()
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "f").read_bytes() == b"L" * 65536 + b"ab" * 1000 + noise


def test_lost_agent_and_timeout_are_harness_errors(proc):
    agent = AgentClient(LineChannel.from_process(proc), call_timeout=0.5)
    with pytest.raises(GuestTimeout):
        agent.request("run", [["sleep", "5"]], {"timeout": 10})
    with pytest.raises(GuestLost, match="unusable"):
        agent.request("ping")  # a timed-out channel is not trusted again
    proc.kill()
    proc.wait()
    fresh = AgentClient(LineChannel(lambda b: None, lambda n: b"", proc.stdout.fileno, lambda: None))
    with pytest.raises(GuestLost, match="closed"):
        fresh.request("ping")


def test_dm_ioctl_buffer_layout():
    """The device-mapper request is struct dm_ioctl (312 bytes, linux/dm-ioctl.h) then, per
    table line, a 40-byte dm_target_spec whose `next` is the offset to the following one
    and whose parameters end in NUL, padded to 8 bytes."""
    import struct

    from overlay_harness.in_guest import agent
    table = "0 100 linear /dev/loop0 0\n100 8 flakey /dev/loop0 100 0 1 1 error_writes\n"
    buf = agent.dm_request("ovh-x", flags=agent.DM_SKIP_LOCKFS_FLAG, table=table)
    head = struct.unpack_from(agent.DM_IOCTL_FMT, buf)
    assert head[:3] == (4, 0, 0)
    assert head[3] == len(buf) and head[4] == 312 and head[5] == 2     # sizes, 2 targets
    assert head[7] == 1 << 10 and head[11].rstrip(b"\0") == b"ovh-x"
    start, length, _status, nxt, kind = struct.unpack_from(agent.DM_TARGET_SPEC_FMT, buf, 312)
    assert (start, length, kind.rstrip(b"\0")) == (0, 100, b"linear")
    assert buf[312 + 40:312 + 40 + len(b"/dev/loop0 0\0")] == b"/dev/loop0 0\0"
    assert nxt % 8 == 0 and nxt >= 40 + len(b"/dev/loop0 0\0")
    start, length, _status, _n, kind = struct.unpack_from(agent.DM_TARGET_SPEC_FMT, buf, 312 + nxt)
    assert (start, length, kind.rstrip(b"\0")) == (100, 8, b"flakey")
    assert bytes(buf[312 + nxt + 40:]).split(b"\0")[0] == b"/dev/loop0 100 0 1 1 error_writes"
    with pytest.raises(ValueError):
        agent.dm_request("ovh-x", table="0 100")


def test_dm_kernel_name_from_encoded_dev():
    from overlay_harness.in_guest import agent
    reply = [0] * 10 + [(253 << 8) | 3]
    assert agent.dm_kernel_name(reply) == "dm-3"
    reply[10] = (253 << 8) | 0x04 | (0x1 << 20)  # minor 260: high bits above the major
    assert agent.dm_kernel_name(reply) == "dm-260"
