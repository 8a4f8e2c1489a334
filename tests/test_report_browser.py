"""report.html in a real browser: headless Chromium (Debian's `chromium`, which setup.sh
installs) opens a report made from a crafted two-kernel summary with a regression, and

- its DOM holds the failing case's evidence: what failed, the reproducer, the kernel
  log, a link to the console log, and the known issue's reason;
- the page runs no script (so it cannot log a script error), loads nothing from the
  network, and Chromium's log shows no console message;
- at a phone's width and at a wide one nothing overflows sideways but <pre> blocks;
- screenshots at both widths are kept with this test run's results
  (results/<run>/report-in-browser/, the path is printed and recorded as a property).

No VM. Skips only where chromium is missing and $CI is unset."""

import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser

import pytest

from overlay_harness.host.agent_client import Errno
from overlay_harness.library import repro
from overlay_harness.library.guest import Call
from overlay_harness.plugin.session import state_of
from overlay_harness.results.model import Results
from overlay_harness.results.render import html_page

OLD, NEW = "6.1.0-56-amd64", "7.3-amd64"
CASE = "cases/test_volatile.py::test_volatile_sync_calls_return_error_every_time[ext4-nojournal]"
ASSERTION = ("assert 0 == 5\n +  where 0 = fsync(5)\n +    where fsync = <Guest>.fsync\n"
             " +  and   5 = errno.EIO")
KLOG = "[   41.207311] Buffer I/O error on dev dm-0, logical block 8451, lost async page write"
KNOWN = "msync on a volatile overlay's mapping goes straight to the real upper file"
WIDTHS = {"phone": (390, 1400), "wide": (1280, 1000)}


def chromium():
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is missing under CI: ./setup.sh installs Debian's chromium package")
    pytest.skip("chromium is not installed (./setup.sh installs Debian's chromium package)")


def crafted_run(run_dir):
    """A run directory like the recorder writes: summary.json, timing.json, the failing
    case's reproducer (through library/repro.py) and its console log; then report.html."""
    (run_dir / "reproducers").mkdir(parents=True)
    (run_dir / f"{NEW}-gw0").mkdir()
    console = run_dir / f"{NEW}-gw0" / "console.log"
    console.write_text("[    0.000000] Linux version 7.3-amd64\nOVH-AGENT-READY\n")
    calls = [Call("open", ("/run/ovh/t/merged/f", 66), {}, 5),
             Call("pwrite", (5, b"n" * 65536, 0), {}, 65536),
             Call("fsync", (5,), {}, 0),
             Call("syncfs", (5,), {}, Errno(5)),
             Call("write_file", ("/run/ovh/t/log", b"".join(bytes([i % 251]) for i in range(300))), {}, None)]
    reproducer = repro.write(run_dir / "reproducers" / "test_volatile_sync.py", calls, f"for {CASE} on {NEW}")
    records = []
    for kernel in (OLD, NEW):
        for case in ("cases/test_boot.py::test_guest_runs_chosen_kernel", CASE,
                     "cases/test_volatile.py::test_volatile_msync_returns_the_error_every_time[xfs]"):
            rec = {"case": case, "kernel": kernel, "nodeid": case, "outcome": "passed",
                   "duration": 0.8, "setup": 1.5, "teardown": 0.6}
            if "msync" in case:
                rec.update(outcome="xfailed", reason=f"known kernel issue (kernels 5.11 to now): {KNOWN}")
            if case == CASE and kernel == NEW:
                rec.update(outcome="failed", message=ASSERTION, where="cases/test_volatile.py:42",
                           reproducer=str(reproducer), console_log=str(console), kernel_log=KLOG)
            records.append(rec)
    summary = {"run_id": run_dir.name, "run_dir": str(run_dir), "exit_status": 1,
               "kernels": [{"label": k, "release": k, "image": f"/boot/vmlinuz-{k}"} for k in (OLD, NEW)],
               "results": records}
    phases = {"setup": [1.5, 1.5, 1.5], "call": [0.8, 0.8, 0.8], "teardown": [0.6, 0.6, 0.6]}
    timing = {"kernels": {k: {"boots_s": [32.4 + i * 10], "phases_s": phases}
                          for i, k in enumerate((OLD, NEW))}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "timing.json").write_text(json.dumps(timing))
    page = run_dir / "report.html"
    page.write_text(html_page(Results.from_summaries([summary]), summary, timing))
    return page


def browse(tmp_path, *args, url):
    """Run headless Chromium once; (stdout, stderr)."""
    profile = tmp_path / "chromium-profile"
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--hide-scrollbars", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         *args, url],
        capture_output=True, text=True, timeout=180, env=dict(os.environ, HOME=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


class Texts(HTMLParser):
    """The text inside each element that has an id, and every tag's name."""

    def __init__(self):
        super().__init__()
        self.open, self.by_id, self.tags, self.attrs = [], {}, set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs += attrs
        ident = dict(attrs).get("id")
        if tag not in ("br", "meta", "rect"):
            self.open.append(ident)
        if ident:
            self.by_id[ident] = ""

    def handle_endtag(self, tag):
        if tag not in ("br", "meta", "rect") and self.open:
            self.open.pop()

    def handle_data(self, data):
        for ident in filter(None, self.open):
            self.by_id[ident] += data


# Loads the report in an iframe of the given width and writes what overflows into the DOM:
# the test page's script, not the report's (which has none).
MEASURE = """<!doctype html><html><body style="margin:0">
<iframe id="f" src="REPORT" style="width:WIDTHpx;height:800px;border:0"></iframe>
<script>
document.getElementById("f").addEventListener("load", function () {
  var doc = this.contentDocument, root = doc.documentElement, wide = [];
  doc.querySelectorAll("body *").forEach(function (el) {
    if (el.closest("pre")) return;
    if (el.getBoundingClientRect().right > root.clientWidth + 1)
      wide.push(el.tagName + " " + el.textContent.slice(0, 60));
  });
  var pres = Array.prototype.map.call(doc.querySelectorAll("pre"), function (p) {
    return [p.scrollWidth > p.clientWidth, getComputedStyle(p).overflowX]; });
  document.body.setAttribute("data-measured", JSON.stringify(
    {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, wide: wide, pres: pres}));
});
</script></body></html>"""


@pytest.fixture
def report(tmp_path):
    return crafted_run(tmp_path / "run-crafted")


@pytest.fixture
def shots(request):
    out = state_of(request.config).run_dir / "report-in-browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_the_report_shows_the_evidence_in_a_browser_at_phone_and_wide_widths(report, tmp_path, shots,
                                                                             record_property, capsys):
    source = report.read_text()
    # Self-contained: no script, nothing fetched (links only to the run's own files and anchors).
    assert "<script" not in source.lower()
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", source)

    dom, log = browse(tmp_path, "--window-size=390,1400", "--dump-dom", url=report.as_uri())
    assert "CONSOLE" not in log, [line for line in log.splitlines() if "CONSOLE" in line]
    parsed = Texts()
    parsed.feed(dom)
    assert "script" not in parsed.tags
    evidence = parsed.by_id["ev-1"]  # the regression, first of the failing cases
    assert f"{CASE} on {NEW}" in evidence and "regression" in evidence
    assert "where 0 = fsync(5)" in evidence and "cases/test_volatile.py:42" in evidence
    assert "call('pwrite', fd1, b'n' * 65536, 0)" in evidence  # the reproducer, compact
    assert "Buffer I/O error on dev dm-0" in evidence
    links = [v for k, v in parsed.attrs if k == "href"]
    assert f"{NEW}-gw0/console.log" in links and "reproducers/test_volatile_sync.py" in links
    assert KNOWN in dom and "<svg" in dom  # the known issue's reason, the time picture
    assert dom.index("Totals per kernel") < dom.index('id="ev-1"') < dom.index("Where the time went")

    for name, (width, height) in WIDTHS.items():
        page = tmp_path / f"measure-{name}.html"
        page.write_text(MEASURE.replace("REPORT", report.as_uri()).replace("WIDTH", str(width)))
        dom, _ = browse(tmp_path, "--allow-file-access-from-files", "--virtual-time-budget=5000",
                        f"--window-size={width},900", "--dump-dom", url=page.as_uri())
        found = re.search(r'data-measured="([^"]*)"', dom)
        assert found, f"the measuring page did not run: {dom[:500]}"
        measured = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
        assert measured["clientWidth"] == width
        assert measured["scrollWidth"] <= width and not measured["wide"], (name, measured)
        if name == "phone":  # the kernel log's line is wider than a phone: its <pre> scrolls
            assert [True, "auto"] in measured["pres"], measured["pres"]

        shot = shots / f"report-{name}.png"
        browse(tmp_path, f"--window-size={width},{height}", f"--screenshot={shot}", url=report.as_uri())
        head = shot.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", head[16:24]) == (width, height)
    record_property("screenshots", str(shots))
    with capsys.disabled():
        print(f"\nreport screenshots: {shots}")
