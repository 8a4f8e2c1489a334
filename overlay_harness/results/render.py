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
              f"<code>{e(k)}</code>: {e(abbreviate(res.rows[(c, k)].get('message')))}</li>"
              for c, k, o in regs]
        p.append("</ul>")
    issues = res.known_issues()
    if issues:
        p.append("<h2>Known issues</h2><ul>")
        p += [f"<li><code>{e(i['case'])}</code> on <code>{e(i['kernel'])}</code> ({e(i['outcome'])}): "
              f"{e(i['reason'])}</li>" for i in issues]
        p.append("</ul>")
    p.append("</body></html>\n")
    return "\n".join(p)


def abbreviate(text, limit=240):
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
