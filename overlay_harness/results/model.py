"""The results of a run as data: an Outcome per (case, kernel), in the order the kernels
were given; regressions against the first kernel; known issues; totals. No pytest:
the recorder feeds it reports (duck-typed: when, outcome, user_properties), the
command line feeds it summary.json files."""

import enum
import time


class Outcome(enum.StrEnum):
    """A case's outcome on one kernel (summary.json holds the values)."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"        # the VM or the harness broke (never blamed on the case)
    SKIPPED = "skipped"
    XFAILED = "xfailed"    # a known issue, as its marker expects
    XPASSED = "xpassed"
    QUARANTINED = "quarantined"  # failed, but a quarantine entry in force parks it (not counted)


# Outcomes that count as "fails" on a later kernel when the first one passed.
REGRESSED = {Outcome.FAILED, Outcome.ERROR, Outcome.XFAILED}
# ... and as "works" (the documented behaviour held) against a baseline.
WORKS = {Outcome.PASSED, Outcome.XPASSED}


class Change(enum.StrEnum):
    """A case's outcome in this run against the same case in a baseline run (the same
    source without the patch series under test, on the same kernel)."""

    REGRESSED = "regressed"  # passed there, failed, errored or xfailed here
    FIXED = "fixed"          # failed, errored or xfailed there, passed (or xpassed) here
    CHANGED = "changed"      # another difference (skipped on one side, ...)
    UNCHANGED = "unchanged"
    NEW = "new"              # not run in the baseline


def change(before, after):
    """The Change from outcome `before` (None: not in the baseline) to `after`."""
    if before is None:
        return Change.NEW
    before, after = Outcome(before), Outcome(after)
    if before == after:
        return Change.UNCHANGED
    if before in WORKS and after in REGRESSED:
        return Change.REGRESSED
    if before in REGRESSED and after in WORKS:
        return Change.FIXED
    return Change.CHANGED

# Report properties (user_properties) the results read: set by this layer's recorder
# (case, guest release, known issue) and by the plugin (the kernel, and the evidence).
PROP_KERNEL, PROP_CASE, PROP_RELEASE, PROP_KNOWN = "kernel", "case", "guest_release", "known_issue"
PROP_INFRA, PROP_REPRODUCER, PROP_CONSOLE = "infra_error", "reproducer", "console_log"
PROP_KERNEL_LOG, PROP_CONSOLE_EXCERPT = "kernel_log", "console_excerpt"
EVIDENCE = (PROP_INFRA, PROP_REPRODUCER, PROP_CONSOLE, PROP_KERNEL_LOG, PROP_CONSOLE_EXCERPT)
PROP_QUARANTINE = "quarantine"
PROP_BOOT = "vm_boot_s"  # the VM boot a case's set-up waited for (plugin/timing.py's BOOT_PROP)


def _props(report):
    return {k: v for k, v in (tuple(p) for p in getattr(report, "user_properties", ()))}


def _phase_outcome(report):
    """The Outcome a phase's report decides, or None (a passing set-up or teardown)."""
    if report.when == "setup":
        if report.failed:
            return Outcome.ERROR
        if report.skipped:
            return Outcome.XFAILED if hasattr(report, "wasxfail") else Outcome.SKIPPED
        return None
    if report.when == "call":
        if report.passed:
            return Outcome.XPASSED if hasattr(report, "wasxfail") else Outcome.PASSED
        if report.failed:
            # a broken VM or harness (the infra_error property), not the case's result
            return Outcome.ERROR if _props(report).get(PROP_INFRA) else Outcome.FAILED
        return Outcome.XFAILED if hasattr(report, "wasxfail") else Outcome.SKIPPED
    return Outcome.ERROR if report.failed else None


def report_message(report):
    """What failed: a skip's reason, the exception's message (an assertion with its
    `where` lines), or a failure given as text (a splat, a leak) whole."""
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2])
    crash = _crash(report)
    if crash is not None and getattr(crash, "message", None):
        return crash.message.strip()[:1000]
    if isinstance(getattr(report, "longrepr", None), str):
        return report.longrepr.strip()[:4000]
    text = getattr(report, "longreprtext", "") or ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:1000] if lines else ""


def _crash(report):
    return getattr(getattr(report, "longrepr", None), "reprcrash", None)


def github_annotation(level, path, line, title, message):
    """A GitHub Actions workflow command that annotates `path`:`line` with `message`
    (`::error file=...,line=...,title=...::...`), its values escaped as the runner expects."""
    def data(text):
        return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def prop(text):
        return data(text).replace(":", "%3A").replace(",", "%2C")
    where = f"file={prop(path)}" + (f",line={int(line)}" if line else "")
    return f"::{level} {where},title={prop(title)}::{data(message)}"


class Results:
    """Outcomes per (case, kernel), in the order the kernels were given."""

    def __init__(self, kernels=()):
        self.kernels = list(kernels)      # labels, first one is the baseline
        self.rows = {}                    # (case, kernel) -> record
        self.cases = []                   # in first-seen order
        self.started = time.time()
        self.baseline = None              # {(case, kernel): Outcome} of a baseline run, or None

    def add(self, report):
        props = _props(report)
        kernel, case = props.get(PROP_KERNEL), props.get(PROP_CASE)
        if kernel is None or case is None:
            return
        if kernel not in self.kernels:
            self.kernels.append(kernel)
        if case not in self.cases:
            self.cases.append(case)
        rec = self.rows.setdefault((case, kernel), {
            "case": case, "kernel": kernel, "nodeid": report.nodeid, "outcome": None,
            "duration": 0.0, "setup": 0.0, "teardown": 0.0})
        rec[report.when if report.when != "call" else "duration"] = round(report.duration, 3)
        if props.get(PROP_RELEASE):
            rec["guest_release"] = props[PROP_RELEASE]
        if props.get(PROP_KNOWN):
            rec["known_issue"] = props[PROP_KNOWN]
        if props.get(PROP_BOOT):  # --shard leaves it out of the case's own time
            rec["boot"] = props[PROP_BOOT]
        if report.outcome == "rerun":  # pytest-rerunfailures: a harness error, run again
            rec["reruns"] = rec.get("reruns", 0) + 1
            return
        outcome = _phase_outcome(report)
        if outcome is Outcome.XFAILED and props.get(PROP_QUARANTINE):
            outcome = Outcome.QUARANTINED
            rec["quarantine"] = props[PROP_QUARANTINE]
        if outcome is None:
            return
        if report.when == "teardown" and rec["outcome"] in (Outcome.FAILED, Outcome.ERROR):
            return  # the case's own failure says more than its teardown's
        rec["outcome"] = outcome
        if outcome in (Outcome.XFAILED, Outcome.XPASSED, Outcome.QUARANTINED):
            rec["reason"] = str(getattr(report, "wasxfail", "") or rec.get("known_issue", ""))
        if outcome not in (Outcome.PASSED, Outcome.XPASSED):
            rec["message"] = report_message(report)
            crash = _crash(report)
            if crash is not None and getattr(crash, "lineno", None):
                rec["where"] = f"{crash.path}:{crash.lineno}"
        for name in EVIDENCE:
            if props.get(name):
                rec[name] = props[name]

    def outcome(self, case, kernel):
        rec = self.rows.get((case, kernel))
        return rec["outcome"] if rec else None

    def differs(self, case):
        return len({self.outcome(case, k) for k in self.kernels}) > 1

    def ordered_cases(self):
        """Cases whose outcome differs between kernels first, then the rest; each group
        in the order the cases ran."""
        return ([c for c in self.cases if self.differs(c)]
                + [c for c in self.cases if not self.differs(c)])

    def regressions(self):
        """(case, kernel, outcome): passed on the first kernel, failed/errored/xfailed
        on a later one."""
        if len(self.kernels) < 2:
            return []
        first, later = self.kernels[0], self.kernels[1:]
        found = []
        for case in self.cases:
            if self.outcome(case, first) != Outcome.PASSED:
                continue
            for k in later:
                if self.outcome(case, k) in REGRESSED:
                    found.append((case, k, self.outcome(case, k)))
        return found

    def against_baseline(self):
        """Every (case, kernel) of this run against the baseline: [{case, kernel, baseline,
        outcome, change}] in the order the cases ran ([] without a baseline)."""
        if self.baseline is None:
            return []
        out = []
        for case in self.cases:
            for k in self.kernels:
                rec = self.rows.get((case, k))
                if rec and rec["outcome"]:
                    before = self.baseline.get((case, k))
                    out.append({"case": case, "kernel": k, "baseline": before,
                                "outcome": rec["outcome"], "change": change(before, rec["outcome"])})
        return out

    def baseline_regressions(self):
        return [c for c in self.against_baseline() if c["change"] is Change.REGRESSED]

    def known_issues(self):
        out = []
        for case in self.cases:
            for k in self.kernels:
                rec = self.rows.get((case, k))
                if rec and (rec.get("known_issue") or rec["outcome"] in (Outcome.XFAILED, Outcome.XPASSED)):
                    out.append({"case": case, "kernel": k, "outcome": rec["outcome"],
                                "reason": rec.get("reason") or rec.get("known_issue", "")})
        return out

    def totals(self):
        tot = {}
        for (_, k), rec in self.rows.items():
            key = rec["outcome"] or "not run"
            tot.setdefault(k, {}).setdefault(key, 0)
            tot[k][key] += 1
        return tot

    def records(self):
        return [self.rows[(c, k)] for c in self.cases for k in self.kernels if (c, k) in self.rows]

    @classmethod
    def from_summaries(cls, summaries):
        res = cls()
        for s in summaries:
            for k in s["kernels"]:
                if k["label"] not in res.kernels:
                    res.kernels.append(k["label"])
            for rec in s["results"]:
                rec = dict(rec, outcome=Outcome(rec["outcome"]) if rec.get("outcome") else None)
                if rec["case"] not in res.cases:
                    res.cases.append(rec["case"])
                res.rows[(rec["case"], rec["kernel"])] = rec
        return res
