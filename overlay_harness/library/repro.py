"""A case's call log as a Python script that replays the same calls inside a guest."""

import base64
import os

from ..host.agent_client import Errno
from ..in_guest import script
from .guest import FD_OPS, short_repr

AGENT_PATH = script("agent.py")


def reproducer(calls, header="", prelude=()):
    """The calls (after `prelude`, the calls that prepared the guest) as a Python script
    that replays them inside a guest."""
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
    for entry in [*prelude, *calls]:
        args = [_arg(a, entry.op, i, fd_names) for i, a in enumerate(entry.args)]
        args += [f"{k}={fd_names[v] if k == 'dir_fd' and v in fd_names else _value(v)}"
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


def _arg(value, op, index, fd_names):
    if index == 0 and op in FD_OPS and value in fd_names:
        return fd_names[value]
    return _value(value)


def _value(value):
    if isinstance(value, (bytes, bytearray)):
        return f"{{'$b': {base64.b64encode(value).decode()!r}}}"
    if isinstance(value, os.PathLike):
        return repr(os.fspath(value))
    return repr(value)
