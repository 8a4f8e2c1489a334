"""Each agent call is a method of `Guest`.

A call returns its result, or an `Errno` when the kernel refused it, so a case
states the expected errno as a value:

    fd = guest.must.open(path, os.O_RDWR)
    assert guest.syncfs(fd) == errno.EIO

Every call is recorded in `guest.log`, which library/repro.py renders as a script
that replays the same calls inside a guest.
"""

import inspect
import os
import shlex
import time
from dataclasses import dataclass

from ..host.agent_client import Errno
from ..in_guest.agent import Agent as _AgentServer

# The agent's operations, read from the agent itself: each becomes a method of Guest
# with the agent's signature (`run` has its own method below).
OPS = {name[3:]: fn for name, fn in vars(_AgentServer).items()
       if name.startswith("op_") and name != "op_run"}
# Operations whose first argument is an fd opened through the agent (or may be one).
FD_OPS = {op for op, fn in OPS.items()
          if list(inspect.signature(fn).parameters)[1:2] in (["fd"], ["path_or_fd"])}


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
    parts = [short_repr(a) for a in args] + [f"{k}={short_repr(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


def short_repr(value, limit=160):
    if isinstance(value, (bytes, bytearray)) and len(value) > 32:
        return f"{bytes(value[:16])!r}...<{len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...<{len(text)} chars>"


class Guest:
    """Calls into one VM's agent, with a call log for the current case."""

    def __init__(self, agent, release=None, label="", vm=None, scratch=None, facts=None):
        self.agent = agent
        self.release = release   # what the guest's kernel reports (uname -r)
        self.label = label
        self.vm = vm             # the VM it runs in (its kernel, console log)
        self.scratch = scratch   # the case's scratch directory in the guest (a tmpfs)
        self.facts = facts       # GuestFacts of the boot: modules and features its kernel has
        self.log = []
        self.must = _Must(self)
        self._deferred = []
        self.expected_kmsg = set()  # kernel log records expect_kmsg() saw: allowed by the log check

    def call(self, op, *args, _timeout=None, **kwargs):
        """Make agent call `op` (what every call method does), logged for the reproducer."""
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

    def kmsg_lines(self, since):
        """The texts of the kernel log records after sequence number `since`."""
        return [record[3] for record in self.must.kmsg(since)]

    def mounts(self):
        """Mount points in the guest, in mount order (from /proc/self/mountinfo)."""
        text = self.must.read_file("/proc/self/mountinfo").decode()
        return [line.split()[4].replace("\\040", " ") for line in text.splitlines()]

    def mount_options(self, target):
        """The options of the newest mount at `target` as /proc/self/mountinfo shows them:
        the mount's own (ro, noatime, ...) then its filesystem's ("nfs_export=on", ...);
        None when nothing is mounted there."""
        text = self.must.read_file("/proc/self/mountinfo").decode()
        for line in reversed(text.splitlines()):
            fields = line.split()
            if fields[4].replace("\\040", " ") == target:
                return fields[5].split(",") + fields[fields.index("-") + 3].split(",")
        return None


def _make_method(op, fn):
    def method(self, *args, **kwargs):
        return self.call(op, *args, **kwargs)

    method.__name__ = op
    method.__doc__ = (f"{inspect.getdoc(fn)} An Errno when the kernel refuses it "
                      f"(in_guest/agent.py Agent.op_{op}).")
    method.__signature__ = inspect.signature(fn)  # help(guest.pwrite): (self, fd, data, offset)
    return method


for _op, _fn in OPS.items():
    setattr(Guest, _op, _make_method(_op, _fn))
