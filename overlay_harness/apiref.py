"""What a case can use, generated from the code (signatures and docstrings) into
docs/api.md; tests/test_apiref.py regenerates it and fails when the committed file differs.

    python -m overlay_harness.apiref            # print it
    python -m overlay_harness.apiref --write    # rewrite docs/api.md
"""

import argparse
import inspect
import sys
from pathlib import Path

from . import library
from .host import agent_client
from .library import devices, features, guest, kmsg, nfs, overlay
from .plugin import fixtures, options

DOC_PATH = Path("docs") / "api.md"

FIXTURES = ["kernel", "vm", "guest", "upper", "lower", "make_overlay"]


def doc(obj):
    """An object's docstring, or a note that it has none (tests/test_apiref.py fails on that)."""
    return inspect.getdoc(obj) or "(undocumented)"


def signature(obj, skip_self=True):
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    params = list(sig.parameters.values())
    if skip_self and params and params[0].name == "self":
        params = params[1:]
    return str(sig.replace(parameters=params))


def members(cls):
    """The public methods and properties a class defines itself, in source order."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, property):
            yield name, value, True
        elif inspect.isfunction(value):
            yield name, value, False


def class_section(cls, title=None, intro=None):
    out = [f"### `{title or cls.__name__}{signature(cls.__init__)}`", "", doc(cls), ""]
    if intro:
        out += [intro, ""]
    for name, value, is_property in members(cls):
        if is_property:
            out += [f"- `.{name}`: {doc(value.fget)}"]
        else:
            out += [f"- `.{name}{signature(value)}`: {_indent(doc(value))}"]
    return out + [""]


def function_section(fn, name=None, skip_self=False):
    return [f"### `{name or fn.__name__}{signature(fn, skip_self)}`", "", doc(fn), ""]


def _indent(text):
    return text.replace("\n", "\n  ")


def render():
    out = ["# What a case can use", "",
           "Generated from the code by `python -m overlay_harness.apiref --write` (signatures and "
           "docstrings); `tests/test_apiref.py` fails when this file is out of date. A case imports "
           "from the package only: `from overlay_harness import Overlay, require, ...`.", ""]

    out += ["## Fixtures", "",
            "Provided by the plugin (`pytest11` entry point, or `-p overlay_harness.plugin`). "
            "`upper_fs` is a parameter, not a fixture to define: a case that asks for `upper` runs "
            "once per upper filesystem its `upper_fs(...)` marker names (default ext4), narrowed by "
            "`--upper-fs`.", ""]
    for name in FIXTURES:
        fn = getattr(fixtures, name)
        scope = "session" if name in ("kernel", "vm") else "function"
        out += [f"### `{name}` ({scope})", "", doc(fn), ""]

    out += ["## `guest`: the calls", "", doc(guest), "",
            "Every agent call is a method of `Guest` with the agent's own arguments. It returns the "
            "result described, or an `Errno` when the kernel refused the call (it compares equal to "
            "the `errno` constant: `assert guest.fsync(fd) == errno.EIO`). `guest.must.CALL(...)` "
            "raises `CallFailed` instead of returning an `Errno`: for set-up steps.", "",
            "| call | result |", "|---|---|"]
    for op, fn in guest.OPS.items():
        out.append(f"| `guest.{op}{signature(fn)}` | {' '.join(doc(fn).split())} |")
    out += ["", "The other methods and attributes of `Guest`:", ""]
    out += class_section(guest.Guest, "Guest")
    out += [f"- `.must`: {doc(guest._Must)}", "- `.release`, `.scratch`, `.facts`, `.log`: the guest's "
            "`uname -r`, the case's scratch directory (a tmpfs), what the kernel supports "
            "(`GuestFacts`), the calls made so far.", ""]
    out += class_section(guest.RunResult)

    out += ["## Overlays", ""]
    out += class_section(overlay.Overlay)
    out += function_section(overlay.make_tree)
    out += function_section(overlay.read_tree)
    out += function_section(overlay.create_file)

    out += ["## The upper filesystem and its faults", "",
            "`upper` is a `Filesystem`; `upper.dev` its `ScratchDevice`, whose table a case switches "
            "at any time (`upper.dev.failing(...)` for an error window).", ""]
    out += class_section(devices.Filesystem)
    out += class_section(devices.ScratchDevice)
    out += class_section(devices.Window)
    out += class_section(devices.LowerFs)
    out += [f"`FILESYSTEMS`: {', '.join(f'`{k}`' for k in devices.FILESYSTEMS)}.", ""]

    out += ["## Kernel features, NFS, errors", ""]
    out += function_section(features.require)
    out += function_section(features.require_version)
    out += function_section(kmsg.expect_kmsg)
    out += class_section(nfs.NfsLower)
    out += function_section(nfs.skip_unless_nfs)
    out += class_section(agent_client.Errno)
    for exc in (agent_client.HarnessError, agent_client.GuestLost, agent_client.GuestTimeout,
                guest.StepFailed, guest.CallFailed, guest.CommandFailed):
        out += [f"- `{exc.__name__}`: {' '.join(doc(exc).split())}"]
    out += [""]

    out += ["## Markers", "", "| marker | meaning |", "|---|---|"]
    out += [f"| `{name}` | {' '.join(text.split())} |" for name, text in options.MARKERS]
    out += ["", "## Settings", "",
            "Command-line options (`pytest --help`, group \"overlay-harness\"); these can also be set "
            "in the `[tool.pytest.ini_options]` of a `pyproject.toml`, the command line winning:", ""]
    out += [f"- `{options.ini_name(dest)}` (`--{dest.replace('_', '-')}`)" for dest in options.SETTINGS]
    out += [""]
    assert library  # the package the sections above document
    return "\n".join(out).rstrip() + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m overlay_harness.apiref",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"rewrite {DOC_PATH} (relative to the checkout)")
    args = ap.parse_args(argv)
    text = render()
    if args.write:
        path = Path(__file__).resolve().parent.parent / DOC_PATH
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
