"""The host's end of the guest agent's protocol (in_guest/agent.py): one connection,
JSON lines, sequential calls, each answered with a value or an `Errno`.

The exceptions here are the three kinds of "the harness or the VM broke" (never a
kernel result): the plugin reports them as errors, not failures.
"""

import errno as errno_mod
import json
import os
import select
import time

from ..in_guest.agent import decode, encode


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
    """The harness or the VM broke: an infrastructure error, not a kernel result. `kind`
    names it in a report's infra_error property (what bisect and the results read)."""

    kind = "harness"


class AgentError(HarnessError):
    """The agent rejected a request (a harness bug, never a kernel errno)."""

    kind = "agent"


class GuestLost(HarnessError):
    """The channel to the agent closed: the guest died, panicked or was killed."""

    kind = "lost"


class GuestTimeout(HarnessError):
    """A call got no answer in time: the guest or the call hangs."""

    kind = "timeout"


def _encode(value, op, index):
    """agent.encode, plus: a failed call's Errno is no argument, paths become strings."""
    if isinstance(value, Errno):
        raise TypeError(f"argument {index} of {op}() is {value!r}, the result of a failed call")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v, op, index) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v, op, index) for k, v in value.items()}
    return encode(value)  # bytes as {"$b": base64}


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
    def from_socket(cls, sock):
        return cls(sock.sendall, sock.recv, sock.fileno, sock.close)

    @classmethod
    def from_paramiko(cls, chan):
        """An SSH channel (host/target.py: the agent's stdin and stdout on a target)."""
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


class AgentClient:
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
        return decode(resp["ok"])

    def close(self):
        try:
            self.channel.close()
        except Exception:
            pass


