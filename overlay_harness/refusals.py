"""Every message fs/overlayfs logs, per kernel: where (file, function), what it says,
what follows (an errno, a fallback), whether userspace can trigger it and which case
does. Read from the kernel's own source in the cache (`fetch --source`), the rest from
refusal_triggers.py (keyed by the message) and the cases' expect_kmsg() calls.

    python -m overlay_harness.refusals                 # print the tables of the cached sources
    python -m overlay_harness.refusals --write         # (re)write docs/refusals.md
    python -m overlay_harness.refusals --check         # exit 1 when a cached kernel's table is stale

A kernel whose source is not cached keeps the section docs/refusals.md has for it.
Run it from the project's root (where cases/ is).
"""

import argparse
import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .host import kernel as kernel_mod
from .refusal_triggers import PER_KERNEL, SITES, TRIGGERABLE

DOC = Path("docs/refusals.md")
CASES = Path("cases")
REGENERATE = "python -m overlay_harness.refusals --write"
# The kernels docs/refusals.md has a table for (their cache directory names).
KERNELS = ("6.1.0-57-amd64", "7.3-amd64")

# pr_* calls print through pr_fmt ("overlayfs: "); *fc calls log through the fs_context
# (the kernel log under mount(2), the fd's log under fsopen()).
CALLS = ("pr_err", "pr_warn", "pr_warn_ratelimited", "pr_warn_once", "pr_info", "pr_notice",
         "errorfc", "invalfc", "warnfc", "infofc")
_CALL = re.compile(r"\b(" + "|".join(CALLS) + r")\s*\(")
_STRING = re.compile(r'\s*"((?:[^"\\]|\\.)*)"')
# Kernel style: a function's signature starts at column 0 (a type, the name, "("), its body
# with a "{" alone at column 0.
_SIGNATURE = re.compile(r"^[A-Za-z_][\w\s\*,]*?\b([A-Za-z_]\w*)\s*\(")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "'": "'"}
EXPECT = "expect_kmsg"

BEGIN, END = "<!-- refusals: {} -->", "<!-- end: {} -->"


class RefusalsError(Exception):
    """The source cannot be read as expected, or the data does not cover it."""


@dataclass
class Site:
    file: str
    line: int
    function: str
    call: str
    format: str


def unescape(text):
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def scan(path, name=None):
    """The message sites of one C file, in order."""
    lines = Path(path).read_text(errors="replace").splitlines()
    function = candidate = "(file scope)"
    found = []
    for i, line in enumerate(lines):
        m = _SIGNATURE.match(line)
        if m:
            candidate = m.group(1)
        elif line.startswith("{"):
            function = candidate
        for call in _CALL.finditer(line):
            rest = line[call.end():] + "\n" + "\n".join(lines[i + 1:i + 8])
            if call.group(1).endswith("fc"):
                rest = rest.partition(",")[2]
            parts, pos = [], 0
            while (s := _STRING.match(rest, pos)):
                parts.append(s.group(1))
                pos = s.end()
            if not parts:
                raise RefusalsError(f"{path}:{i + 1}: {call.group(1)}() without a format string")
            found.append(Site(name or Path(path).name, i + 1, function, call.group(1),
                              unescape("".join(parts)).rstrip("\n")))
    return found


def source_dir(release, cache=None):
    """fs/overlayfs of the cached linux-source of `release`, or None."""
    root = Path(cache) if cache else kernel_mod.cache_dir()
    found = sorted((root / release / "source").glob("linux-source-*/fs/overlayfs"))
    return found[0] if found else None


def source_version(release, cache=None):
    marker = (Path(cache) if cache else kernel_mod.cache_dir()) / release / "source" / ".version"
    m = re.search(r'"version":\s*"([^"]+)"', marker.read_text()) if marker.is_file() else None
    return m.group(1) if m else "?"


def sites(directory):
    out = []
    for path in sorted(Path(directory).glob("*.c")):
        out += scan(path)
    return out


def case_messages(cases=CASES):
    """[(case, group)] from the cases under `cases` that call expect_kmsg(): each group is
    the message strings of one expected message (a tuple of alternatives, or one string),
    found in those calls, in the case's parametrize decorators, and in the module-level
    tables either names."""
    out = []
    for path in sorted(Path(cases).glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        tables = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                  for t in node.targets if isinstance(t, ast.Name)}
        for func in tree.body:
            if not isinstance(func, ast.FunctionDef) or not func.name.startswith("test_"):
                continue
            calls = [n for n in ast.walk(func) if isinstance(n, ast.Call)
                     and getattr(n.func, "id", getattr(n.func, "attr", None)) == EXPECT]
            if not calls:
                continue
            roots = [a for c in calls for a in c.args[1:]] + func.decorator_list
            case = f"{path.name}::{func.name}"
            out += [(case, group) for group in _groups(roots, tables)]
    return out


def _groups(roots, tables, seen=None):
    """The message groups under `roots`: a tuple of string constants is one group (the
    alternatives of one message), any other string constant a group of its own; names of
    module-level tables are followed."""
    seen = set() if seen is None else seen
    for root in roots:
        stack = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Tuple) and node.elts and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                yield tuple(e.value for e in node.elts)
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield (node.value,)
            elif isinstance(node, ast.Name) and node.id in tables and node.id not in seen:
                seen.add(node.id)
                stack.append(tables[node.id])
            stack.extend(ast.iter_child_nodes(node))


def triggered_by(release, formats, cases=CASES):
    """{format: [cases]} for one kernel: a case triggers a site of it when one of its
    expected messages names that site's format and no other format of this kernel (of a
    group of alternatives, which one a kernel logs is known only for a single match)."""
    out = {}
    for case, group in case_messages(cases):
        present = [f for f in group if f in formats]
        if len(present) == 1:
            out.setdefault(present[0], set()).add(case)
    return {k: sorted(v) for k, v in out.items()}


def table(release, directory, cases=CASES, cache=None):
    """The markdown section of one kernel."""
    found = sites(directory)
    missing = sorted({s.format for s in found if s.format not in SITES})
    if missing:
        raise RefusalsError(f"{release}: messages without an entry in overlay_harness/refusal_triggers.py:\n"
                            + "\n".join(f"  {m!r}" for m in missing))
    triggered = triggered_by(release, {s.format for s in found}, cases)
    rows, counts = [], {"triggerable": 0, "triggerable_cased": 0, "crafted": 0, "crafted_cased": 0}
    for s in found:
        result, trigger, how = PER_KERNEL.get((release, s.format), SITES[s.format])
        by = [] if (release, s.format) in PER_KERNEL else triggered.get(s.format, [])
        kind = "triggerable" if trigger in TRIGGERABLE else trigger if trigger == "crafted" else None
        if kind:
            counts[kind] += 1
            counts[kind + "_cased"] += bool(by)
        message = s.format.replace("\n", "\\n").replace("|", "\\|")
        rows.append(f"| {s.file}:{s.function} | {s.call} | `{message}` | {result} | {trigger}: {how} | "
                    f"{', '.join(f'`{c}`' for c in by) or '-'} |")
    t, tc, c, cc = (counts[k] for k in ("triggerable", "triggerable_cased", "crafted", "crafted_cased"))
    out = [BEGIN.format(release), f"## {release} (linux-source {source_version(release, cache)})", "",
           f"{len(found)} sites; {t} triggerable from userspace with options, layers, module parameters "
           f"or operations, {tc} of them by a case ({100 * tc // max(1, t)} %); {c} need a crafted layer, "
           f"{cc} of them by a case.", "",
           "| where | call | message | what follows | trigger | case |", "|---|---|---|---|---|---|",
           *rows, END.format(release)]
    return "\n".join(out)


HEADER = f"""# What overlayfs refuses, per kernel

Generated by `{REGENERATE}` from each kernel's fs/overlayfs source (the cached
linux-source, `python -m overlay_harness.fetch --source`), overlay_harness/refusal_triggers.py
(what follows each message, what triggers it) and the cases' `expect_kmsg()` calls (the case
column); `tests/test_refusals.py` fails when the table of a kernel whose source is cached is
stale. Line numbers are left out on purpose: a site is its file, function and message.
A case is named when one of the messages it expects is that site's wording and no other
wording of its group of alternatives is a site of the same kernel (which of two a kernel
logs is not known from the source); the exceptions of refusal_triggers.PER_KERNEL (one
wording, two sites) are named by no case. "Triggerable" counts the sites whose trigger is
mount options, layers, module parameters or operations.
"""


def render(existing, cases=CASES, cache=None, log=print):
    """docs/refusals.md: a fresh section per cached kernel, the existing one for the others."""
    sections = []
    for release in KERNELS:
        directory = source_dir(release, cache)
        if directory is None:
            old = _section(existing, release)
            log(f"{release}: no source in the cache; keeping its section" if old
                else f"{release}: no source in the cache and no section yet")
            if old:
                sections.append(old)
            continue
        sections.append(table(release, directory, cases, cache))
    return HEADER + "\n" + "\n\n".join(sections) + "\n"


def _section(text, release):
    pattern = re.escape(BEGIN.format(release)) + r".*?" + re.escape(END.format(release))
    m = re.search(pattern, text or "", re.S)
    return m.group(0) if m else None


def stale(doc=DOC, cases=CASES, cache=None):
    """The cached kernels whose section differs from what is generated now."""
    text = Path(doc).read_text() if Path(doc).is_file() else ""
    return [r for r in KERNELS if (d := source_dir(r, cache)) is not None
            and _section(text, r) != table(r, d, cases, cache)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"(re)write {DOC}")
    mode.add_argument("--check", action="store_true", help=f"exit 1 when {DOC} is stale")
    ap.add_argument("--output", default=str(DOC), help="the file --write/--check use")
    args = ap.parse_args(argv)
    try:
        if args.check:
            bad = stale(args.output)
            if bad:
                print(f"{args.output} is stale for {', '.join(bad)}: regenerate it with `{REGENERATE}`",
                      file=sys.stderr)
                return 1
            return 0
        existing = Path(args.output).read_text() if Path(args.output).is_file() else ""
        text = render(existing, log=lambda m: print(m, file=sys.stderr))
    except RefusalsError as e:
        print(f"refusals: {e}", file=sys.stderr)
        return 2
    if args.write:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
