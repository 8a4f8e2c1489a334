"""Run results across kernels: the case x kernel table, regressions, summary.json,
report.html, table.md, and the guest's evidence in JUnit XML.

A pytest plugin (load it with `-p overlay_harness.report` or from conftest.py's
pytest_plugins, beside overlay_harness.plugin). Per-case data is attached to the reports
in the process that runs the case (as user_properties, so it survives pytest-xdist)
and gathered from pytest_runtest_logreport in the process that reports (the xdist
controller, or the only process).

- Several --kernel: every case runs on each; the end of the report is a table,
  case x kernel, the cases whose outcome differs first.
- A case that passed on the first kernel and failed, errored or xfailed on a later
  one is a regression: the run fails (exit status 1) even when every kernel on its
  own would have passed (an xfail that a known_issue marker expects).
- results/<run>/summary.json: kernels (release, image, config, package), every
  case's outcome and duration per kernel, regressions, known issues with reasons.
- results/<run>/report.html (the table as a page) and table.md (for CI summaries).
- --junitxml: a failing or erroring case gets properties (kernel, reproducer file,
  console log) and a <system-out> with the "guest: ..." sections overlay_harness.plugin
  attaches (reproducer, dmesg excerpt, console tail).

`python -m overlay_harness.report SUMMARY.json...` merges runs (one kernel each, as CI's
jobs produce them) into one table: --markdown, --html FILE, exit 1 on regressions.
"""

import argparse
import datetime
import html
import json
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

RESULTS_KEY = pytest.StashKey()

# Outcomes, and how they show in the terminal table.
SHORT = {"passed": "passed", "failed": "FAILED", "error": "ERROR", "skipped": "skipped",
         "xfailed": "xfail", "xpassed": "XPASS", None: "-"}
# Outcomes that count as "fails" on a later kernel when the first one passed.
REGRESSED = {"failed", "error", "xfailed"}
PROP_KERNEL, PROP_CASE, PROP_RELEASE, PROP_KNOWN = "kernel", "case", "guest_release", "known_issue"


# -- in the process that runs the case --------------------------------------------

def _state(config):
    try:
        from .plugin.session import STATE_KEY
    except ImportError:  # pragma: no cover - the harness plugin is always beside this one
        return None
    return config.stash.get(STATE_KEY, None)


def _kernel_of(item):
    """The Kernel an item runs on, or None for an item without the `kernel` fixture."""
    if "kernel" not in getattr(item, "fixturenames", ()):
        return None
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "kernel" in callspec.params:
        return callspec.params["kernel"]
    state = _state(item.config)
    return state.kernels[0] if state is not None and state.kernels else None


def case_key(item, kernel):
    """The node id without the kernel's part of the parameter id, so the same case on
    two kernels has one key: test_x[6.1.0-56-amd64-ext4] -> test_x[ext4]."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or "kernel" not in callspec.params:
        return item.nodeid
    ident = callspec.id
    kid = getattr(kernel, "release", str(kernel))
    if ident == kid:
        rest = ""
    elif ident.startswith(kid + "-"):
        rest = ident[len(kid) + 1:]
    elif ident.endswith("-" + kid):
        rest = ident[:-len(kid) - 1]
    else:
        rest = ident.replace(f"-{kid}-", "-", 1)
    base = item.nodeid[: -(len(ident) + 2)] if item.nodeid.endswith(f"[{ident}]") else item.nodeid
    return f"{base}[{rest}]" if rest else base


def _label(kernel):
    return getattr(kernel, "label", None) or str(kernel)


def _set_property(item, name, value):
    props = item.user_properties
    for i, (key, _) in enumerate(props):
        if key == name:
            props[i] = (name, value)
            return
    props.append((name, value))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    kernel = _kernel_of(item)
    if kernel is not None:
        # Before the report is made, so that it (and JUnit's <properties>) carries them.
        _set_property(item, PROP_KERNEL, _label(kernel))
        _set_property(item, PROP_CASE, case_key(item, kernel))
        if call.when == "call":
            try:
                from .plugin.session import CASE_KEY
                case = item.stash.get(CASE_KEY, None)
                g = case.guest if case is not None else None
            except ImportError:  # pragma: no cover
                g = None
            if g is not None and getattr(g, "release", None):
                _set_property(item, PROP_RELEASE, g.release)
            reasons = [m.kwargs.get("reason") or (m.args[1] if len(m.args) > 1 else "")
                       for m in item.iter_markers("xfail")]
            reasons = [r for r in reasons if r]
            if reasons:
                _set_property(item, PROP_KNOWN, "; ".join(reasons))
    yield


# -- in the process that reports (xdist controller) --------------------------------

def _props(report):
    return {k: v for k, v in (tuple(p) for p in getattr(report, "user_properties", ()))}


def _phase_outcome(report):
    if report.when == "setup":
        if report.failed:
            return "error"
        if report.skipped:
            return "xfailed" if hasattr(report, "wasxfail") else "skipped"
        return None
    if report.when == "call":
        if report.passed:
            return "xpassed" if hasattr(report, "wasxfail") else "passed"
        if report.failed:
            # overlay_harness.plugin marks a broken VM or harness (not the case's result) as an error.
            return "error" if _props(report).get("infra_error") else "failed"
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    return "error" if report.failed else None


def _message(report):
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2])
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return crash.message.strip()[:1000]
    text = getattr(report, "longreprtext", "") or ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:1000] if lines else ""


def _guest_sections(report):
    return [(name, text) for name, text in getattr(report, "sections", ())
            if name.startswith("guest:")]


def _section_path(sections, pattern):
    for name, _ in sections:
        m = re.search(pattern, name)
        if m:
            return m.group(1)
    return None


class Results:
    """Outcomes per (case, kernel), in the order the kernels were given."""

    def __init__(self, kernels=()):
        self.kernels = list(kernels)      # labels, first one is the baseline
        self.rows = {}                    # (case, kernel) -> record
        self.cases = []                   # in first-seen order
        self.started = time.time()

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
        outcome = _phase_outcome(report)
        if outcome is None:
            return
        if report.when == "teardown" and rec["outcome"] in ("failed", "error"):
            return  # the case's own failure says more than its teardown's
        rec["outcome"] = outcome
        if outcome in ("xfailed", "xpassed"):
            rec["reason"] = str(getattr(report, "wasxfail", "") or rec.get("known_issue", ""))
        if outcome not in ("passed", "xpassed"):
            rec["message"] = _message(report)
        sections = _guest_sections(report)
        if sections:
            rec["reproducer"] = _section_path(sections, r"also in (.+?)\)\s*$")
            rec["console_log"] = _section_path(sections, r"excerpt of (.+?)\)\s*$")

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
            if self.outcome(case, first) != "passed":
                continue
            for k in later:
                if self.outcome(case, k) in REGRESSED:
                    found.append((case, k, self.outcome(case, k)))
        return found

    def known_issues(self):
        out = []
        for case in self.cases:
            for k in self.kernels:
                rec = self.rows.get((case, k))
                if rec and (rec.get("known_issue") or rec["outcome"] in ("xfailed", "xpassed")):
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
                if rec["case"] not in res.cases:
                    res.cases.append(rec["case"])
                res.rows[(rec["case"], rec["kernel"])] = rec
        return res


# -- renderings --------------------------------------------------------------------

def _cell(res, case, kernel, regressions):
    text = SHORT.get(res.outcome(case, kernel), "?")
    if (case, kernel) in regressions:
        text += " (regression)"
    return text


def text_table(res):
    regs = {(c, k) for c, k, _ in res.regressions()}
    header = ["case", *res.kernels]
    rows = [[c, *(_cell(res, c, k, regs) for k in res.kernels)] for c in res.ordered_cases()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    ndiff = sum(1 for c in res.cases if res.differs(c))

    def line(cells):
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    for i, r in enumerate(rows):
        if i == ndiff and ndiff:
            out.append(line(["· same on every kernel:"] + [""] * len(res.kernels)))
        out.append(line(r))
    return out, ndiff


def markdown_table(res, title="Kernel × case"):
    regs = {(c, k) for c, k, _ in res.regressions()}
    icons = {"passed": "✅", "failed": "❌", "error": "💥", "skipped": "⏭️", "xfailed": "🟡",
             "xpassed": "⚠️", None: "—"}
    out = [f"### {title}", ""]
    ndiff = sum(1 for c in res.cases if res.differs(c))
    out.append(f"{len(res.cases)} cases on {len(res.kernels)} kernels; {ndiff} differ; "
               f"{len(regs)} regressions.")
    out.append("")
    out.append("| case | " + " | ".join(f"`{k}`" for k in res.kernels) + " |")
    out.append("|---|" + "---|" * len(res.kernels))
    for c in res.ordered_cases():
        cells = []
        for k in res.kernels:
            o = res.outcome(c, k)
            cells.append(f"{icons.get(o, '?')} {SHORT.get(o, '?')}"
                         + (" **regression**" if (c, k) in regs else ""))
        mark = " (differs)" if res.differs(c) else ""
        out.append(f"| `{c}`{mark} | " + " | ".join(cells) + " |")
    issues = res.known_issues()
    if issues:
        out += ["", "Known issues:", ""]
        out += [f"- `{i['case']}` on `{i['kernel']}` ({i['outcome']}): {i['reason']}" for i in issues]
    return "\n".join(out) + "\n"


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:14px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}
td.case{font-family:monospace}
tr.differs td.case{font-weight:bold}
.passed{background:#d9f2d9}.failed,.error{background:#f7c6c6}.skipped{background:#eee;color:#666}
.xfailed{background:#fbeec2}.xpassed{background:#fbd9a8}.none{color:#999}
.regression{outline:3px solid #c00;outline-offset:-3px;font-weight:bold}
code{font-size:13px}
"""


def html_page(res, meta):
    e = html.escape
    regs = res.regressions()
    regset = {(c, k) for c, k, _ in regs}
    p = ["<!doctype html><html><head><meta charset='utf-8'>",
         f"<title>overlay-harness {e(str(meta.get('run_id', '')))}</title><style>{CSS}</style>",
         "</head><body>",
         f"<h1>overlay-harness: {e(str(meta.get('run_id', 'results')))}</h1>"]
    status = meta.get("exit_status")
    p.append(f"<p>{len(res.cases)} cases × {len(res.kernels)} kernels; "
             f"{sum(1 for c in res.cases if res.differs(c))} differ between kernels; "
             f"<b>{len(regs)} regression{'s' if len(regs) != 1 else ''}</b>"
             + (f"; pytest exit status {e(str(status))}" if status is not None else "") + ".</p>")
    if meta.get("kernels"):
        p.append("<h2>Kernels</h2><table><tr><th>#</th><th>release</th><th>image</th>"
                 "<th>config</th><th>package</th><th>config lacks</th></tr>")
        for i, k in enumerate(meta["kernels"]):
            pkg = k.get("package") or {}
            lacks = "; ".join(f"{f}: {', '.join(o)}" for f, o in (k.get("missing_options") or {}).items())
            if not k.get("config_known", True):
                lacks = "(no config to check)"
            p.append(f"<tr><td>{i + 1}{' (baseline)' if i == 0 else ''}</td><td><code>{e(k['label'])}"
                     f"</code></td><td><code>{e(str(k.get('image') or ''))}</code></td>"
                     f"<td><code>{e(str(k.get('config') or 'unknown'))}</code></td>"
                     f"<td>{e(' '.join(str(x) for x in (pkg.get('package'), pkg.get('version')) if x))}</td>"
                     f"<td>{e(lacks) or '—'}</td></tr>")
        p.append("</table>")
    p.append("<h2>Case × kernel</h2><p>Cases whose outcome differs between kernels come first. "
             "A red frame marks a regression: passed on the first kernel, fails on this one.</p>")
    p.append("<table><tr><th>case</th>" + "".join(f"<th><code>{e(k)}</code></th>" for k in res.kernels)
             + "</tr>")
    for c in res.ordered_cases():
        cls = " class='differs'" if res.differs(c) else ""
        cells = []
        for k in res.kernels:
            rec = res.rows.get((c, k)) or {}
            o = rec.get("outcome")
            klass = (o or "none") + (" regression" if (c, k) in regset else "")
            tip = rec.get("message") or rec.get("reason") or ""
            dur = f" {rec['duration']:.1f}s" if rec.get("duration") else ""
            extra = ""
            if rec.get("reproducer"):
                extra += f"<br><a href='{e(_rel(rec['reproducer'], meta.get('run_dir')))}'>reproducer</a>"
            cells.append(f"<td class='{klass}' title='{e(tip)}'>{e(SHORT.get(o, '?'))}{dur}{extra}</td>")
        p.append(f"<tr{cls}><td class='case'>{e(c)}</td>{''.join(cells)}</tr>")
    p.append("</table>")
    if regs:
        p.append("<h2>Regressions</h2><ul>")
        p += [f"<li><code>{e(c)}</code>: passed on <code>{e(res.kernels[0])}</code>, {e(o)} on "
              f"<code>{e(k)}</code>: {e(_short(res.rows[(c, k)].get('message')))}</li>" for c, k, o in regs]
        p.append("</ul>")
    issues = res.known_issues()
    if issues:
        p.append("<h2>Known issues</h2><ul>")
        p += [f"<li><code>{e(i['case'])}</code> on <code>{e(i['kernel'])}</code> ({e(i['outcome'])}): "
              f"{e(i['reason'])}</li>" for i in issues]
        p.append("</ul>")
    p.append("</body></html>\n")
    return "\n".join(p)


def _short(text, limit=240):
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _rel(path, run_dir):
    if not run_dir:
        return path
    try:
        return str(Path(path).relative_to(run_dir))
    except ValueError:
        return path


# -- the plugin's reporting side ---------------------------------------------------

def _kernel_meta(kernel):
    from .host import kernel as kernel_mod
    meta = {"label": _label(kernel), "release": getattr(kernel, "release", str(kernel))}
    for name in ("image", "run_arg", "tree", "config_path", "modules_dir"):
        value = getattr(kernel, name, None)
        meta["config" if name == "config_path" else name] = str(value) if value is not None else None
    meta["package"] = getattr(kernel, "package", None)
    try:
        meta["config_known"] = kernel_mod.config_known(kernel)
        meta["missing_options"] = kernel_mod.missing_options(kernel)
    except (OSError, AttributeError, KeyError):
        meta["missing_options"] = None
    return meta


class ReportPlugin:
    """The reporting side, one per config (registered by pytest_configure)."""

    def __init__(self, config):
        self.config = config
        state = _state(config)
        self.results = Results([_label(k) for k in state.kernels] if state is not None else [])
        self.written = None

    @pytest.hookimpl(tryfirst=True)  # before junitxml closes the test case
    def pytest_runtest_logreport(self, report):
        self.results.add(report)
        _junit_evidence(self.config, report)

    def pytest_sessionfinish(self, session, exitstatus):
        res = self.results
        if not res.rows:
            return
        regs = res.regressions()
        if regs and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if regs and tr is not None:
            tr.stats.setdefault("regressed", []).extend(regs)
        self.written, _ = _write_outputs(session, res, session.exitstatus)

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        res = self.results
        if not res.rows:
            return
        tr = terminalreporter
        if len(res.kernels) > 1:
            lines, ndiff = text_table(res)
            tr.write_sep("=", f"case × kernel ({ndiff} of {len(res.cases)} cases differ)")
            for line in lines:
                tr.write_line(line)
        regs = res.regressions()
        if regs:
            tr.write_sep("=", f"{len(regs)} regression{'s' if len(regs) != 1 else ''}", red=True, bold=True)
            for c, k, o in regs:
                tr.write_line(f"REGRESSION {c}: passed on {res.kernels[0]}, {o} on {k}", red=True)
        if self.written:
            tr.write_line(f"overlay-harness results: {self.written}/summary.json, "
                          f"{self.written}/report.html")


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        return  # an xdist worker: only makereport runs there; the controller reports
    config.pluginmanager.register(ReportPlugin(config), "overlay-harness-report")


def _junit_evidence(config, report):
    """Properties and <system-out> for a failing or erroring case in --junitxml."""
    if not report.failed:
        return
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover
        return
    xml = config.stash.get(xml_key, None)
    sections = _guest_sections(report)
    if xml is None or not sections:
        return
    reporter = xml.node_reporter(report)
    for name, pattern in (("reproducer", r"also in (.+?)\)\s*$"),
                          ("console_log", r"excerpt of (.+?)\)\s*$")):
        value = _section_path(sections, pattern)
        if value:
            reporter.add_property(name, value)
    text = "\n".join(f"----- {name} ({report.when}) -----\n{body.rstrip()}\n" for name, body in sections)
    node = ET.Element("system-out")
    node.text = text
    reporter.append(node)


def _write_outputs(session, res, exitstatus):
    state = _state(session.config)
    run_dir = Path(state.run_dir) if state is not None else (
        Path(session.config.rootpath) / "results" / time.strftime("run-%Y%m%d-%H%M%S"))
    kernels = [_kernel_meta(k) for k in state.kernels] if state is not None else [
        {"label": k, "release": k} for k in res.kernels]
    from .host import kernel as kernel_mod
    try:
        accel = state.accel if state is not None else None
    except pytest.UsageError:
        accel = None
    summary = {
        "run_id": getattr(state, "run_id", run_dir.name),
        "run_dir": str(run_dir),
        "started": datetime.datetime.fromtimestamp(res.started).isoformat(timespec="seconds"),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "exit_status": int(exitstatus),
        "accel": {"name": accel.name, "reason": accel.reason} if accel is not None else None,
        "config_fragment": str(kernel_mod.FRAGMENT),
        "kernels": kernels,
        "results": res.records(),
        "regressions": [{"case": c, "kernel": k, "outcome": o, "baseline": res.kernels[0]}
                        for c, k, o in res.regressions()],
        "known_issues": res.known_issues(),
        "totals": res.totals(),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (run_dir / "report.html").write_text(html_page(res, summary))
    (run_dir / "table.md").write_text(markdown_table(res))
    return run_dir, summary


def by_case_markdown(res):
    """One row per case function, its parameter variants folded into the cells
    ("passed (ext4, xfs); xfail (ext4-nojournal)"), then the known issues' reasons."""
    groups = {}
    for case in res.cases:
        base, _, param = case.partition("[")
        groups.setdefault(base, []).append((param.rstrip("]"), case))
    out = ["| case | " + " | ".join(f"`{k}`" for k in res.kernels) + " |",
           "|---|" + "---|" * len(res.kernels)]
    # by module (stable: within a module, the order the cases first ran in), variants sorted
    for base, items in sorted(groups.items(), key=lambda kv: kv[0].split("::")[0]):
        items = sorted(items)
        cells = []
        for k in res.kernels:
            by_outcome = {}
            for param, case in items:
                by_outcome.setdefault(SHORT.get(res.outcome(case, k), "?"), []).append(param)
            cells.append("; ".join(f"{o} ({', '.join(p for p in ps)})" if any(ps) else o
                                   for o, ps in by_outcome.items()))
        out.append(f"| `{base.rsplit('/', 1)[-1]}` | " + " | ".join(cells) + " |")
    reasons = {}
    for issue in res.known_issues():
        reasons.setdefault(issue["reason"], []).append(issue["case"].rsplit("/", 1)[-1])
    if reasons:
        out += ["", "Known issues (strict xfails; the case keeps the documented assertion):", ""]
        out += [f"- {', '.join(f'`{c}`' for c in sorted(set(cases)))}: {reason}"
                for reason, cases in reasons.items()]
    return "\n".join(out) + "\n"


# -- command line: merge summaries ---------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m overlay_harness.report",
        description="Merge summary.json files (in kernel order: the first is the baseline) "
                    "into one case x kernel table.")
    ap.add_argument("summaries", nargs="+", type=Path)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table (CI job summary)")
    ap.add_argument("--by-case", action="store_true",
                    help="print a Markdown table with one row per case function (as in the README)")
    ap.add_argument("--html", type=Path, help="write an HTML page here")
    args = ap.parse_args(argv)
    loaded = [json.loads(p.read_text()) for p in args.summaries]
    res = Results.from_summaries(loaded)
    if args.by_case:
        print(by_case_markdown(res), end="")
    elif args.markdown:
        print(markdown_table(res), end="")
    else:
        lines, _ = text_table(res)
        print("\n".join(lines))
    if args.html:
        meta = {"run_id": "merged: " + ", ".join(s.get("run_id", "?") for s in loaded),
                "kernels": [k for s in loaded for k in s["kernels"]]}
        args.html.write_text(html_page(res, meta))
    regs = res.regressions()
    for c, k, o in regs:
        print(f"REGRESSION {c}: passed on {res.kernels[0]}, {o} on {k}", file=sys.stderr)
    return 1 if regs else 0


if __name__ == "__main__":
    sys.exit(main())
