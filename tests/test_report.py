"""The results layer with fake cases (no VM): the kernel x case table, regressions, the JSON
summary, the HTML page, JUnit evidence, and the same under pytest-xdist."""

import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from overlay_harness import report

pytest_plugins = ["pytester"]

OLD, NEW = "6.1.0-9-amd64", "6.12.9-amd64"

CASES = '''
import pytest

def test_same(kernel):
    assert kernel.release

@pytest.mark.parametrize("fs", ["ext4", "xfs"])
def test_fs(kernel, fs):
    assert not (fs == "xfs" and kernel.release.startswith("6.12"))

def test_known_on_new(kernel, request):
    if kernel.release.startswith("6.12"):
        request.node.add_marker(pytest.mark.xfail(
            reason="known kernel issue (kernels 6.12 to now): fsync forgets the error",
            strict=True, raises=AssertionError))
    assert kernel.release.startswith("6.1.")

def test_fixed_on_new(kernel, request):
    if kernel.release.startswith("6.1."):
        request.node.add_marker(pytest.mark.xfail(reason="known kernel issue: fixed in 6.12",
                                                  strict=True, raises=AssertionError))
    assert kernel.release.startswith("6.12")

def test_no_kernel():
    pass
'''

# Stands in for plugin/evidence.py's facts and sections (the real ones need a guest).
CONFTEST = '''
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if call.excinfo is not None and call.excinfo.typename == "GuestLost":
        rep.user_properties.append(("infra_error", "lost"))  # as plugin/evidence.py records it
    if rep.failed and call.when == "call":
        rep.user_properties += [("reproducer", "/r/repro_%s.py" % item.name),
                                ("console_log", "/r/console.log"),
                                ("kernel_log", "[ 1.0] Buffer I/O error on dev dm-0")]
        rep.sections.append(("guest: kernel", "fake"))
        rep.sections.append(("guest: calls (reproducer, also in /r/repro_%s.py)" % item.name,
                             "g.open('/x', 0)  # -> EIO"))
        rep.sections.append(("guest: dmesg since the case began", "[ 1.0] Buffer I/O error on dev dm-0"))
        rep.sections.append(("guest: console (excerpt of /r/console.log)", "login: ok"))
'''


def bzimage(path, release):
    data = bytearray(0x1000)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x20E, 0x400)
    data[0x600:0x600 + len(release) + 9] = f"{release} (x@y)\0".encode()
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def suite(pytester, request):
    pytester.makepyfile(test_cases=getattr(request, "param", CASES))
    pytester.makeconftest(CONFTEST)
    images = {}
    for rel in (OLD, NEW):
        images[rel] = bzimage(pytester.path / f"vmlinuz-{rel}", rel)

    def run(*kernels, extra=(), subprocess=False):
        args = ["-p", "overlay_harness.plugin", "-p", "overlay_harness.results.recorder", "--accel", "tcg",
                f"--results-dir={pytester.path / 'results'}", "-p", "no:cacheprovider",
                "-o", "xfail_strict=true", *extra]
        for k in kernels:
            args += [f"--kernel={images[k]}"]
        runner = pytester.runpytest_subprocess if subprocess else pytester.runpytest
        result = runner(*args)
        runs = sorted((pytester.path / "results").glob("*/summary.json"))
        summary = json.loads(runs[-1].read_text()) if runs else None
        return result, summary
    return run


def outcomes(summary):
    return {(r["case"], r["kernel"]): r["outcome"] for r in summary["results"]}


def test_two_kernels_table_regressions_and_summary(suite):
    result, summary = suite(OLD, NEW)
    # Every kernel on its own would pass (test_known_on_new is an expected xfail on NEW), except
    # test_fs[xfs], which fails there; the xfail after a pass on OLD is still a regression.
    assert result.ret == 1
    out = result.stdout.str()
    assert "case × kernel (3 of 5 cases differ)" in out
    table = out[out.index("case × kernel"):]
    rows = [line.split()[0] for line in table.splitlines()[3:9] if line.startswith("test_")]
    # The cases that differ come first.
    assert rows[:3] == ["test_cases.py::test_fs[xfs]", "test_cases.py::test_known_on_new",
                        "test_cases.py::test_fixed_on_new"]
    assert ("REGRESSION test_cases.py::test_known_on_new: passed on 6.1.0-9-amd64, "
            "xfailed on 6.12.9-amd64") in out
    assert "REGRESSION test_cases.py::test_fs[xfs]: passed on 6.1.0-9-amd64, failed on 6.12.9-amd64" in out
    assert "test_fixed_on_new: passed" not in out  # a fix is no regression
    assert "2 regressed" in out.splitlines()[-1]

    assert [k["release"] for k in summary["kernels"]] == [OLD, NEW]
    assert summary["kernels"][0]["image"].endswith(f"vmlinuz-{OLD}")
    got = outcomes(summary)
    assert got[("test_cases.py::test_same", OLD)] == got[("test_cases.py::test_same", NEW)] == "passed"
    assert got[("test_cases.py::test_fs[xfs]", NEW)] == "failed"
    assert got[("test_cases.py::test_known_on_new", NEW)] == "xfailed"
    assert got[("test_cases.py::test_fixed_on_new", OLD)] == "xfailed"
    assert ("test_cases.py::test_no_kernel", OLD) not in got  # no kernel fixture: not a kernel case
    assert {(r["case"], r["kernel"]) for r in summary["regressions"]} == {
        ("test_cases.py::test_known_on_new", NEW), ("test_cases.py::test_fs[xfs]", NEW)}
    issues = {(i["case"], i["kernel"]): i["reason"] for i in summary["known_issues"]}
    assert issues[("test_cases.py::test_known_on_new", NEW)].endswith("fsync forgets the error")
    assert "fixed in 6.12" in issues[("test_cases.py::test_fixed_on_new", OLD)]
    assert all(isinstance(r["duration"], float) for r in summary["results"])
    assert summary["exit_status"] == 1
    assert summary["totals"][NEW] == {"passed": 3, "failed": 1, "xfailed": 1}

    failed = next(r for r in summary["results"] if r["outcome"] == "failed")
    assert failed["kernel_log"] == "[ 1.0] Buffer I/O error on dev dm-0"
    line = next(i for i, text in enumerate(CASES.strip().splitlines(), 1) if "assert not" in text)
    assert failed["where"].endswith(f"test_cases.py:{line}") and "assert not" in failed["message"]

    run_dir = Path(summary["run_dir"])
    page = (run_dir / "report.html").read_text()
    assert page.count("class='xfailed regression'") == 1 and page.count("class='failed regression'") == 1
    # Evidence for both regressions (the xfail after a pass included), none for the rest
    articles = [a[:a.index("</article>")] for a in page.split("<article")[1:]]
    assert len(articles) == 2 and all("regression</span>" in a for a in articles)
    (fs,) = [a for a in articles if "test_cases.py::test_fs[xfs]</code> on <code>6.12.9-amd64" in a]
    assert "Buffer I/O error on dev dm-0" in fs and "href='/r/console.log'" in fs and "assert not" in fs
    assert "<h2>Known issues</h2>" in page and "fsync forgets the error" in page
    assert page.index("test_cases.py::test_fs[xfs]") < page.index("test_cases.py::test_same")
    md = (run_dir / "table.md").read_text()
    assert "| `test_cases.py::test_known_on_new` (differs) |" in md and "**regression**" in md


def test_reverse_order_fix_is_not_a_regression(suite):
    result, summary = suite(NEW, OLD)
    # Baseline NEW: test_known_on_new xfails there and passes on OLD (not a regression); but
    # test_fixed_on_new passes on NEW and xfails on OLD, which is one.
    assert result.ret == 1
    assert [(r["case"], r["kernel"]) for r in summary["regressions"]] == [
        ("test_cases.py::test_fixed_on_new", OLD)]


def test_one_kernel_no_table_but_summary(suite):
    result, summary = suite(OLD, extra=["-k", "not fixed_on_new"])
    assert result.ret == 0
    assert "case × kernel" not in result.stdout.str()
    assert summary["regressions"] == [] and [k["release"] for k in summary["kernels"]] == [OLD]
    # Without a kernel parameter the case keys are the plain node ids.
    assert outcomes(summary)[("test_cases.py::test_fs[xfs]", OLD)] == "passed"


def test_junit_carries_the_guest_evidence_of_failures(suite, pytester):
    xml_path = pytester.path / "junit.xml"
    result, _ = suite(OLD, NEW, extra=[f"--junitxml={xml_path}"])
    assert result.ret == 1
    root = ET.parse(xml_path).getroot()
    cases = {(tc.get("name")): tc for tc in root.iter("testcase")}
    failing = cases[f"test_fs[{NEW}-xfs]"]
    props = {p.get("name"): p.get("value") for p in failing.iter("property")}
    assert props["kernel"] == NEW and props["case"] == "test_cases.py::test_fs[xfs]"
    assert props["reproducer"] == "/r/repro_test_fs[6.12.9-amd64-xfs].py"
    assert props["console_log"] == "/r/console.log"
    out = failing.find("system-out").text
    assert "----- guest: dmesg since the case began (call) -----" in out
    assert "Buffer I/O error on dev dm-0" in out and "g.open('/x', 0)" in out and "login: ok" in out
    passing = cases[f"test_same[{OLD}]"]
    assert passing.find("system-out") is None
    assert {p.get("name"): p.get("value") for p in passing.iter("property")}["kernel"] == OLD


def test_under_xdist_the_controller_reports(suite):
    pytest.importorskip("xdist")
    result, summary = suite(OLD, NEW, extra=["-n", "2"], subprocess=True)
    assert result.ret == 1
    out = result.stdout.str()
    assert "case × kernel (3 of 5 cases differ)" in out
    assert len(summary["results"]) == 10
    assert {(r["case"], r["kernel"]) for r in summary["regressions"]} == {
        ("test_cases.py::test_known_on_new", NEW), ("test_cases.py::test_fs[xfs]", NEW)}


def test_merging_summaries_of_separate_runs(suite, tmp_path, capsys):
    _, first = suite(OLD, extra=["-k", "not fixed_on_new"])
    _, second = suite(NEW, extra=["-k", "not fixed_on_new"])
    paths = []
    for i, s in enumerate((first, second)):
        p = tmp_path / f"s{i}.json"
        p.write_text(json.dumps(s))
        paths.append(str(p))
    html_out = tmp_path / "merged.html"
    status = report.main([*paths, "--markdown", "--html", str(html_out)])
    out = capsys.readouterr()
    assert status == 1
    assert f"| case | `{OLD}` | `{NEW}` |" in out.out
    assert "REGRESSION test_cases.py::test_known_on_new: passed on 6.1.0-9-amd64, xfailed on" in out.err
    assert "test_cases.py::test_fs[xfs]" in html_out.read_text()


LOST = """
class GuestLost(Exception):
    pass

def test_lost(kernel):
    if kernel.release.startswith("6.12"):
        raise GuestLost("the VM is gone")
"""


@pytest.mark.parametrize("suite", [LOST], indirect=True)
def test_a_broken_vm_is_an_error_not_a_failure(suite):
    result, summary = suite(OLD, NEW)
    assert result.ret == 1
    assert outcomes(summary) == {("test_cases.py::test_lost", OLD): "passed",
                                 ("test_cases.py::test_lost", NEW): "error"}
    assert summary["regressions"][0]["outcome"] == "error"
    assert summary["results"][1]["message"].startswith("GuestLost") or "the VM is gone" in (
        summary["results"][1]["message"])


def test_by_case_folds_parameters_and_lists_known_issues():
    from overlay_harness.results.model import Results
    from overlay_harness.results.render import by_case_markdown
    summary = {"kernels": [{"label": "6.1"}], "results": [
        {"case": "cases/test_v.py::test_a[ext4]", "kernel": "6.1", "outcome": "passed"},
        {"case": "cases/test_v.py::test_a[xfs]", "kernel": "6.1", "outcome": "xfailed",
         "reason": "known kernel issue: the overlay misses it"},
        {"case": "cases/test_v.py::test_b", "kernel": "6.1", "outcome": "failed"},
    ]}
    text = by_case_markdown(Results.from_summaries([summary]))
    assert "| `test_v.py::test_a` | passed (ext4); xfail (xfs) |" in text
    assert "| `test_v.py::test_b` | FAILED |" in text
    assert "- `test_v.py::test_a[xfs]`: known kernel issue: the overlay misses it" in text


def test_report_html_gives_a_quarantined_case_its_evidence():
    from overlay_harness.results.model import Results
    from overlay_harness.results.render import html_page
    summary = {"kernels": [{"label": "6.1"}], "results": [
        {"case": "cases/test_v.py::test_a", "kernel": "6.1", "outcome": "passed"},
        {"case": "cases/test_v.py::test_flaky", "kernel": "6.1", "outcome": "quarantined",
         "message": "assert 5 == 0",
         "quarantine": "fails under TCG (https://example.org/1; until 2027-01-31)",
         "kernel_log": "[    1.000000] overlayfs: something"},
    ]}
    page = html_page(Results.from_summaries([summary]), {"run_id": "r"})
    assert "Failed, errored, xpassed and quarantined: 1" in page
    assert "class='evidence ev-quarantined'" in page
    assert "quarantined, fails under TCG (https://example.org/1; until 2027-01-31)" in page
    assert "overlayfs: something" in page
