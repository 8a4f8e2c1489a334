"""A patch series against its baseline: `--overlay-patch FILE` (repeatable) and
`--overlay-base`.

With --overlay-patch the series (host/series.py) is read, checked (fs/overlayfs only)
and applied onto each kernel's base: --overlay-src, else the kernel under test's own
fs/overlayfs (Debian's linux-source in the kernel cache, fetched on first use); the
result is built into overlay.ko and substituted as --overlay-src would be (modbuild),
each build incremental in a work directory kept per kernel release in the cache
($XDG_CACHE_HOME/overlay-harness/overlay-build/<release>): the next build recompiles
only the files that differ from the last one. Any problem there is one usage error before any boot.

The baseline is the same base without the series, built and substituted the same way
(`--overlay-base`: a nested pytest run with the same arguments, before this run boots
anything), on the same cases. Its outcomes are cached by (the kernels' releases, the
base's source digest, the selection: the command line's arguments that choose cases, and
the digests of the case files and of this package) under
$XDG_CACHE_HOME/overlay-harness/baselines (~/.cache/...; $OVERLAY_HARNESS_BASELINES
overrides it), so the next run of a series on the same kernel and cases does not pay for
it again. A baseline with a harness error is not cached. The results layer compares every
outcome against it (results/model.py: Change); what the run tested goes into
summary.json as data (`series_record`)."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..host import kernel as kernel_mod
from ..host import modbuild
from ..host import series as series_mod
from . import progress

BASELINES_ENV = "OVERLAY_HARNESS_BASELINES"
# Options that do not choose cases: left out of the baseline's cache key (the -n family
# still goes to the baseline run) or of its command line (the rest).
_VALUED_DROPPED = {"--overlay-patch", "--overlay-src", "--overlay-module", "--results-dir",
                   "--junitxml", "--junit-xml", "-n", "--numprocesses", "--html", "--maxprocesses"}
_FLAGS_DROPPED = {"--overlay-base", "-q", "-v", "-vv", "-qq", "--quiet", "--verbose", "-s"}
_NOT_KEY = {"-n", "--numprocesses", "--maxprocesses"}


def wanted(config):
    """Whether this run builds from a base (with or without a series)."""
    return bool(config.getoption("overlay_patch") or config.getoption("overlay_base"))


def base_source(config, kernel, log=print):
    """The fs/overlayfs directory the series applies to for `kernel`."""
    src = config.getoption("overlay_src")
    if src:
        return modbuild._source_dir(src)
    from ..host import fetch
    try:
        return fetch.fetch_source(kernel.release, members=["fs/overlayfs"], log=log) / "fs" / "overlayfs"
    except fetch.FetchError as e:
        raise modbuild.ModuleError(f"no fs/overlayfs source for {kernel.release} ({e}); give "
                                   "--overlay-src=DIR (a fs/overlayfs fitting that kernel)") from None


def build(state, kernel, out, log=print):
    """The OverlayModule for `kernel`: its base, with the series when one is given, built
    incrementally; what was built from what goes into state.series_info."""
    config = state.config
    series = None
    if config.getoption("overlay_patch"):   # the patches first: a bad one is an error at once
        if state.series is None:
            state.series = series_mod.read(config.getoption("overlay_patch"),
                                           state.run_dir / "series" / "patches")
            series_mod.check_paths(state.series)
        series = state.series
    base = base_source(config, kernel, log)
    src = (series_mod.apply(series, base, state.run_dir / "series" / kernel.release)
           if series else base)
    workdir = kernel_mod.cache_root() / "overlay-build" / kernel.release
    module = modbuild.build(src, kernel, out, workdir=workdir, log=log)
    state.series_info[kernel.release] = {
        "base": str(base), "source_digest": series_mod.source_digest(base),
        "patched_digest": series_mod.source_digest(src)}
    return module


def selection_args(args):
    """(the baseline's command line, the arguments its cache key depends on) from this
    run's command line."""
    run, key = [], []
    it = iter(args)
    for a in it:
        name = a.split("=", 1)[0]
        if a in _FLAGS_DROPPED or re.fullmatch(r"-r\w+", a):
            continue
        if a.startswith("-n") and len(a) > 2 and not a.startswith("--"):   # -n2, -nauto
            run.append(a)
            continue
        if name in _VALUED_DROPPED:
            value = [a] if "=" in a else [a, next(it, "")]
            if name in _NOT_KEY:
                run += value
            continue
        run.append(a)
        key.append(a)
    return run, key


def _tree_digest(paths):
    """sha256 over the .py and .toml files under `paths` (names relative to each path, and
    bytes): the same files give the same digest in any checkout."""
    h = hashlib.sha256()
    for top in paths:
        top = Path(top)
        files = [top] if top.is_file() else []
        for d, dirs, names in os.walk(top) if top.is_dir() else ():
            dirs[:] = sorted(x for x in dirs if x not in ("results", ".venv", ".git", "__pycache__"))
            files += [Path(d) / n for n in sorted(names) if n.endswith((".py", ".toml"))]
        for f in files:
            name = f.name if f == top else str(f.relative_to(top))
            h.update(name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def baseline_key(config, state, key_args):
    """The cache key of this run's baseline, and what it is made of."""
    root = Path(config.rootpath)
    given = [root / p for p in config.getini("testpaths")] or [root / "cases"]
    paths = [Path(config.invocation_params.dir) / a.split("::")[0] for a in key_args
             if not a.startswith("-") and (Path(config.invocation_params.dir) / a.split("::")[0]).exists()]
    parts = {
        "releases": [k.release for k in state.kernels],
        "source_digests": [state.series_info[k.release]["source_digest"] for k in state.kernels],
        "args": key_args,
        "cases": _tree_digest(paths or given) + _tree_digest([root / "conftest.py"]),
        "harness": _tree_digest([Path(__file__).resolve().parent.parent]),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24], parts


def baselines_dir():
    return Path(os.environ.get(BASELINES_ENV) or kernel_mod.cache_root() / "baselines")


def outcomes_of(summary):
    """{(case, kernel label): outcome} of a summary.json's results."""
    return {(r["case"], r["kernel"]): r["outcome"] for r in summary["results"] if r.get("outcome")}


def run_baseline(config, state, log):
    """The baseline's summary (from the cache, else from a nested run now), and a record of
    where it came from."""
    run_args, key_args = selection_args([str(a) for a in config.invocation_params.args])
    key, parts = baseline_key(config, state, key_args)
    cached = baselines_dir() / key / "summary.json"
    if cached.is_file():
        summary = json.loads(cached.read_text())
        log(f"baseline: cached {cached} (run {summary.get('run_id')}, {len(summary['results'])} case runs)")
        return summary, {"key": key, "cached": True, "summary": str(cached),
                         "run_dir": summary.get("run_dir"), **parts}
    out = state.run_dir / "baseline"
    src = config.getoption("overlay_src")
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *run_args, "--overlay-base",
            f"--results-dir={out}"] + ([f"--overlay-src={src}"] if src else [])
    log(f"baseline: the same source without the series, built and run the same way "
        f"({' '.join(run_args) or 'every case'}) ...")
    start = time.monotonic()
    p = subprocess.run(argv, cwd=config.invocation_params.dir, capture_output=True, text=True,
                       check=False)
    wall = time.monotonic() - start
    found = sorted(out.glob("run-*/summary.json"), key=lambda f: f.stat().st_mtime)
    summary = json.loads(found[-1].read_text()) if found else None
    if not summary or not summary.get("results"):
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        raise pytest.UsageError(f"the baseline run (the source without the series) gave no results "
                                f"(exit {p.returncode}); nothing was compared:\n{tail}")
    log(f"baseline: {(p.stdout.strip().splitlines() or ['?'])[-1]} in {wall:.0f} s, {found[-1].parent}")
    if all(r.get("outcome") != "error" for r in summary["results"]):
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        shutil.copy(found[-1], tmp)
        tmp.replace(cached)
        (cached.parent / "key.json").write_text(json.dumps(parts, indent=2) + "\n")
    else:
        log("baseline: not cached (a harness error in it)")
    return summary, {"key": key, "cached": False, "summary": str(found[-1]),
                     "run_dir": str(found[-1].parent), "wall_s": round(wall, 1), **parts}


@pytest.hookimpl(trylast=True)  # after session.py has resolved the kernels (and built the modules)
def pytest_configure(config):
    if hasattr(config, "workerinput") or not config.getoption("overlay_patch"):
        return
    from .session import state_of
    state = state_of(config)
    summary, where = run_baseline(config, state, progress.reporter(config, "series"))
    state.baseline = outcomes_of(summary)
    state.baseline_meta = where


def series_record(state):
    """summary.json's "series" and "module_build" entries of a run (None, None without a
    base build)."""
    modules = [k.overlay_module for k in state.kernels if getattr(k, "overlay_module", None)]
    if not state.series_info or not modules:
        return None, None
    first = state.kernels[0].release
    info = state.series_info.get(first, {})
    s = state.series
    record = {
        "patchset_hash": s.patchset_hash if s else "",
        "message_id": s.message_id if s else None,
        "cover_letter": s.cover if s else None,
        "patches": [p.to_json() for p in s.patches] if s else [],
        "source_digest": info.get("source_digest"),       # the base the series applies to
        "patched_digest": info.get("patched_digest"),     # the base with the series
        "base": info.get("base"),
        "per_kernel": state.series_info,
    }
    build = {
        "valid": True,   # a module that does not build stops the run before it (a usage error)
        "duration": round(sum(m.build_s for m in modules), 1),
        "start_time": modules[0].build_started,
        "log_path": modules[0].build_log,
    }
    return record, build
