"""Function coverage of the overlay module as data (no pytest): per kernel, the module's
functions and, for each, the cases that reached it (from the reports' properties that
plugin/fixtures.py sets under --coverage); which source file of fs/overlayfs defines each
function (read from a source tree); the per-file table and the unreached list."""

import re
from pathlib import Path

from ..host import kernel as kernel_mod
from ..library.tracing import (
    PROP_FUNCTIONS,
    PROP_FUNCTIONS_LOST,
    PROP_MODULE_FUNCTIONS,
    ModuleFunctions,
)
from .model import PROP_CASE, PROP_KERNEL, _props

# The compiler's clones of a function keep its name before the first dot:
# ovl_copy_up_one.isra.0, ovl_fill_merge.constprop.0, ovl_lookup.cold
_CLONE = re.compile(r"\.(isra|constprop|part|cold|localalias)\b.*$")


def base_name(function):
    return _CLONE.sub("", function)


class Coverage:
    """Which cases reached which of the module's functions, per kernel."""

    def __init__(self):
        self.kernels = {}  # kernel label -> {"traceable", "untraceable", "reached", "lost"}

    def _kernel(self, label):
        return self.kernels.setdefault(label, {"traceable": set(), "untraceable": set(),
                                               "reached": {}, "lost": {}})

    def add(self, report):
        props = _props(report)
        kernel, case = props.get(PROP_KERNEL), props.get(PROP_CASE)
        if kernel is None:
            return
        if PROP_MODULE_FUNCTIONS in props:
            mf = ModuleFunctions.from_property("overlay", props[PROP_MODULE_FUNCTIONS])
            k = self._kernel(kernel)
            k["traceable"].update(mf.traceable)
            k["untraceable"].update(mf.untraceable)
        if PROP_FUNCTIONS in props and case is not None:
            k = self._kernel(kernel)
            for f in props[PROP_FUNCTIONS].split():
                k["reached"].setdefault(f, set()).add(case)
            if props.get(PROP_FUNCTIONS_LOST):
                k["lost"][case] = int(props[PROP_FUNCTIONS_LOST])

    def __bool__(self):
        return bool(self.kernels)

    def to_json(self):
        out = {}
        for label, k in self.kernels.items():
            out[label] = {
                "traceable": sorted(k["traceable"]), "untraceable": sorted(k["untraceable"]),
                "reached": {f: sorted(cases) for f, cases in sorted(k["reached"].items())},
                "unreached": sorted(k["traceable"] - set(k["reached"])),
                "lost_events": k["lost"]}
        return out


def load(data):
    """A Coverage from coverage.json's contents."""
    cov = Coverage()
    for label, k in data.items():
        cov.kernels[label] = {"traceable": set(k["traceable"]), "untraceable": set(k["untraceable"]),
                              "reached": {f: set(c) for f, c in k["reached"].items()},
                              "lost": dict(k.get("lost_events", {}))}
    return cov


def totals(kernel_data):
    """(reached, traceable) counts of one kernel's entry in Coverage.kernels."""
    traceable = kernel_data["traceable"]
    return len(traceable & set(kernel_data["reached"])), len(traceable)


_DEFINITION = re.compile(r"^(?![#}\s/*])(?!(?:return|if|else|while|for|switch|do)\b)"
                         r"[^;{}()=]*?\b([A-Za-z_]\w*)\s*\(", re.M)


def source_functions(tree):
    """{function name: source file} for the function definitions of an fs/overlayfs
    directory (its .c and .h files), found as kernel style writes them: the name at the
    start of a line or after the return type, then the parameters and a body."""
    where = {}
    for path in sorted(Path(tree).glob("*.[ch]")):
        text = path.read_text(errors="replace")
        for m in _DEFINITION.finditer(text):
            end = _closing_paren(text, m.end() - 1)
            if end is not None and re.match(r"\s*(?:__\w+(?:\([^)]*\))?\s*)*\{", text[end + 1:]):
                where.setdefault(m.group(1), path.name)
    return where


def _closing_paren(text, start):
    depth = 0
    for i in range(start, min(len(text), start + 4000)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return None


def source_map(release, overlay_src=None):
    """{function: source file} of the fs/overlayfs that built `release`'s module:
    `overlay_src` (--overlay-src) when given, else Debian's linux-source in the cache
    (`python -m overlay_harness.fetch --source`); {} when neither is at hand."""
    trees = ([Path(overlay_src), Path(overlay_src) / "fs/overlayfs"] if overlay_src else
             sorted((kernel_mod.cache_dir() / release / "source").glob("linux-source-*/fs/overlayfs")))
    for tree in trees:
        if (tree / "super.c").is_file():
            return source_functions(tree)
    return {}


def by_file(kernel_data, where):
    """[(file, reached, traceable, [unreached functions])] of one kernel, files in name
    order; functions no source file defines go under "?"."""
    files = {}
    reached = set(kernel_data["reached"])
    for f in sorted(kernel_data["traceable"]):
        row = files.setdefault(where.get(base_name(f), "?"), [0, 0, []])
        row[1] += 1
        if f in reached:
            row[0] += 1
        else:
            row[2].append(f)
    return [(name, *files[name]) for name in sorted(files)]


def summary_lines(cov, where_by_kernel=None):
    """The terminal's lines: per kernel, reached / traceable, per source file when its
    source is known, and the unreached functions."""
    lines = []
    for label, k in cov.kernels.items():
        got, total = totals(k)
        pct = 100.0 * got / total if total else 0.0
        lines.append(f"{label}: {got} of {total} traceable overlay functions reached ({pct:.1f} %); "
                     f"{len(k['untraceable'])} not traceable")
        where = (where_by_kernel or {}).get(label)
        if where:
            for name, r, t, _ in by_file(k, where):
                lines.append(f"  {name:<14} {r:>4} / {t:<4}")
        unreached = sorted(k["traceable"] - set(k["reached"]))
        if unreached:
            lines.append(f"  unreached ({len(unreached)}): {' '.join(unreached)}")
        if k["lost"]:
            lines.append(f"  incomplete: the trace buffer lost events in {len(k['lost'])} cases")
    return lines
