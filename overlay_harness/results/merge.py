"""The parts of a run (--shard I/N on several machines) and runs of other machines put
together: one summary.json, report.html, table.md, kcidb.json and durations.json. No
pytest; `python -m overlay_harness.report merge DIR...` is the command line.

What cannot be one run is an error, each conflict one line (MergeError.conflicts):
- the same case on the same kernel twice with different outcomes;
- parts of one sharded run (the same kernels and N) of different selections (the
  collected case ids differ: other arguments, -k, -m or --upper-fs), or split with
  different durations (their parts would overlap and leave cases out);
- summaries written by different harness versions (version or commit);
- a missing part: N parts expected, fewer found;
- two patch series (summary.json's "series": different patchset_hash).
"""

import datetime
import hashlib
import json
from pathlib import Path

from . import kcidb
from .model import Results
from .render import html_page, markdown_table, time_bars, timing_by_kernel


class MergeError(Exception):
    def __init__(self, conflicts):
        super().__init__("\n".join(conflicts))
        self.conflicts = conflicts


def find_summaries(dirs):
    """The summary.json files of each DIR (a run directory, a folder of them, or the file)."""
    found, missing = [], []
    for d in map(Path, dirs):
        if d.is_file():
            hits = [d]
        elif (d / "summary.json").is_file():
            hits = [d / "summary.json"]
        else:
            hits = sorted(d.rglob("summary.json"))
        if not hits:
            missing.append(f"{d}: no summary.json there")
        found += [h for h in hits if h not in found]
    if missing:
        raise MergeError(missing)
    return found


def load(paths):
    out, bad = [], []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
            if not isinstance(data, dict) or not isinstance(data.get("results"), list):
                raise ValueError("not a summary.json (no results)")
        except (OSError, ValueError) as e:
            bad.append(f"{p}: {e}")
            continue
        out.append((Path(p), data))
    if bad:
        raise MergeError(bad)
    return out


def _where(path):
    return str(path.parent)


def _part(summary):
    shard = summary.get("shard") or {}
    return (shard["index"], shard["count"]) if shard.get("count", 1) > 1 else None


def _labels(summary):
    return tuple(k["label"] for k in summary.get("kernels", []))


def _describe_selection(sel):
    if not sel:
        return "no selection recorded"
    text = " ".join(sel.get("args") or [])
    for flag, key in (("-k", "keyword"), ("-m", "markexpr"), ("--upper-fs", "upper_fs")):
        if sel.get(key):
            text += f" {flag} {sel[key]!r}"
    return f"{text.strip() or '(no arguments)'}: {sel.get('count')} cases"


def conflicts(loaded):
    """Every reason the summaries are not one run, one line each ([] when they are)."""
    found = []
    versions = {}
    for path, s in loaded:
        h = s.get("harness") or {}
        versions.setdefault((h.get("version"), h.get("commit")), []).append(_where(path))
    if len(versions) > 1:
        found.append("different harness versions: " + "; ".join(
            f"{v or 'unknown'}" + (f" (commit {c[:12]})" if c else "") + f" in {', '.join(w)}"
            for (v, c), w in versions.items()))
    groups = {}
    for path, s in loaded:
        if _part(s):
            groups.setdefault((_labels(s), _part(s)[1]), []).append((path, s))
    for (labels, n), members in groups.items():
        what = f"shards of {n} on {', '.join(labels)}"
        sels = {}
        for path, s in members:
            sels.setdefault((s.get("selection") or {}).get("digest"), []).append((path, s))
        if len(sels) > 1:
            found.append(f"{what}: different selections: " + "; ".join(
                f"{', '.join(f'{_part(s)[0]}/{n} in {_where(p)}' for p, s in ms)} "
                f"({_describe_selection(ms[0][1].get('selection'))})" for ms in sels.values()))
            continue
        digests = {(s["shard"].get("durations_digest")) for _, s in members}
        if len(digests) > 1:
            found.append(f"{what}: split with different durations ("
                         + "; ".join(f"{_part(s)[0]}/{n}: {s['shard'].get('durations')}" for _, s in members)
                         + "): their parts overlap and leave cases out; give every part the same "
                           "--shard-durations file")
            continue
        have = {_part(s)[0] for _, s in members}
        lost = [i for i in range(1, n + 1) if i not in have]
        if lost:
            found.append(f"{what}: shard{'s' if len(lost) > 1 else ''} "
                         f"{', '.join(f'{i}/{n}' for i in lost)} missing (found "
                         + ", ".join(f"{_part(s)[0]}/{n} in {_where(p)}" for p, s in members) + ")")
    outcomes = {}
    for path, s in loaded:
        for rec in s["results"]:
            outcomes.setdefault((rec["case"], rec["kernel"]), {}).setdefault(rec.get("outcome"), []).append(
                _where(path))
    for (case, kernel), seen in outcomes.items():
        if len(seen) > 1:
            found.append(f"{case} on {kernel}: " + "; ".join(
                f"{o or 'not run'} in {', '.join(w)}" for o, w in seen.items()))
    series = {}
    for path, s in loaded:
        if s.get("series"):
            series.setdefault(s["series"].get("patchset_hash"), []).append(_where(path))
    if len(series) > 1:
        found.append("different patch series: " + "; ".join(
            f"patchset {h} in {', '.join(w)}" for h, w in series.items()))
    return found


def _time_of(path):
    timing = path.with_name("timing.json")
    try:
        return json.loads(timing.read_text()) if timing.is_file() else None
    except (OSError, ValueError):
        return None


def _wall(s):
    try:
        a, b = (datetime.datetime.fromisoformat(s[k]) for k in ("started", "finished"))
    except (KeyError, TypeError, ValueError):
        return None
    return round((b - a).total_seconds(), 1)


def _part_name(path, s):
    part = _part(s)
    name = f"shard {part[0]}/{part[1]}" if part else "whole run"
    return f"{name} on {', '.join(_labels(s))} ({s.get('run_id', _where(path))})"


def merge(loaded):
    """(the merged summary, its Results, the times per kernel as timing.json holds them,
    the times per part for the page); a MergeError with every conflict when the summaries
    are not one run."""
    problems = conflicts(loaded)
    if problems:
        raise MergeError(problems)
    summaries = [s for _, s in loaded]
    res = Results.from_summaries(summaries)
    kernels, seen = [], set()
    for s in summaries:
        for k in s.get("kernels", []):
            if k["label"] not in seen:
                seen.add(k["label"])
                kernels.append(k)
    sels = {(s.get("selection") or {}).get("digest"): s.get("selection") for s in summaries}
    ids = sorted(str(s.get("run_id")) for s in summaries)
    parts, per_part, per_kernel = [], {}, {}
    for path, s in loaded:
        timing = _time_of(path)
        wall = _wall(s)
        parts.append({"summary": str(path), "run_id": s.get("run_id"), "shard": s.get("shard"),
                      "kernels": list(_labels(s)), "started": s.get("started"), "finished": s.get("finished"),
                      "wall_s": wall, "cases": len(s["results"]), "module_build": s.get("module_build")})
        if timing:
            name = _part_name(path, s) + (f": {wall:.0f} s wall" if wall is not None else "")
            per_part[name] = {"boots_s": timing.get("boots_s", []), "phases_s": timing.get("phases_s", {})}
            for label, t in timing_by_kernel(timing, list(_labels(s))).items():
                into = per_kernel.setdefault(label, {"boots_s": [], "phases_s": {}})
                into["boots_s"] += t.get("boots_s", [])
                for phase, values in t.get("phases_s", {}).items():
                    into["phases_s"].setdefault(phase, []).extend(values)

    def first(key):
        return next((s[key] for s in summaries if s.get(key)), None)

    regs = res.regressions()
    merged = {
        "run_id": "merged-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12],
        "run_dir": None,
        "started": min((s["started"] for s in summaries if s.get("started")), default=None),
        "finished": max((s["finished"] for s in summaries if s.get("finished")), default=None),
        "exit_status": max([1 if regs else 0, *(int(s.get("exit_status") or 0) for s in summaries)]),
        "accel": first("accel"), "config_fragment": first("config_fragment"),
        "kernels": kernels, "results": res.records(),
        "regressions": [{"case": c, "kernel": k, "outcome": o, "baseline": res.kernels[0]}
                        for c, k, o in regs],
        "known_issues": res.known_issues(), "totals": res.totals(),
        "boot_failure": first("boot_failure"),
        "harness": summaries[0].get("harness"),
        "selection": next(iter(sels.values())) if len(sels) == 1 else None,
        "shard": None,
        "merged_from": parts,
    }
    for key in ("series", "module_build"):
        if first(key) is not None:
            merged[key] = first(key)
    timing = {"kernels": per_kernel} if per_kernel else None
    return merged, res, timing, per_part


def case_seconds(records):
    """(record, its seconds without the boot, the boot part) of each record that has an
    outcome. The boot part of a case that waited for a VM boot is its set-up beyond the
    median set-up of the cases that waited for none: the boot and the guest's first
    preparation after it, which every shard pays for its own VM."""
    done = [r for r in records if r.get("outcome")]
    plain = sorted(float(r.get("setup") or 0) for r in done if not r.get("boot"))
    median = plain[len(plain) // 2] if plain else 0.0
    out = []
    for r in done:
        total = sum(float(r.get(k) or 0) for k in ("setup", "duration", "teardown"))
        boot = max(0.0, float(r.get("setup") or 0) - median) if r.get("boot") else 0.0
        out.append((r, round(total - boot, 3), round(boot, 3)))
    return out


def durations_table(summary):
    """{case id: mean seconds over its kernels, boots left out} (--shard-durations FILE)."""
    sums = {}
    for rec, seconds, _boot in case_seconds(summary["results"]):
        sums.setdefault(rec["case"], []).append(seconds)
    return {c: round(sum(v) / len(v), 2) for c, v in sorted(sums.items())}


def write(out_dir, merged, res, timing, per_part, origin=kcidb.ORIGIN):
    """summary.json, report.html, table.md, kcidb.json and durations.json in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged = dict(merged, run_dir=str(out.resolve()))
    (out / "summary.json").write_text(json.dumps(merged, indent=2) + "\n")
    extra = time_bars(per_part, title="Where the time went, per shard",
                      intro="Per part of the run (its machine's VMs summed; the wall time is "
                            "the part's own, from its start to its end)") if per_part else []
    (out / "report.html").write_text(html_page(res, merged, timing, extra=extra))
    (out / "table.md").write_text(markdown_table(res))
    (out / "kcidb.json").write_text(json.dumps(kcidb.document(merged, origin), indent=1) + "\n")
    (out / "durations.json").write_text(json.dumps(durations_table(merged), indent=1) + "\n")
    return out
