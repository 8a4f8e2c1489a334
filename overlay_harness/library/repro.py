"""A case's call log as a Python script that replays the same calls inside a guest.

Data a case wrote is shown as the expression that makes it (`b"L" * 65536`), or, when it
has no short form, read from a side file named by its digest (`data("3f2a...", 4096)`,
the bytes in REPRO.data/3f2a....bin beside the script): the script stays short enough to
read and paste, and replays the same bytes."""

import hashlib
import os

from ..host.agent_client import Errno
from ..in_guest import script
from .guest import FD_OPS, short_repr

AGENT_PATH = script("agent.py")


SHORT_BYTES = 48   # data up to this length is written out as a literal


def reproducer(calls, header="", prelude=(), blobs=None):
    """The calls (after `prelude`, the calls that prepared the guest) as a Python script
    that replays them inside a guest. Data without a short form goes into `blobs`
    ({digest: bytes}, for the caller to write into the script's .data directory)."""
    blobs = {} if blobs is None else blobs
    lines = [
        "#!/usr/bin/env python3",
        f"# Reproducer {header}".rstrip(),
        "# Run it as root inside a guest booted on the same kernel, e.g.",
        "#   vng -r <kernel> --disable-kvm --force-9p --exec 'python3 repro.py'",
        "import base64, json, os, sys",
        f"sys.path.insert(0, {str(AGENT_PATH.parent)!r})",
        "from agent import Agent",
        "a = Agent()",
        "",
        "def data(digest, length):",
        "    with open(os.path.splitext(__file__)[0] + '.data/' + digest + '.bin', 'rb') as f:",
        "        return f.read(length)",
        "",
        "def enc(v):",
        "    return {'$b': base64.b64encode(v).decode()} if isinstance(v, bytes) else v",
        "",
        "def call(op, *args, **kwargs):",
        "    r = a.handle(json.dumps({'id': 0, 'op': op, 'args': [enc(v) for v in args],",
        "                             'kwargs': {k: enc(v) for k, v in kwargs.items()}}))",
        "    cut = lambda v: (lambda t: t[:120] + '...' if len(t) > 120 else t)(repr(v))",
        "    print(op, cut(args), cut(kwargs) if kwargs else '', '->',",
        "          cut(r.get('ok', r.get('name', r.get('error')))))",
        "    return r.get('ok')",
        "",
    ]
    fd_names = {}
    for entry in [*prelude, *calls]:
        args = [_arg(a, entry.op, i, fd_names, blobs) for i, a in enumerate(entry.args)]
        args += [f"{k}={fd_names[v] if k == 'dir_fd' and v in fd_names else _value(v, blobs)}"
                 for k, v in entry.kwargs.items()]
        result = entry.result
        shown = short_repr(result)
        if isinstance(result, Exception):
            shown = f"{type(result).__name__}: {result}"
        stmt = f"call({entry.op!r}{''.join(', ' + a for a in args)})"
        if entry.op == "open" and isinstance(result, int) and not isinstance(result, Errno):
            name = f"fd{len(fd_names) + 1}"
            fd_names[result] = name
            stmt = f"{name} = {stmt}"
        lines.append(f"{stmt}  # got {shown}")
    return "\n".join(lines) + "\n"


def _arg(value, op, index, fd_names, blobs):
    if index == 0 and op in FD_OPS and value in fd_names:
        return fd_names[value]
    return _value(value, blobs)


def _value(value, blobs):
    if isinstance(value, (bytes, bytearray)):
        return bytes_expression(bytes(value), blobs)
    if isinstance(value, os.PathLike):
        return repr(os.fspath(value))
    return repr(value)


def bytes_expression(data, blobs):
    """Python source that makes `data`: a literal, a repeated unit (`b"L" * 65536`), or
    a side file's contents (recorded in `blobs`)."""
    if len(data) <= SHORT_BYTES:
        return repr(data)
    for size in range(1, 17):
        if len(data) % size == 0 and data == data[:size] * (len(data) // size):
            return f"{data[:size]!r} * {len(data) // size}"
    digest = hashlib.sha256(data).hexdigest()[:16]
    blobs[digest] = data
    return f"data({digest!r}, {len(data)})"


def write(path, calls, header="", prelude=()):
    """The reproducer at `path`, and its data files beside it (PATH.data/DIGEST.bin)."""
    blobs = {}
    path.write_text(reproducer(calls, header, prelude, blobs))
    if blobs:
        side = path.with_suffix(".data")
        side.mkdir(exist_ok=True)
        for digest, data in blobs.items():
            (side / f"{digest}.bin").write_bytes(data)
    return path
