"""The results as text, Markdown, HTML and the README's by-case table."""

import html
from pathlib import Path

from .model import Outcome

# How outcomes show in the tables.
SHORT = {Outcome.PASSED: "passed", Outcome.FAILED: "FAILED", Outcome.ERROR: "ERROR",
         Outcome.SKIPPED: "skipped", Outcome.XFAILED: "xfail", Outcome.XPASSED: "XPASS",
         Outcome.QUARANTINED: "quarantined", None: "-"}


def regression_line(res, case, kernel, outcome):
    return f"REGRESSION {case}: passed on {res.kernels[0]}, {outcome} on {kernel}"


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
    icons = {Outcome.PASSED: "✅", Outcome.FAILED: "❌", Outcome.ERROR: "💥", Outcome.SKIPPED: "⏭️",
             Outcome.XFAILED: "🟡", Outcome.XPASSED: "⚠️",
             Outcome.QUARANTINED: "🔒", None: "—"}
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


# The page: self-contained (no script, no network), one column that fits a phone;
# only <pre> blocks scroll sideways.
CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em;max-width:80em;color:#222;line-height:1.4}
h1,h2,h3{overflow-wrap:anywhere;line-height:1.25}
h1{font-size:1.5em}h2{font-size:1.25em;margin-top:1.6em}h3{font-size:1.05em}h4{margin:.8em 0 .3em}
table{border-collapse:collapse;font-size:14px;max-width:100%}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
td{overflow-wrap:anywhere}
th{background:#f3f3f3}
td.case{font-family:monospace}
tr.differs td.case{font-weight:bold}
.passed{background:#d9f2d9}.failed,.error{background:#f7c6c6}.skipped{background:#eee;color:#666}
.xfailed{background:#fbeec2}.xpassed{background:#fbd9a8}.quarantined{background:#e4dcf3}.none{color:#999}
.regression{outline:3px solid #c00;outline-offset:-3px;font-weight:bold}
code{font-size:13px;overflow-wrap:anywhere}
pre{overflow-x:auto;max-width:100%;max-height:32em;background:#f6f6f6;border:1px solid #ddd;
 padding:.5em;font-size:12px;line-height:1.3}
article.evidence{border-left:4px solid #c00;padding:0 0 0 .8em;margin:1.2em 0}
article.evidence.ev-xpassed{border-color:#e08a00}
article.evidence.ev-quarantined{border-color:#7b61ff}
pre.whole{max-height:none}
.outcome{padding:0 .3em;border-radius:3px}
.bars{margin:.5em 0 1em}.bar{margin:.6em 0}
.bar svg{display:block;width:100%;height:22px}
.swatch{display:inline-block;width:.8em;height:.8em;margin:0 .25em 0 .6em;vertical-align:baseline}
"""

# Where the time went: the parts of a kernel's bar, in timing.json's names.
TIME_PARTS = [("boots", "boots", "#7b61ff"), ("setup", "set-up", "#f0a500"),
              ("call", "body", "#2e8b57"), ("teardown", "teardown", "#4682b4")]
# cases the page gives evidence for (a quarantined case failed: its evidence is there)
SHOWN = (Outcome.FAILED, Outcome.ERROR, Outcome.XPASSED, Outcome.QUARANTINED)
READ_LIMIT = 20000  # characters of a reproducer the page quotes


def html_page(res, meta, timing=None, extra=()):
    """report.html: totals per kernel; the evidence of each failed, errored, xpassed or
    quarantined case (regressions first); known issues; where the time went per kernel (`timing`, as in
    timing.json); the kernels; the case x kernel table."""
    e = html.escape
    regs = res.regressions()
    regset = {(c, k) for c, k, _ in regs}
    shown = _evidence_order(res, regs)
    anchors = {key: f"ev-{i + 1}" for i, key in enumerate(shown)}
    p = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
         "<meta name='viewport' content='width=device-width, initial-scale=1'>",
         f"<title>overlay-harness {e(str(meta.get('run_id', '')))}</title><style>{CSS}</style>",
         "</head><body>",
         f"<h1>overlay-harness: {e(str(meta.get('run_id', 'results')))}</h1>"]
    status = meta.get("exit_status")
    against = (meta.get("against_baseline") or {}).get("regressions")
    p.append(f"<p>{len(res.cases)} cases × {len(res.kernels)} kernels; "
             f"{sum(1 for c in res.cases if res.differs(c))} differ between kernels; "
             f"<b>{len(regs)} regression{'s' if len(regs) != 1 else ''}</b>"
             + ("" if against is None else f" between kernels; <b>{len(against)} regression"
                f"{'s' if len(against) != 1 else ''} against the baseline</b>")
             + (f"; pytest exit status {e(str(status))}" if status is not None else "") + ".</p>")
    p += _against_baseline(meta)
    p += _totals(res)
    if shown:
        p.append(f"<h2>Failed, errored, xpassed and quarantined: {len(shown)}</h2>"
                 "<p>Regressions (passed on the first kernel, not on a later one) come first.</p>")
        for key in shown:
            p += _evidence(res, key, key in regset, anchors[key], meta.get("run_dir"))
    issues = {}
    for i in res.known_issues():  # one line per case and reason, its kernels together
        issues.setdefault((i["case"], i["outcome"], i["reason"]), []).append(i["kernel"])
    if issues:
        p.append("<h2>Known issues</h2><ul>")
        p += [f"<li><code>{e(case)}</code> on {', '.join(f'<code>{e(k)}</code>' for k in kernels)} "
              f"({e(outcome)}): {e(reason)}</li>" for (case, outcome, reason), kernels in issues.items()]
        p.append("</ul>")
    if timing:
        p += time_bars(timing_by_kernel(timing, res.kernels))
    p += list(extra)  # more sections (report merge: where the time went per shard)
    if meta.get("kernels"):
        p += _kernels(meta["kernels"])
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
            text = e(SHORT.get(o, "?"))
            if (c, k) in anchors:
                text = f"<a href='#{anchors[(c, k)]}'>{text}</a>"
            cells.append(f"<td class='{klass}' title='{e(tip)}'>{text}{dur}</td>")
        p.append(f"<tr{cls}><td class='case'>{e(c)}</td>{''.join(cells)}</tr>")
    p.append("</table>")
    p.append("</body></html>\n")
    return "\n".join(p)


def _evidence_order(res, regs):
    """(case, kernel) of every failed, errored, xpassed or quarantined case: regressions first."""
    first = [(c, k) for c, k, _ in regs]
    rest = [(c, k) for c in res.ordered_cases() for k in res.kernels
            if res.outcome(c, k) in SHOWN and (c, k) not in first]
    return first + rest


def _totals(res):
    """Outcomes (rows) per kernel (columns): narrow enough for a phone with four kernels."""
    e = html.escape
    totals = res.totals()
    present = [o for o in [*Outcome, "not run"] if any(o in totals.get(k, {}) for k in res.kernels)]
    p = ["<h2>Totals per kernel</h2><table><tr><th></th>"
         + "".join(f"<th><code>{e(k)}</code>{' (baseline)' if i == 0 and len(res.kernels) > 1 else ''}</th>"
                   for i, k in enumerate(res.kernels)) + "</tr>"]
    for o in present:
        counts = [totals.get(k, {}).get(o, 0) for k in res.kernels]
        p.append(f"<tr><th>{e(str(o))}</th>"
                 + "".join(f"<td class='{e(str(o)) if n else ''}'>{n}</td>" for n in counts) + "</tr>")
    p.append("</table>")
    return p


def _evidence(res, key, regression, anchor, run_dir):
    """One case's evidence: what failed, the reproducer, the kernel log, the console log."""
    e = html.escape
    case, kernel = key
    rec = res.rows[key]
    o = rec["outcome"]
    p = [f"<article class='evidence ev-{e(o)}' id='{anchor}'>",
         f"<h3><code>{e(case)}</code> on <code>{e(kernel)}</code>: "
         f"<span class='outcome {e(o)}'>{e(SHORT[o])}</span>"
         + (f" <span class='regression'>regression</span> (passed on <code>{e(res.kernels[0])}</code>)"
            if regression else "") + "</h3>"]
    if rec.get("infra_error"):
        p.append(f"<p>The VM or the harness broke ({e(rec['infra_error'])}): an error of the run, "
                 "not a result of the case.</p>")
    if o == Outcome.XPASSED:
        p.append(f"<p>Passed, though a known issue says it fails here: {e(rec.get('reason', ''))}</p>")
    if o == Outcome.QUARANTINED:
        p.append(f"<p>Failed, not counted: quarantined, {e(rec.get('quarantine', ''))}</p>")
    if rec.get("message"):
        where = f" at <code>{e(rec['where'])}</code>" if rec.get("where") else ""
        p.append(f"<h4>What failed{where}</h4><pre>{e(rec['message'])}</pre>")
    if rec.get("reproducer"):
        link = _rel(rec["reproducer"], run_dir)
        text = _file_text(rec["reproducer"])
        p.append(f"<h4>Reproducer: <a href='{e(link)}'>{e(link)}</a></h4>")
        p.append(f"<pre class='whole'>{e(text)}</pre>" if text is not None
                 else "<p>(the file is not there)</p>")
    if rec.get("kernel_log") is not None:
        p.append(f"<h4>Kernel log since the case began</h4><pre>{e(rec['kernel_log'] or '(nothing)')}</pre>")
    if rec.get("console_excerpt"):
        p.append(f"<h4>Console (the guest was gone)</h4><pre>{e(rec['console_excerpt'])}</pre>")
    if rec.get("console_log"):
        link = _rel(rec["console_log"], run_dir)
        p.append(f"<p><a href='{e(link)}'>Console log of the VM</a> (<code>{e(link)}</code>)</p>")
    p.append("</article>")
    return p


def _file_text(path):
    try:
        with open(path, errors="replace") as f:
            text = f.read(READ_LIMIT + 1)
    except OSError:
        return None
    return text if len(text) <= READ_LIMIT else text[:READ_LIMIT] + "\n... (cut; the file has it all)"


def _kernels(kernels):
    e = html.escape
    p = ["<h2>Kernels</h2><table><tr><th>#</th><th>release</th><th>image</th>"
         "<th>config</th><th>package</th><th>config lacks</th></tr>"]
    for i, k in enumerate(kernels):
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
    return p


def timing_by_kernel(timing, kernels):
    """timing.json's times per kernel label: its "kernels" part, or (a file from before
    there was one) the whole run's times under its one kernel, or under "all kernels"."""
    if timing.get("kernels"):
        return timing["kernels"]
    whole = {"boots_s": timing.get("boots_s", []), "phases_s": timing.get("phases_s", {})}
    return {kernels[0] if len(kernels) == 1 else "all kernels": whole}


def time_parts(times):
    """(key, name, colour, seconds) of one kernel's boots, set-up, body and teardown."""
    phases = times.get("phases_s", {})
    sums = {"boots": sum(times.get("boots_s", [])),
            **{p: sum(phases.get(p, [])) for p in ("setup", "call", "teardown")}}
    return [(key, name, colour, sums[key]) for key, name, colour in TIME_PARTS]


def time_bars(per_kernel, title="Where the time went",
              intro="Per kernel, summed over the VMs of the run (side by side under xdist)"):
    """Where the time went, one bar per kernel (or per `intro`'s part; inline SVG, all on one scale)."""
    e = html.escape
    parts = {k: time_parts(t) for k, t in per_kernel.items()}
    longest = max((sum(s for *_, s in ps) for ps in parts.values()), default=0) or 1.0
    p = [f"<h2>{e(title)}</h2>",
         f"<p>{e(intro)}: VM boots to ready, "
         "and the cases' set-up (boots excluded), body and teardown.",
         "".join(f"<span class='swatch' style='background:{c}'></span>{n}" for _, n, c in TIME_PARTS)
         + "</p><div class='bars'>"]
    for kernel, ps in parts.items():
        total = sum(s for *_, s in ps)
        boots = len(per_kernel[kernel].get("boots_s", []))
        cases = len(per_kernel[kernel].get("phases_s", {}).get("call", []))
        x, rects = 0.0, []
        for _, name, colour, seconds in ps:
            width = 1000 * seconds / longest
            rects.append(f"<rect x='{x:.1f}' y='0' width='{width:.1f}' height='20' fill='{colour}'>"
                         f"<title>{name} {seconds:.1f} s</title></rect>")
            x += width
        label = ", ".join(f"{name} {seconds:.1f} s" for _, name, _, seconds in ps)
        p.append(f"<div class='bar'><div><code>{e(kernel)}</code>: {total:.1f} s "
                 f"({boots} boot{'s' if boots != 1 else ''}, {cases} cases)</div>"
                 f"<svg viewBox='0 0 1000 20' preserveAspectRatio='none' role='img' "
                 f"aria-label='{e(label)}' xmlns='http://www.w3.org/2000/svg'>{''.join(rects)}</svg>"
                 f"<div>{e(label)}</div></div>")
    p.append("</div>")
    return p


def _rel(path, run_dir):
    if not run_dir:
        return path
    try:
        return str(Path(path).relative_to(run_dir))
    except ValueError:
        return path


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


def _against_baseline(meta):
    """report.html's account of a run against its baseline (summary.json's fields): the
    regressions against the baseline, what the series fixed, and what it left unchanged."""
    e = html.escape
    ab = meta.get("against_baseline")
    if not ab:
        return []
    series, base = meta.get("series") or {}, meta.get("baseline") or {}
    regs = ab["regressions"]
    p = [f"<h2>Against the baseline: <b>{len(regs)} regression{'s' if len(regs) != 1 else ''} against "
         f"the baseline</b>, {len(ab['fixed'])} fixed, {ab['unchanged']} unchanged</h2>",
         "<p>The baseline is the same fs/overlayfs without the series, built and loaded the same way, "
         f"on the same cases ({'cached' if base.get('cached') else 'run now'}: "
         f"<code>{e(str(base.get('summary', '?')))}</code>). A regression passed there and failed, "
         "errored or xfailed here; fixed is the reverse.</p>"]
    if series.get("patches"):
        p.append(f"<p>Series {e(series.get('cover_letter') or '')} (patchset hash "
                 f"<code>{e(series.get('patchset_hash', ''))}</code>):</p><ol>")
        p += [f"<li>{e(x['subject'])} <code>{e(x['sha256'][:12])}</code></li>" for x in series["patches"]]
        p.append("</ol>")
    for title, rows in (("Regressions against the baseline", regs), ("Fixed", ab["fixed"]),
                        ("Changed otherwise", ab["changed"]), ("Not in the baseline", ab["new"])):
        if rows:
            p.append(f"<h3>{title}: {len(rows)}</h3><ul>")
            p += [f"<li><code>{e(x['case'])}</code> on <code>{e(x['kernel'])}</code>: baseline "
                  f"{e(str(x['baseline'] or 'not run'))}, now {e(str(x['outcome']))}</li>" for x in rows]
            p.append("</ul>")
    return p


def check_result(summary, report_path):
    """The run's verdict in the shape of a patchwork check (what CI bots post on a series):
    state success, warning or fail; a context; a one-line description; the report's URL.
    fail: a regression against the baseline (or between kernels); warning: none, but a
    harness error or an outcome that changed otherwise or is new; success: the rest."""
    ab = summary.get("against_baseline") or {}
    errors = sum(1 for r in summary.get("results", []) if r.get("outcome") == "error")
    regs = len(ab.get("regressions", [])) + len(summary.get("regressions", []))
    other = len(ab.get("changed", [])) + len(ab.get("new", []))
    state = "fail" if regs else ("warning" if errors or other else "success")
    kernels = ", ".join(k["release"] for k in summary.get("kernels", []))
    n = len(ab.get("regressions", []))
    parts = [f"{n} regression{'s' if n != 1 else ''} against the baseline",
             f"{len(ab.get('fixed', []))} fixed", f"{ab.get('unchanged', 0)} unchanged"]
    if other:
        parts.append(f"{other} changed otherwise or new")
    if errors:
        parts.append(f"{errors} harness errors")
    return {"state": state, "context": "overlay-harness",
            "description": f"{', '.join(parts)} ({len(summary.get('results', []))} case runs on {kernels})",
            "target_url": Path(report_path).resolve().as_uri()}
