"""The results layer's pytest side: every case's report is gathered into Results in the
process that reports (the xdist controller, or the only process), and at the end
written as results/<run>/summary.json, report.html and table.md; a failing case's
evidence goes into --junitxml; regressions fail the run.

Load it with `-p overlay_harness.results.recorder` (conftest.py does). Per-case data
travels as report properties (user_properties survive pytest-xdist): the case key is
set here, the kernel by plugin/session.py; infra_error, reproducer, console_log,
kernel_log and console_excerpt come from plugin/evidence.py, quarantine from
plugin/known_issues.py.

- Several --kernel: every case runs on each; the end of the report is a table,
  case x kernel, the cases whose outcome differs first.
- A case that passed on the first kernel and failed, errored or xfailed on a later
  one is a regression: the run fails (exit status 1) even when every kernel on its
  own would have passed (an xfail that a known_issue marker expects).
"""

import datetime
import json
import os
import subprocess
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ..host import kernel as kernel_mod
from ..plugin.series import series_record
from ..plugin.session import CASE_KEY, STATE_KEY, kernel_of, set_property
from ..plugin.timing import timing_of
from . import coverage as coverage_mod
from . import kcidb
from .model import (
    PROP_CASE,
    PROP_CONSOLE,
    PROP_INFRA,
    PROP_KERNEL,
    PROP_KNOWN,
    PROP_QUARANTINE,
    PROP_RELEASE,
    PROP_REPRODUCER,
    Change,
    Outcome,
    Results,
    change,
    github_annotation,
    report_message,
)
from .render import check_result, html_page, markdown_table, regression_line, text_table

# --shard and what a run selected (summary.json's "selection", "shard"): loaded with this plugin.
pytest_plugins = ["overlay_harness.results.shard"]


def _state(config):
    """The plugin's HarnessState, or None where only this plugin is loaded."""
    return config.stash.get(STATE_KEY, None)


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    kernel = kernel_of(item)
    if kernel is not None:
        # Before the report is made, so that it (and JUnit's <properties>) carries them;
        # the kernel's own property (PROP_KERNEL) is the plugin's.
        set_property(item, PROP_CASE, case_key(item, kernel))
        if call.when == "call":
            case = item.stash.get(CASE_KEY, None)
            g = case.guest if case is not None else None
            if g is not None and getattr(g, "release", None):
                set_property(item, PROP_RELEASE, g.release)
            reasons = [m.kwargs.get("reason") or (m.args[1] if len(m.args) > 1 else "")
                       for m in item.iter_markers("xfail")]
            reasons = [r for r in reasons if r]
            if reasons:
                set_property(item, PROP_KNOWN, "; ".join(reasons))
    yield


def _kernel_meta(kernel):
    meta = {"label": kernel.label, "release": getattr(kernel, "release", str(kernel))}
    for name in ("image", "run_arg", "tree", "config_path", "modules_dir"):
        value = getattr(kernel, name, None)
        meta["config" if name == "config_path" else name] = str(value) if value is not None else None
    meta["package"] = getattr(kernel, "package", None)
    meta["git"] = _git_of(getattr(kernel, "tree", None)) or _git_json(getattr(kernel, "image", None))
    module = getattr(kernel, "overlay_module", None)
    meta["overlay_module"] = None if module is None else {
        "path": str(module.path), "ident": module.ident, "source": module.source,
        "expected_taint": module.expected_taint, "build_s": module.build_s}
    try:
        meta["config_known"] = kernel_mod.config_known(kernel)
        meta["missing_options"] = kernel_mod.missing_options(kernel)
    except (OSError, AttributeError, KeyError):
        meta["missing_options"] = None
    return meta


def _git_of(tree):
    """A kernel build tree's git checkout (KCIDB's checkout): url, branch, commit, describe."""
    if tree is None or not (Path(tree) / ".git").exists():
        return None
    found = {}
    for key, args in (("commit", ["rev-parse", "HEAD"]), ("branch", ["rev-parse", "--abbrev-ref", "HEAD"]),
                      ("url", ["remote", "get-url", "origin"]), ("describe", ["describe", "--always"])):
        try:
            p = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True,
                               timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        value = p.stdout.strip()
        found[key] = value if p.returncode == 0 and value and value != "HEAD" else None
    if found.get("url"):  # never a token that a remote's URL carries
        u = urllib.parse.urlsplit(found["url"])
        if u.password or u.username:
            host = (u.hostname or "") + (f":{u.port}" if u.port else "")
            found["url"] = urllib.parse.urlunsplit(u._replace(netloc=host))
    return found if found.get("commit") else None


def _git_json(image):
    """Where a kernel image built elsewhere came from: git.json beside it (upstream.yml's
    build job writes one: url, branch, commit, describe), or None."""
    path = Path(image).with_name("git.json") if image else None
    try:
        data = json.loads(path.read_text()) if path is not None and path.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return {k: data.get(k) for k in ("url", "branch", "commit", "describe")}


class ReportPlugin:
    """The reporting side, one per config (registered by pytest_configure)."""

    def __init__(self, config):
        self.config = config
        state = _state(config)
        # The kernels' order (the first is the baseline) where several were given: given
        # kernels make the plugin active at start-up, so they are resolved by now.
        active = state is not None and state.active
        self.results = Results([k.label for k in state.kernels] if active else [])
        self.written = None
        self.check = None      # the patchwork-style check result of a run against a baseline
        self.annotations = []  # GitHub Actions: a line per failed or quarantined case
        self.coverage = coverage_mod.Coverage()  # --coverage: the overlay functions each case reached

    @pytest.hookimpl(tryfirst=True)  # before junitxml closes the test case
    def pytest_runtest_logreport(self, report):
        self.results.add(report)
        self.coverage.add(report)
        _junit_evidence(self.config, report)
        self._junit_baseline(report)
        self._annotate(report)

    def _baseline(self):
        """The baseline's outcomes into Results, once the series plugin has them."""
        state = _state(self.config)
        if self.results.baseline is None and getattr(state, "baseline", None) is not None:
            self.results.baseline = {key: Outcome(o) for key, o in state.baseline.items()}
        return self.results.baseline

    def _junit_baseline(self, report):
        """--junitxml under a baseline: each case's baseline outcome and its change."""
        props = dict(report.user_properties)
        decided = report.when == "call" or (report.when == "setup" and not report.passed)
        if not decided or PROP_CASE not in props or self._baseline() is None:
            return
        rec = self.results.rows.get((props[PROP_CASE], props.get(PROP_KERNEL)))
        xml = _junit_xml(self.config)
        if xml is None or not rec or not rec["outcome"]:
            return
        before = self.results.baseline.get((props[PROP_CASE], props.get(PROP_KERNEL)))
        reporter = xml.node_reporter(report)
        reporter.add_property("baseline_outcome", str(before))
        reporter.add_property("against_baseline", str(change(before, rec["outcome"])))

    def _annotate(self, report):
        """Under GitHub Actions (GITHUB_ACTIONS=true), a harness case's failure, error or
        quarantine becomes an annotation on its file and line (printed at the end)."""
        props = dict(report.user_properties)
        if os.environ.get("GITHUB_ACTIONS") != "true" or PROP_CASE not in props:
            return
        if report.failed:
            level, what = "error", ("harness error" if props.get(PROP_INFRA) else "failed")
        elif props.get(PROP_QUARANTINE):
            level, what = "warning", "quarantined"
        else:
            return
        path, line, _ = report.location
        message = report_message(report) or report.outcome
        self.annotations.append(github_annotation(
            level, path, None if line is None else line + 1,
            f"{what} ({report.when}): {report.nodeid} on {props.get(PROP_KERNEL)}", message))

    def pytest_sessionfinish(self, session, exitstatus):
        res = self.results
        state = _state(self.config)
        if not res.rows and not getattr(state, "boot_failure", None):
            return
        regs = res.regressions()
        if self._baseline() is not None:
            session.exitstatus = exit_against_baseline(session.exitstatus, regs, res.baseline_regressions())
        if regs and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if regs and tr is not None:
            tr.stats.setdefault("regressed", []).extend(regs)
        self.written, summary = _write_outputs(session, res, session.exitstatus)
        self.check = summary.get("check")
        if self.coverage:
            (self.written / "coverage.json").write_text(
                json.dumps(self.coverage.to_json(), indent=1) + "\n")

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
                tr.write_line(regression_line(res, c, k, o), red=True)
        if self.coverage:
            tr.write_sep("=", "overlay function coverage")
            for line in coverage_mod.summary_lines(self.coverage, _source_maps(_state(config))):
                tr.write_line(line)
        if res.baseline is not None:
            _baseline_summary(tr, res, self.check)
        if self.written:
            tr.write_line(f"overlay-harness results: {self.written}/summary.json, "
                          f"{self.written}/report.html")
        for line in self.annotations:
            tr.write_line(line)


def exit_against_baseline(status, kernel_regressions, baseline_regressions):
    """The exit status of a run against a baseline: its regressions (and the kernels')
    decide, not the failures both runs share (the known issues, breakage the series did
    not make); an interrupted run or a usage or internal error keeps its status."""
    if status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return status
    failing = bool(kernel_regressions or baseline_regressions)
    return pytest.ExitCode.TESTS_FAILED if failing else pytest.ExitCode.OK


def _baseline_summary(tr, res, check):
    """The terminal's account of a run against its baseline."""
    compared = res.against_baseline()
    by = {c: [x for x in compared if x["change"] is c] for c in Change}
    regs = by[Change.REGRESSED]
    tr.write_sep("=", f"{_n(len(regs), 'regression')} against the baseline",
                 red=bool(regs), green=not regs, bold=True)
    for x in regs + by[Change.FIXED] + by[Change.CHANGED] + by[Change.NEW]:
        tr.write_line(f"{x['change']}: {x['case']} on {x['kernel']}: baseline {x['baseline'] or 'not run'}, "
                      f"now {x['outcome']}", red=x["change"] is Change.REGRESSED)
    tr.write_line(f"against the baseline: {_n(len(regs), 'regression')}, {len(by[Change.FIXED])} fixed, "
                  f"{len(by[Change.CHANGED])} changed, {len(by[Change.NEW])} new, "
                  f"{len(by[Change.UNCHANGED])} unchanged")
    if check:
        tr.write_line(f"check: {check['state']} {check['context']} \"{check['description']}\" "
                      f"{check['target_url']}")


def _n(count, word):
    return f"{count} {word}{'s' if count != 1 else ''}"


class _JunitBaseline:
    """--junitxml's suite properties under a baseline (before junitxml writes its file)."""

    def __init__(self, report_plugin):
        self.report = report_plugin

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session):
        xml = _junit_xml(session.config)
        if xml is None or self.report._baseline() is None:
            return
        compared = self.report.results.against_baseline()
        for c in (Change.REGRESSED, Change.FIXED, Change.UNCHANGED):
            name = "regressions_against_baseline" if c is Change.REGRESSED else f"{c}_against_baseline"
            xml.add_global_property(name, str(sum(1 for x in compared if x["change"] is c)))


def _junit_xml(config):
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover
        return None
    return config.stash.get(xml_key, None)


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        return  # an xdist worker: only makereport runs there; the controller reports
    plugin = ReportPlugin(config)
    config.pluginmanager.register(plugin, "overlay-harness-report")
    config.pluginmanager.register(_JunitBaseline(plugin), "overlay-harness-junit-baseline")


def _source_maps(state):
    """{kernel label: {function: source file}} for the kernels whose source is at hand."""
    if state is None:
        return {}
    src = state.config.getoption("overlay_src")
    return {k.label: coverage_mod.source_map(k.release, src) for k in state.kernels}


def _junit_evidence(config, report):
    """Properties and <system-out> for a failing or erroring case in --junitxml."""
    if not report.failed:
        return
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover
        return
    xml = config.stash.get(xml_key, None)
    sections = [(name, text) for name, text in report.sections if name.startswith("guest:")]
    if xml is None or not sections:
        return
    reporter = xml.node_reporter(report)
    props = dict(report.user_properties)
    for name in (PROP_REPRODUCER, PROP_CONSOLE):
        if props.get(name):
            reporter.add_property(name, props[name])
    text = "\n".join(f"----- {name} ({report.when}) -----\n{body.rstrip()}\n" for name, body in sections)
    node = ET.Element("system-out")
    node.text = text
    reporter.append(node)


def _selection_meta(config):
    """summary.json's "harness" (version), "selection" (what was collected) and "shard"
    (--shard I/N: its part), which `report merge` checks the parts of a run by."""
    from .shard import harness_version, selection_of  # shard.py imports this module

    info = selection_of(config) or {}
    shard = info.get("shard")
    return {"harness": harness_version(), "selection": info.get("selection"),
            "shard": dict(shard) if shard else None}


def _write_outputs(session, res, exitstatus):
    state = _state(session.config)
    run_dir = Path(state.run_dir) if state is not None else (
        Path(session.config.rootpath) / "results" / time.strftime("run-%Y%m%d-%H%M%S"))
    kernels = [_kernel_meta(k) for k in state.kernels] if state is not None else [
        {"label": k, "release": k} for k in res.kernels]
    accel = state.known_accel if state is not None else None  # never a probe boot at the end
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
        "boot_failure": getattr(state, "boot_failure", None),  # the run stopped: the VM did not boot
    }
    summary.update(_selection_meta(session.config))
    if state is not None:
        series, build = series_record(state)
        if series is not None:
            summary["series"], summary["module_build"] = series, build
    if res.baseline is not None:
        summary.update(_baseline_fields(res, state))
        summary["check"] = check_result(summary, run_dir / "report.html")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (run_dir / "kcidb.json").write_text(json.dumps(kcidb.document(summary), indent=1) + "\n")
    if summary.get("check"):
        (run_dir / "check.json").write_text(json.dumps(summary["check"], indent=2) + "\n")
    timing = timing_of(state) if state is not None and state.boot_times else None
    (run_dir / "report.html").write_text(html_page(res, summary, timing))
    (run_dir / "table.md").write_text(markdown_table(res))
    return run_dir, summary


def _baseline_fields(res, state):
    """summary.json's account of a run against its baseline: where the baseline came from,
    and every case's change (regressions, fixed, changed and new by name)."""
    compared = res.against_baseline()
    listed = {c: [{k: x[k] for k in ("case", "kernel", "baseline", "outcome")}
                  for x in compared if x["change"] is c] for c in Change}
    return {
        "baseline": getattr(state, "baseline_meta", None),
        "against_baseline": {
            "regressions": listed[Change.REGRESSED], "fixed": listed[Change.FIXED],
            "changed": listed[Change.CHANGED], "new": listed[Change.NEW],
            "unchanged": len(listed[Change.UNCHANGED]),
            "changes": {f"{x['case']}@{x['kernel']}": str(x["change"]) for x in compared},
        },
    }
