"""--shard I/N: the collected cases (after -k/-m) split into N parts of about the same
measured duration, so that N machines (a CI matrix) each run one part; and what a run
selected, which summary.json records (the recorder) so that `python -m
overlay_harness.report merge` can tell the parts of one run from other runs.

- The split is longest-first greedy (each case, the longest first, goes to the part with
  the least time so far; ties by case id, then fewest cases, then part number): every
  case is in exactly one part, the parts' totals differ by at most the longest case, and
  the same cases, the same durations and the same N give the same parts on every
  machine, in any collection order. The parametrisations of a case over kernels are
  cases of their own.
- Durations: --shard-durations FILE (a summary.json, a merged one included, or JSON
  {case id: seconds}), else the whole runs' summary.json in the results directory (a
  shard's own run is left out: shard 2 must see what shard 1 saw). A case's duration is
  its set-up, body and teardown, less the VM boot it waited for and the guest's first
  preparation after it (each part boots its own VM: merge.case_seconds) unless the case
  is marked fresh_vm; a case without one gets the mean of those known;
  with none known every case counts 1 s (still deterministic).
- Under pytest-xdist the controller reads the durations once and hands them to the
  workers, which all split alike; the first worker's selection comes back to the
  controller for summary.json.
"""

import functools
import hashlib
import importlib.metadata
import json
import subprocess
from pathlib import Path

import pytest

from ..plugin.options import setting
from ..plugin.session import kernel_of, uses_harness
from .merge import case_seconds
from .recorder import case_key

SELECTION_KEY = pytest.StashKey[dict]()
DURATIONS_INPUT = "ovh_shard_durations"   # workerinput: the controller's durations
SELECTION_OUTPUT = "ovh_selection"        # workeroutput: a worker's selection
RECENT_RUNS = 50                          # the newest whole runs in the results dir read


def parse_shard(text):
    """'2/5' -> (2, 5); a ValueError that says what is wrong otherwise."""
    index, sep, count = (text or "").strip().partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = None
    if not sep or i is None:
        raise ValueError(f"--shard {text}: write I/N, part I of N (e.g. --shard 1/4)")
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard {text}: N must be at least 1 and I between 1 and N")
    return i, n


def split(durations, n):
    """Split {case id: seconds} into n lists of case ids (each sorted): the longest case
    first, each to the part with the least time so far (on a tie: with the fewest cases,
    then the lower part)."""
    parts = [[] for _ in range(n)]
    totals = [0.0] * n
    for cid in sorted(durations, key=lambda c: (-durations[c], c)):
        k = min(range(n), key=lambda j: (totals[j], len(parts[j]), j))
        parts[k].append(cid)
        totals[k] += durations[cid]
    return [sorted(p) for p in parts]


def digest(ids):
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def durations_of(data):
    """{"nodeid": {id: (seconds, boot)}, "case": {case: [(seconds, boot), ...]}} of a
    summary.json's records, or of a plain {id: seconds} mapping."""
    out = {"nodeid": {}, "case": {}}
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        for rec, seconds, boot in case_seconds(data["results"]):
            entry = (seconds + boot, boot)
            if rec.get("nodeid"):
                out["nodeid"][rec["nodeid"]] = entry
            out["case"].setdefault(rec["case"], []).append(entry)
    elif isinstance(data, dict) and all(isinstance(v, int | float) for v in data.values()):
        for cid, seconds in data.items():
            out["nodeid"][cid] = (float(seconds), 0.0)
            out["case"].setdefault(cid, []).append((float(seconds), 0.0))
    else:
        raise ValueError("neither a summary.json nor a JSON object {case id: seconds}")
    return out


def _merge_durations(into, more):
    into["nodeid"].update(more["nodeid"])
    for case, entries in more["case"].items():
        into["case"][case] = entries  # the newer run's, for every kernel it ran on


def load_durations(config):
    """(durations as durations_of gives them, where they came from)."""
    path = config.getoption("shard_durations")
    if path:
        try:
            return durations_of(json.loads(Path(path).read_text())), str(path)
        except (OSError, ValueError) as e:
            raise pytest.UsageError(f"--shard-durations={path}: {e}") from None
    base = Path(setting(config, "results_dir") or Path(config.rootpath) / "results")
    found = {"nodeid": {}, "case": {}}
    runs = 0
    for summary in sorted(base.glob("*/summary.json"))[-RECENT_RUNS:]:  # run ids sort by time
        try:
            data = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        if (data.get("shard") or {}).get("count", 1) > 1:
            continue  # a part of a run: the next part must see what this one saw
        _merge_durations(found, durations_of(data))
        runs += 1
    return found, (f"{runs} whole run{'s' if runs != 1 else ''} in {base}" if runs else "none known")


def item_case(item):
    kernel = kernel_of(item)
    return case_key(item, kernel) if kernel is not None else item.nodeid


def estimates(items, durations):
    """{nodeid: estimated seconds} of the items (see the module's docstring)."""
    known = {}
    for item in items:
        fresh = item.get_closest_marker("fresh_vm") is not None
        entry = durations["nodeid"].get(item.nodeid)
        entries = [entry] if entry else durations["case"].get(item_case(item), [])
        if entries:
            known[item.nodeid] = sum(s - (0 if fresh else b) for s, b in entries) / len(entries)
    default = sum(known.values()) / len(known) if known else 1.0
    return {i.nodeid: round(max(0.0, known.get(i.nodeid, default)), 3) for i in items}


def _selection(config, items):
    root = Path(config.rootpath)

    def rel(arg):
        path, sep, rest = str(arg).partition("::")
        try:
            path = str(Path(path).resolve().relative_to(root))
        except ValueError:
            pass
        return path + sep + rest
    ids = [i.nodeid for i in items]
    return {"args": [rel(a) for a in config.args], "keyword": config.getoption("keyword") or "",
            "markexpr": config.getoption("markexpr") or "",
            "upper_fs": setting(config, "upper_fs"), "count": len(ids), "digest": digest(ids),
            "ids": sorted(ids)}


def pytest_configure(config):
    text = config.getoption("shard", None)
    if text is None:
        return
    try:
        config.stash[SELECTION_KEY] = {"shard": dict(zip(("index", "count"), parse_shard(text),
                                                         strict=True))}
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist controller: read the durations once, for every worker alike."""
    info = node.config.stash.get(SELECTION_KEY, None)
    if info is not None:
        if "loaded" not in info:
            info["loaded"] = load_durations(node.config)
        node.workerinput[DURATIONS_INPUT] = info["loaded"]


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(session, config, items):
    info = config.stash.get(SELECTION_KEY, None)
    if not any(uses_harness(i) for i in items) and info is None:
        return
    info = config.stash[SELECTION_KEY] = {"shard": None} if info is None else info
    info["selection"] = _selection(config, items)
    if info["shard"] is None:
        return
    loaded = getattr(config, "workerinput", {}).get(DURATIONS_INPUT) or load_durations(config)
    durations, source = loaded
    durations = {"nodeid": {k: tuple(v) for k, v in durations["nodeid"].items()},
                 "case": {k: [tuple(e) for e in v] for k, v in durations["case"].items()}}
    est = estimates(items, durations)
    i, n = info["shard"]["index"], info["shard"]["count"]
    parts = split(est, n)
    mine = set(parts[i - 1])
    info["shard"].update({
        "durations": source, "durations_digest": digest(f"{k} {v}" for k, v in est.items()),
        "estimated_s": [round(sum(est[c] for c in p), 1) for p in parts], "ids": parts[i - 1]})
    deselected = [it for it in items if it.nodeid not in mine]
    if deselected:
        items[:] = [it for it in items if it.nodeid in mine]
        config.hook.pytest_deselected(items=deselected)


@functools.cache
def harness_version():
    """{"version": the package's, "commit": its git checkout's HEAD or None}: parts run by
    different harnesses are not one run."""
    try:
        version = importlib.metadata.version("overlay-harness")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    package = Path(__file__).resolve().parent.parent
    commit = None
    try:  # only the harness's own checkout (an installed copy may sit in another repository)
        p = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel", "HEAD"],
                           capture_output=True, text=True, timeout=10, check=False)
        lines = p.stdout.split()
        if p.returncode == 0 and len(lines) == 2 and Path(lines[0]).resolve() / package.name == package:
            commit = lines[1]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"version": version, "commit": commit}


def selection_of(config):
    """What this run selected (and its shard), as summary.json records it, or None."""
    return config.stash.get(SELECTION_KEY, None)


def pytest_sessionfinish(session):
    info = session.config.stash.get(SELECTION_KEY, None)
    if hasattr(session.config, "workeroutput") and info is not None and "selection" in info:
        session.config.workeroutput[SELECTION_OUTPUT] = {k: v for k, v in info.items() if k != "loaded"}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist controller: the selection a worker made (every worker made the same)."""
    sent = (getattr(node, "workeroutput", None) or {}).get(SELECTION_OUTPUT)
    info = node.config.stash.get(SELECTION_KEY, None)
    if sent and (info is None or "selection" not in info):
        node.config.stash[SELECTION_KEY] = sent


def pytest_terminal_summary(terminalreporter, config):
    info = config.stash.get(SELECTION_KEY, None)
    shard = (info or {}).get("shard")
    if hasattr(config, "workerinput") or not shard or "ids" not in shard:
        return
    total = sum(shard["estimated_s"])
    terminalreporter.write_line(
        f"overlay-harness: shard {shard['index']}/{shard['count']}: {len(shard['ids'])} of "
        f"{info['selection']['count']} cases, estimated {shard['estimated_s'][shard['index'] - 1]:.0f} s "
        f"of {total:.0f} s (durations: {shard['durations']})")
