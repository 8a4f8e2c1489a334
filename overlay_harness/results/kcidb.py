"""A summary.json (one run's, or `report merge`'s) as a KCIDB v5.3 document: what KernelCI's
database takes (`kci-dev submit build --from-json FILE`). Pure functions, no pytest; the
recorder writes kcidb.json beside summary.json, the merge writes one for all parts. The
tests validate the documents with kcidb-io's own schema (the dev extra).

- checkouts: one per kernel (its git tree, or its package/release), with the patch series
  (patchset_hash, message_id, the patch files) when the summary has "series";
- builds: one per kernel, the tests' parent; with "module_build" it is the build of the
  overlay module (status, duration, start time, log) that the tests ran;
- tests: one per case and kernel: path from the case id (cases/test_v.py::test_a[ext4] ->
  overlay_harness.cases.test_v.test_a.ext4), status (a harness error -> MISS), duration,
  environment = the kernel release, what failed as the log excerpt;
- issues and incidents: each known issue (a strict xfail's reason) is an issue, each case
  it concerns an incident: present when the case xfailed, absent when it xpassed.

Every id starts with the origin (KernelCI gives a submitter theirs) and names the run, so
the same case on the same kernel in two runs is two test objects. KCIDB takes no nulls:
what is not known is left out.
"""

import datetime
import hashlib
import re
from pathlib import Path

from .model import Outcome

SCHEMA_VERSION = {"major": 5, "minor": 3}
ORIGIN = "overlay_harness"
SUITE = "overlay_harness"  # the first part of every test path
ARCH = "x86_64"           # the harness boots x86_64 guests only (host/vng.py)
LOG_EXCERPT_MAX = 16384

STATUS = {Outcome.PASSED: "PASS", Outcome.FAILED: "FAIL", Outcome.SKIPPED: "SKIP",
          Outcome.XFAILED: "FAIL",      # the kernel disagrees with the documents: a known issue
          Outcome.XPASSED: "PASS",      # it behaved as documented, though a known issue says not
          Outcome.QUARANTINED: "FAIL"}  # failed; misc says it is parked (not counted here)


def _h(*parts, n=16):
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:n]


def test_path(case):
    """cases/test_v.py::TestX::test_a[ext4-xino] -> overlay_harness.cases.test_v.TestX.test_a.ext4-xino
    (KCIDB's path: dot-separated parts of letters, digits, '_' and '-')."""
    module, _, rest = case.partition("::")
    name, _, param = rest.partition("[")
    parts = [*Path(module).with_suffix("").parts, *name.split("::")]
    if param:
        parts.append(param[:-1] if param.endswith("]") else param)
    clean = [re.sub(r"[^A-Za-z0-9_-]", "_", p) for p in parts if p]
    return ".".join([SUITE, *(p for p in clean if p)])


def timestamp(text):
    """An ISO time (the summary's, naive local) as RFC 3339 with its offset, or None."""
    if not text:
        return None
    try:
        t = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return (t if t.tzinfo else t.astimezone()).isoformat()


def _uri(path, run_dir=None):
    p = Path(path)
    if not p.is_absolute() and run_dir:
        p = Path(run_dir) / p
    return p.resolve().as_uri()


def _drop_none(obj):
    return {k: v for k, v in obj.items() if v is not None}


def _checkout(origin, run, kernel, summary):
    git = kernel.get("git") or {}
    pkg = kernel.get("package") or {}
    ident = git.get("commit") or ((pkg.get("package"), pkg.get("version")) if pkg else kernel["release"])
    c = {"id": f"{origin}:{run}:checkout-{_h(kernel['label'], ident)}", "origin": origin,
         "comment": f"kernel {kernel['release']}" + (
             f" ({pkg.get('package')} {pkg.get('version')})" if pkg.get("package") else ""),
         "start_time": timestamp(summary.get("started")),
         "misc": _drop_none({"kernel": kernel["label"], "release": kernel["release"],
                             "image": kernel.get("image"), "tree": kernel.get("tree")})}
    url = git.get("url") or ""
    if url.startswith("https://"):
        c["git_repository_url"] = url
    if re.fullmatch(r"[0-9a-f]{40}", git.get("commit") or ""):
        c["git_commit_hash"] = git["commit"]
    for key, name in (("branch", "git_repository_branch"), ("describe", "git_commit_name")):
        if git.get(key):
            c[name] = git[key]
    series = summary.get("series")
    if series:
        c["patchset_hash"] = series["patchset_hash"]
        if series.get("message_id"):
            c["message_id"] = series["message_id"]
        c["patchset_files"] = [{"name": Path(p["file"]).name, "url": _uri(p["file"], summary.get("run_dir"))}
                               for p in series.get("patches", [])]
        c["valid"] = True  # the series applied: its module was built, or tried
        subjects = [p["subject"] for p in series.get("patches", []) if p.get("subject")]
        if subjects:
            c["comment"] += f"; {len(subjects)} patch{'es' if len(subjects) != 1 else ''}: {subjects[0]}"
        c["misc"]["patches"] = [_drop_none(dict(p)) for p in series.get("patches", [])]
        c["misc"]["source_digest"] = series.get("source_digest")
        c["misc"] = _drop_none(c["misc"])
    return _drop_none(c)


def _build(origin, run, kernel, checkout, summary):
    b = {"id": f"{origin}:{run}:build-{_h(checkout['id'])}", "origin": origin,
         "checkout_id": checkout["id"], "architecture": ARCH,
         "comment": f"kernel {kernel['release']}", "misc": {"kernel": kernel["label"]}}
    if kernel.get("config"):
        b["config_name"] = Path(kernel["config"]).name
    module = kernel.get("overlay_module") or {}
    mb = summary.get("module_build")
    if mb:
        b["comment"] = f"overlay module for {kernel['release']}"
        b["status"] = "PASS" if mb.get("valid") else "FAIL"
        duration = module.get("build_s") if module.get("build_s") is not None else mb.get("duration")
        if duration is not None:
            b["duration"] = float(duration)
        b["start_time"] = timestamp(mb.get("start_time"))
        if mb.get("log_path"):
            b["log_url"] = _uri(mb["log_path"], summary.get("run_dir"))
    elif module:
        b["comment"] = f"overlay module for {kernel['release']}"
        if module.get("build_s") is not None:
            b["duration"] = float(module["build_s"])
    if module:
        b["misc"]["overlay_module"] = _drop_none({k: module.get(k) for k in ("ident", "source", "path")})
    return _drop_none(b)


def _status(rec):
    outcome = rec.get("outcome")
    if outcome == Outcome.ERROR:
        return "MISS" if rec.get("infra_error") else "ERROR"  # the harness broke: the test did not run
    return STATUS.get(outcome, "MISS")  # no outcome: it never ran


def _test(origin, run, rec, build_id, release, accel):
    t = {"id": f"{origin}:{run}:test-{_h(rec['case'], rec['kernel'])}", "origin": origin,
         "build_id": build_id, "path": test_path(rec["case"]), "status": _status(rec),
         "comment": rec["case"],
         "duration": round(sum(float(rec.get(k) or 0) for k in ("setup", "duration", "teardown")), 3),
         "environment": {"comment": release,
                         "misc": _drop_none({"kernel": rec["kernel"], "accel": accel})},
         "misc": _drop_none({"case": rec["case"], "kernel": rec["kernel"], "nodeid": rec.get("nodeid"),
                             "outcome": rec.get("outcome"),
                             "infra_error": rec.get("infra_error"), "reruns": rec.get("reruns"),
                             "quarantine": rec.get("quarantine"), "where": rec.get("where")})}
    text = rec.get("message") or (rec.get("reason") if rec.get("outcome") != Outcome.PASSED else None)
    if text:
        t["log_excerpt"] = str(text).replace("\0", "")[:LOG_EXCERPT_MAX]
    return t


def check_origin(origin):
    if not re.fullmatch(r"[a-z0-9_]+", origin or ""):
        raise ValueError(f"KCIDB origin {origin!r}: lower-case letters, digits and '_' only")
    return origin


def document(summary, origin=ORIGIN):
    """The KCIDB v5.3 document of one summary.json (a dict)."""
    check_origin(origin)
    run = re.sub(r"[^A-Za-z0-9_.-]", "_", str(summary.get("run_id") or "run"))
    accel = (summary.get("accel") or {}).get("name")
    doc = {"version": dict(SCHEMA_VERSION), "checkouts": [], "builds": [], "tests": [],
           "issues": [], "incidents": []}
    builds = {}
    for kernel in summary.get("kernels", []):
        checkout = _checkout(origin, run, kernel, summary)
        build = _build(origin, run, kernel, checkout, summary)
        doc["checkouts"].append(checkout)
        doc["builds"].append(build)
        builds[kernel["label"]] = (build["id"], kernel["release"])
    issues = {}
    for rec in summary.get("results", []):
        if rec["kernel"] not in builds:
            continue
        build_id, release = builds[rec["kernel"]]
        test = _test(origin, run, rec, build_id, rec.get("guest_release") or release, accel)
        doc["tests"].append(test)
        reason = rec.get("reason") or rec.get("known_issue")
        if rec.get("outcome") in (Outcome.XFAILED, Outcome.XPASSED) and reason:
            issue = issues.setdefault(reason, {
                "id": f"{origin}:issue-{_h(reason)}", "version": 1, "origin": origin,
                "comment": reason[:4000], "culprit": {"code": True, "tool": False, "harness": False}})
            doc["incidents"].append({
                "id": f"{origin}:{run}:incident-{_h(issue['id'], test['id'])}", "origin": origin,
                "issue_id": issue["id"], "issue_version": issue["version"], "test_id": test["id"],
                "build_id": build_id, "present": rec["outcome"] == Outcome.XFAILED,
                "comment": f"{rec['case']} on {rec['kernel']}: {rec['outcome']}"})
    doc["issues"] = list(issues.values())
    return doc
