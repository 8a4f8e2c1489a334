"""A catalogue of the cases, from pytest's own collection (so parametrisation and markers
are what a run gets): each case function with its markers, upper filesystems and other
variants, what it checks (its docstring's first paragraph: the seed, thread or document
and the promise) and its known issues.

    python -m overlay_harness.catalogue                 # print it
    python -m overlay_harness.catalogue --markdown      # (re)write docs/cases.md
    python -m overlay_harness.catalogue --check         # exit 1 when docs/cases.md is stale

Run it from the project's root (where pytest finds conftest.py and cases/).
"""

import argparse
import contextlib
import inspect
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .plugin.known_issues import span

DOC = Path("docs/cases.md")
REGENERATE = "python -m overlay_harness.catalogue --markdown"
NOT_SHOWN = {"parametrize", "upper_fs", "known_issue", "usefixtures", "filterwarnings"}


@dataclass
class Case:
    """One case function and its collected runs (variants)."""

    module: str                     # cases/test_volatile.py
    name: str                       # test_volatile_sync_calls_return_error_every_time
    checks: str                     # the docstring's first paragraph, on one line
    markers: list = field(default_factory=list)
    upper_fs: list = field(default_factory=list)
    variants: list = field(default_factory=list)
    known_issues: dict = field(default_factory=dict)  # (where, reason) -> the variants it applies to


class _Collector:
    def __init__(self):
        self.items = []

    def pytest_collection_finish(self, session):
        self.items = list(session.items)


def first_paragraph(doc):
    return " ".join((inspect.cleandoc(doc or "").split("\n\n") or [""])[0].split())


def collect(paths=("cases",)):
    """The cases under `paths`, grouped by function, in collection order; (cases, module
    docstrings' first paragraphs). A collection error is one clear error."""
    collector = _Collector()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = pytest.main(["--collect-only", "-qq", "--no-header", "-p", "no:cacheprovider", *paths],
                         plugins=[collector])
    if rc != pytest.ExitCode.OK:
        raise SystemExit(f"collecting {' '.join(paths)} failed (pytest exit {int(rc)}):\n{out.getvalue()}")
    cases, modules = {}, {}
    for item in collector.items:
        module = item.nodeid.split("::")[0]
        modules.setdefault(module, first_paragraph(getattr(item.module, "__doc__", "")))
        key = item.nodeid.split("[")[0]
        case = cases.get(key)
        if case is None:
            case = cases[key] = Case(module, item.originalname, first_paragraph(item.function.__doc__))
            case.markers = [m.name for m in item.iter_markers() if m.name not in NOT_SHOWN]
            case.markers = list(dict.fromkeys(case.markers))
        callspec = getattr(item, "callspec", None)
        variant = callspec.id if callspec else ""
        if variant:
            case.variants.append(variant)
        fs = callspec.params.get("upper_fs") if callspec else None
        if fs and fs not in case.upper_fs:
            case.upper_fs.append(fs)
        for mark in item.iter_markers("known_issue"):
            only = mark.kwargs.get("upper_fs")
            where = span(mark) + (f"; upper fs {', '.join(only)}" if only else "")
            case.known_issues.setdefault((where, mark.args[0]), []).append(variant)
    return list(cases.values()), modules


def _applies(case, variants):
    """"" when a known issue applies to every variant of its case, else which ones."""
    return "" if sorted(variants) == sorted(case.variants or [""]) else f" [{', '.join(variants)}]"


def _other_variants(case):
    """Variant ids that say more than the upper filesystem alone."""
    return [v for v in case.variants if v not in case.upper_fs]


def text(cases, modules):
    out = []
    for module, doc in modules.items():
        out += ["", f"{module}: {doc}"]
        for c in (c for c in cases if c.module == module):
            tags = [f"[{', '.join(c.markers)}]"] if c.markers else []
            tags += [f"upper fs: {', '.join(c.upper_fs)}"] if c.upper_fs else []
            out.append(f"  {c.name}  {'  '.join(tags)}".rstrip())
            if _other_variants(c):
                out.append(f"    variants: {', '.join(_other_variants(c))}")
            out.append(f"    {c.checks}")
            out += [f"    known issue{_applies(c, v)} ({where}): {reason}"
                    for (where, reason), v in c.known_issues.items()]
    return "\n".join(out[1:]) + "\n"


def markdown(cases, modules):
    runs = sum(max(1, len(c.variants)) for c in cases)
    out = ["# The cases", "",
           f"Generated from pytest's collection of the cases by `{REGENERATE}`: do not edit by hand. "
           f"{len(cases)} case functions, {runs} runs per kernel (every upper filesystem a case "
           "supports; `--upper-fs` narrows it). Known issues are strict xfails on the kernels named.", ""]
    for module, doc in modules.items():
        out += [f"## `{module}`", "", doc, ""]
        for c in (c for c in cases if c.module == module):
            out += [f"### `{c.name}`", ""]
            if c.markers:
                out.append(f"- markers: {', '.join(f'`{m}`' for m in c.markers)}")
            if c.upper_fs:
                out.append(f"- upper filesystems: {', '.join(c.upper_fs)}")
            if _other_variants(c):
                out.append(f"- variants: {', '.join(f'`{v}`' for v in _other_variants(c))}")
            out.append(f"- checks: {c.checks}")
            for (where, reason), variants in c.known_issues.items():
                out.append(f"- known issue{_applies(c, variants)} ({where}): {reason}")
            out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m overlay_harness.catalogue",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", default=["cases"], help="what to collect (default: cases)")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--markdown", action="store_true", help=f"write {DOC} (or --output)")
    what.add_argument("--check", action="store_true",
                      help=f"exit 1 when {DOC} (or --output) differs from the cases")
    ap.add_argument("--output", type=Path, default=DOC,
                    help=f"where --markdown writes ('-': stdout) and --check reads (default {DOC})")
    args = ap.parse_args(argv)
    cases, modules = collect(args.paths)
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current != markdown(cases, modules):
            print(f"{args.output} is stale: regenerate it with `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    if args.markdown:
        if str(args.output) == "-":
            sys.stdout.write(markdown(cases, modules))
        else:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(markdown(cases, modules))
            print(f"wrote {args.output}: {len(cases)} cases")
        return 0
    sys.stdout.write(text(cases, modules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
