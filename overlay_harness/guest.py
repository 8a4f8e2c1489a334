"""Host side of the guest agent: each agent call is a method of `Guest`.

A call returns its result, or an `Errno` when the kernel refused it, so a case
states the expected errno as a value:

    fd = guest.must.open(path, os.O_RDWR)
    assert guest.syncfs(fd) == errno.EIO

Every call is recorded; `Guest.reproducer()` renders the log as a script that
replays the same calls inside a guest.
"""

import base64
import errno as errno_mod
import json
import os
import select
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

AGENT_PATH = Path(__file__).with_name("agent.py")

# Agent operations; each becomes a method of Guest (see agent.py for their arguments).
OPS = (
    "ping", "uname", "open", "close", "close_all", "fds", "read", "pread", "write",
    "pwrite", "lseek", "fsync", "fdatasync", "syncfs", "sync", "ftruncate", "truncate",
    "fallocate", "mmap", "mwrite", "msync", "munmap", "stat", "lstat", "fstat", "getxattr",
    "setxattr", "listxattr", "removexattr", "mount", "umount2", "rename", "unlink", "mkdir",
    "makedirs", "rmdir", "link", "symlink", "readlink", "chown", "chmod", "utime", "listdir",
    "chdir", "fchdir", "getcwd", "mincore", "fiemap", "read_file", "write_file", "kmsg",
    "kmsg_seq", "loop_attach", "loop_detach", "dm_create", "dm_load", "dm_resume", "dm_remove",
)


class Errno:
    """An errno returned by a guest call; compares equal to the errno constant."""

    __slots__ = ("code", "name", "strerror")

    def __init__(self, code, name=None, strerror=None):
        self.code = code
        self.name = name or errno_mod.errorcode.get(code, f"E?{code}")
        self.strerror = strerror or os.strerror(code)

    def __eq__(self, other):
        if isinstance(other, Errno):
            return self.code == other.code
        if isinstance(other, int) and not isinstance(other, bool):
            return self.code == other
        return NotImplemented

    def __hash__(self):
        return hash(("Errno", self.code))

    def __repr__(self):
        return f"Errno({self.name})"


def is_errno(value):
    return isinstance(value, Errno)


class HarnessError(Exception):
    """The harness or the VM broke: an infrastructure error, not a kernel result."""


class AgentError(HarnessError):
    """The agent rejected a request (a harness bug, never a kernel errno)."""


class GuestLost(HarnessError):
    """The channel to the agent closed: the guest died, panicked or was killed."""


class GuestTimeout(HarnessError):
    """A call got no answer in time: the guest or the call hangs."""


class StepFailed(Exception):
    """A step the case relies on (not the behaviour it checks) did not work."""


class CallFailed(StepFailed):
    """A call made through `guest.must` returned an errno."""


class CommandFailed(StepFailed):
    """A command run in the guest with check=True exited non-zero."""


@dataclass
class RunResult:
    argv: list
    rc: int | None
    stdout: str
    stderr: str
    timed_out: bool = False


@dataclass
class Call:
    op: str
    args: tuple
    kwargs: dict
    result: object = None
    seconds: float = 0.0


def _encode(value, op, index):
    if isinstance(value, Errno):
        raise TypeError(f"argument {index} of {op}() is {value!r}, the result of a failed call")
    if isinstance(value, (bytes, bytearray)):
        return {"$b": base64.b64encode(value).decode()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v, op, index) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v, op, index) for k, v in value.items()}
    return value


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"$b"}:
            return base64.b64decode(value["$b"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class LineChannel:
    """Newline-framed messages over a file descriptor-like transport."""

    def __init__(self, send, recv, fileno, close):
        self._send, self._recv, self._fileno, self._close = send, recv, fileno, close
        self._buf = b""

    def send_line(self, data):
        self._send(data + b"\n")

    def recv_line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestTimeout(f"no answer from the guest agent in {timeout:.0f} s")
            ready, _, _ = select.select([self._fileno()], [], [], left)
            if not ready:
                continue
            chunk = self._recv(65536)
            if not chunk:
                raise GuestLost("the channel to the guest agent closed")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def close(self):
        self._close()

    @classmethod
    def from_paramiko(cls, chan):
        return cls(chan.sendall, chan.recv, chan.fileno, chan.close)

    @classmethod
    def from_process(cls, proc):
        def send(data):
            proc.stdin.write(data)
            proc.stdin.flush()

        def close():
            proc.stdin.close()
            proc.wait(timeout=10)
            proc.stdout.close()

        return cls(send, lambda n: os.read(proc.stdout.fileno(), n), proc.stdout.fileno, close)


class Agent:
    """One connection to the guest agent; calls are sequential."""

    def __init__(self, channel, call_timeout=120.0):
        self.channel = channel
        self.call_timeout = call_timeout
        self._next_id = 0
        self.broken = None  # set once the channel can no longer be trusted

    def request(self, op, args=(), kwargs=None, timeout=None):
        if self.broken:
            raise GuestLost(f"the guest agent is unusable: {self.broken}")
        self._next_id += 1
        rid = self._next_id
        msg = {"id": rid, "op": op,
               "args": [_encode(a, op, i + 1) for i, a in enumerate(args)],
               "kwargs": {k: _encode(v, op, k) for k, v in (kwargs or {}).items()}}
        try:
            self.channel.send_line(json.dumps(msg).encode())
            resp = json.loads(self.channel.recv_line(timeout or self.call_timeout))
        except (GuestTimeout, GuestLost, OSError, EOFError) as e:
            self.broken = f"{op}(): {e}"
            if isinstance(e, HarnessError):
                raise
            raise GuestLost(f"{op}(): {e}") from e
        if resp.get("id") != rid:
            self.broken = f"answer {resp.get('id')} to request {rid}"
            raise AgentError(f"out-of-order answer from the agent: {resp}")
        if "error" in resp:
            raise AgentError(f"{op}{tuple(args)!r}: {resp['error']}")
        if "errno" in resp:
            return Errno(resp["errno"], resp.get("name"), resp.get("strerror"))
        return _decode(resp["ok"])

    def close(self):
        try:
            self.channel.close()
        except Exception:
            pass


class _Must:
    """`guest.must.op(...)`: like `guest.op(...)` but an errno is a failure."""

    def __init__(self, guest):
        self._guest = guest

    def __getattr__(self, op):
        method = getattr(self._guest, op)

        def call(*args, **kwargs):
            result = method(*args, **kwargs)
            if isinstance(result, Errno):
                raise CallFailed(f"{op}{_fmt_args(args, kwargs)} = {result!r} "
                                 f"({result.strerror})")
            return result

        return call


def _fmt_args(args, kwargs):
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def _short(value, limit=160):
    if isinstance(value, (bytes, bytearray)) and len(value) > 32:
        return f"{bytes(value[:16])!r}...<{len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...<{len(text)} chars>"


class Guest:
    """Calls into one VM's agent, with a call log for the current case."""

    def __init__(self, agent, release=None, label=""):
        self.agent = agent
        self.release = release
        self.label = label
        self.log = []
        self.must = _Must(self)
        self.vm = None           # set by the pytest fixture
        self.scratch = None      # .path: the case's scratch directory (a tmpfs) in the guest
        self._deferred = []
        self.kmsg_start = -1     # kernel log sequence number when the case began
        self.kmsg_checked = -1   # ... and when it was last checked for splats
        self.taint_start = 0

    def call(self, op, *args, _timeout=None, **kwargs):
        entry = Call(op, args, kwargs)
        self.log.append(entry)
        start = time.monotonic()
        try:
            entry.result = self.agent.request(op, args, kwargs, timeout=_timeout)
        except Exception as e:
            entry.result = e
            raise
        finally:
            entry.seconds = time.monotonic() - start
        return entry.result

    def run(self, argv, timeout=60, input=None, env=None, check=True):
        """Run argv (a list, never a shell string) in the guest."""
        if isinstance(argv, str):
            raise TypeError("run() takes an argv list, not a shell string")
        argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]
        raw = self.call("run", argv, timeout=timeout, input=input, env=env,
                        _timeout=timeout + 30)
        if isinstance(raw, Errno):
            if check:
                raise CommandFailed(f"{shlex.join(argv)}: {raw!r} ({raw.strerror})")
            return RunResult(argv, None, "", raw.strerror)
        res = RunResult(argv, raw["rc"], raw["stdout"], raw["stderr"], raw.get("timed_out", False))
        if check and res.rc != 0:
            what = "timed out" if res.timed_out else f"exited {res.rc}"
            raise CommandFailed(f"{shlex.join(argv)} {what}\n{res.stderr.strip()}")
        return res

    def defer(self, fn, *args, **kwargs):
        """Queue a cleanup step, run in reverse order by run_deferred()."""
        self._deferred.append((fn, args, kwargs))

    def run_deferred(self):
        """Run the queued cleanups, newest first; keep going on errors and return them."""
        errors = []
        while self._deferred:
            fn, args, kwargs = self._deferred.pop()
            try:
                fn(*args, **kwargs)
            except Exception as e:
                errors.append(f"{getattr(fn, '__name__', fn)}{args}: {e}")
        return errors

    def mounts(self):
        """Mount points in the guest, in mount order (from /proc/self/mountinfo)."""
        text = self.must.read_file("/proc/self/mountinfo").decode()
        return [line.split()[4].replace("\\040", " ") for line in text.splitlines()]

    def reproducer(self, header="", prelude=()):
        """The call log (after `prelude`, the calls that prepared the guest) as a Python
        script that replays it inside a guest."""
        lines = [
            "#!/usr/bin/env python3",
            f"# Reproducer {header}".rstrip(),
            "# Run it as root inside a guest booted on the same kernel, e.g.",
            "#   vng -r <kernel> --disable-kvm --force-9p --exec 'python3 repro.py'",
            "import os, sys",
            f"sys.path.insert(0, {str(AGENT_PATH.parent)!r})",
            "from agent import Agent",
            "a = Agent()",
            "",
            "def call(op, *args, **kwargs):",
            "    r = a.handle(__import__('json').dumps(",
            "        {'id': 0, 'op': op, 'args': list(args), 'kwargs': kwargs}))",
            "    cut = lambda v: (lambda t: t[:120] + '...' if len(t) > 120 else t)(repr(v))",
            "    print(op, cut(args), cut(kwargs) if kwargs else '', '->',",
            "          cut(r.get('ok', r.get('name', r.get('error')))))",
            "    return r.get('ok')",
            "",
        ]
        fd_names = {}
        for entry in [*prelude, *self.log]:
            args = [self._repro_arg(a, entry.op, i, fd_names) for i, a in enumerate(entry.args)]
            args += [f"{k}={fd_names[v] if k == 'dir_fd' and v in fd_names else self._repro_value(v)}"
                     for k, v in entry.kwargs.items()]
            result = entry.result
            shown = _short(result)
            if isinstance(result, Exception):
                shown = f"{type(result).__name__}: {result}"
            stmt = f"call({entry.op!r}{''.join(', ' + a for a in args)})"
            if entry.op == "open" and isinstance(result, int) and not isinstance(result, Errno):
                name = f"fd{len(fd_names) + 1}"
                fd_names[result] = name
                stmt = f"{name} = {stmt}"
            lines.append(f"{stmt}  # got {shown}")
        return "\n".join(lines) + "\n"

    FD_OPS = {"close", "read", "pread", "write", "pwrite", "lseek", "fsync", "fdatasync",
              "syncfs", "ftruncate", "fallocate", "fstat", "fchdir"}

    def _repro_arg(self, value, op, index, fd_names):
        if index == 0 and (op in self.FD_OPS or op == "listdir") and value in fd_names:
            return fd_names[value]
        return self._repro_value(value)

    @staticmethod
    def _repro_value(value):
        if isinstance(value, (bytes, bytearray)):
            return f"{{'$b': {base64.b64encode(value).decode()!r}}}"
        if isinstance(value, os.PathLike):
            return repr(os.fspath(value))
        return repr(value)


def _make_method(op):
    def method(self, *args, **kwargs):
        return self.call(op, *args, **kwargs)

    method.__name__ = op
    method.__doc__ = f"Agent call {op!r}: see overlay_harness/agent.py Agent.op_{op}."
    return method


for _op in OPS:
    setattr(Guest, _op, _make_method(_op))
