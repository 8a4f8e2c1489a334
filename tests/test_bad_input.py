"""Every bad value is one usage error (exit 4) before anything boots, naming the value, what
is accepted and an example: the group's options, the ini settings, known_issue markers
and the quarantine file (docs/bad-input.md lists the messages). The runs use the real
`kernel` fixture on a fake bzImage with --accel tcg, so nothing boots; a case that gets as
far as its body writes a file, which the tests look for."""

import datetime
from pathlib import Path

import pytest
from test_report import bzimage

pytest_plugins = ["pytester"]

PLUGINS = ["-p", "overlay_harness.plugin", "-p", "overlay_harness.results.recorder", "-p", "no:cacheprovider"]
RAN = "ran.txt"
CASE = f"""
import pytest

def test_k(kernel, upper_fs):
    open({RAN!r}, "a").write(upper_fs + "\\n")
"""


@pytest.fixture
def run(pytester):
    image = bzimage(pytester.path / "vmlinuz-6.9.0-test", "6.9.0-test")

    def run(*args, case=CASE):
        pytester.makepyfile(test_q=case)
        return pytester.runpytest(*PLUGINS, f"--kernel={image}", "--accel=tcg", *args)
    return run


def usage_error(result, message):
    """The run stopped with `message` on its error line, before any case ran."""
    err = result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + err
    assert message in err, err


@pytest.mark.parametrize(("option", "message"), [
    ("--upper-fs=foo", "argument --upper-fs: unknown upper filesystem 'foo'; give a comma list of "
                       "ext4, ext4-nojournal, xfs, btrfs (e.g. --upper-fs=ext4,xfs)"),
    ("--upper-fs=ext4,xf", "unknown upper filesystem 'xf' in 'ext4,xf'"),
    ("--vm-memory=abc", "argument --vm-memory: 'abc' is not a memory size: give a positive number "
                        "with a unit K, M, G or T (no unit: MiB), e.g. --vm-memory=4G"),
    ("--vm-memory=-1G", "'-1G' is not a memory size"),
    ("--vm-cpus=-2", "argument --vm-cpus: '-2' is not a positive whole number (e.g. --vm-cpus=2)"),
    ("--call-timeout=-1", "argument --call-timeout: '-1' is not a positive number of seconds "
                          "(e.g. --call-timeout=300)"),
    ("--boot-timeout=-5", "argument --boot-timeout: '-5' is not a positive number of seconds"),
    ("--boot-timeout=nan", "'nan' is not a positive number of seconds"),
])
def test_a_bad_option_value_is_a_usage_error(pytester, run, option, message):
    result = run(option)
    usage_error(result, message)
    assert not (pytester.path / RAN).exists()


def test_good_option_values_run(pytester, run):
    result = run("--upper-fs=ext4", "--vm-memory=1536M", "--vm-cpus=1", "--call-timeout=30",
                 "--boot-timeout=60")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert (pytester.path / RAN).read_text() == "ext4\n"


def test_a_bad_ini_upper_fs_is_a_usage_error(pytester, run):
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\noverlay_harness_upper_fs = "ext4,zfs"\n')
    result = run()
    usage_error(result, "overlay_harness_upper_fs in ")
    usage_error(result, "unknown upper filesystem 'zfs' in 'ext4,zfs'; give a comma list of ext4, "
                        'ext4-nojournal, xfs, btrfs (e.g. overlay_harness_upper_fs = "ext4,xfs")')
    assert not (pytester.path / RAN).exists()


MARKED = """
import pytest

@pytest.mark.known_issue("documented ENOSPC, returns EIO", {args})
def test_k(kernel, upper_fs):
    open("ran.txt", "a").write(upper_fs + "\\n")
"""


@pytest.mark.parametrize(("args", "message"), [
    ('since="v6.14"', "test_q.py::test_k[ext4]: known_issue marker: since='v6.14' is not a kernel "
                      "version: write major.minor[.patch] or major.minor-rcN, without a leading v "
                      '(e.g. since="6.12")'),
    ('fixed="6.l2"', "fixed='6.l2' is not a kernel version"),
    ("since=6.12", "since=6.12 is a float: write the version as a string"),
    ('upper_fs=["zfs"]', "upper_fs=['zfs']: give a list of ext4, ext4-nojournal, xfs, btrfs"),
    ('sinse="6.8"', "unknown keywords sinse"),
])
def test_a_bad_known_issue_marker_is_a_usage_error(pytester, run, args, message):
    result = run(case=MARKED.format(args=args))
    usage_error(result, message)
    assert not (pytester.path / RAN).exists()


def test_a_good_known_issue_marker_runs(pytester, run):
    result = run(case=MARKED.format(args='since="6.8", fixed="6.14-rc1"'))
    assert result.ret == 0  # a valid marker (it turns into an xfail only for a case with a guest)
    assert (pytester.path / RAN).exists()


def quarantine(path, case="test_q.py::test_k", expires=None, extra=""):
    expires = expires or datetime.date.today() + datetime.timedelta(days=30)
    path.write_text(f'[[quarantine]]\ncase = "{case}"\nreason = "flaky"\nlink = "https://example.org/1"\n'
                    f"expires = {expires.isoformat()}\n{extra}")


@pytest.mark.parametrize(("case", "extra", "message"), [
    ("test_q.py::test_k", "since = 6.12\n", "quarantine file {q}, entry 1 (test_q.py::test_k): "
     "since = 6.12 is a float: write the version as a string"),
    ("test_q.py::test_k", 'fixed = "v6.14"\n', "fixed = 'v6.14' is not a kernel version"),
    ("test_q.py::test_kk", "", "quarantine entry 'test_q.py::test_kk': no such case in test_q.py "
     "(did you mean 'test_q.py::test_k'?)"),
    ("test_nope.py::test_k", "", "quarantine entry 'test_nope.py::test_k': no file test_nope.py under"),
])
def test_a_bad_quarantine_entry_is_a_usage_error(pytester, run, case, extra, message):
    q = pytester.path / "quarantine.toml"
    quarantine(q, case=case, extra=extra)
    result = run()
    usage_error(result, message.format(q=q))
    assert not (pytester.path / RAN).exists()


def test_a_quarantine_entry_for_a_case_not_selected_is_no_error(pytester, run):
    """Only a file whose cases were collected tells a misspelt case from one not selected."""
    pytester.makepyfile(test_other="def test_o():\n    pass\n")
    quarantine(pytester.path / "quarantine.toml", case="test_other.py::test_o")
    assert run("test_q.py").ret == 0


def test_an_expired_quarantine_entry_is_said_at_the_start(pytester, run):
    quarantine(pytester.path / "quarantine.toml", expires=datetime.date(2020, 1, 31))
    result = run()
    out = result.stdout.str()
    line = ("quarantine: the entry for test_q.py::test_k expired on 2020-01-31: it quarantines nothing, "
            "and the run fails when the case runs (remove or renew it)")
    assert line in out
    assert out.index(line) < out.index("test_q.py .")  # before the case ran
    assert result.ret == 1  # and, as before, the run fails


def test_a_bad_overlay_module_names_the_option(run, tmp_path):
    not_a_module = tmp_path / "overlay.ko"
    not_a_module.write_text("not a module\n")
    result = run(f"--overlay-module={not_a_module}")
    usage_error(result, f"--overlay-module={not_a_module}: {not_a_module}: not a kernel module")


@pytest.mark.parametrize(("body", "message"), [
    ("[[deny]]\nname = 'x'\npattern = '(unclosed'\n",
     "[[deny]] entry 1: pattern '(unclosed' is not a Python regular expression (missing ), unterminated"),
    ("[[deny]]\npattern = '^mydrv: '\n", "[[deny]] entry 1: no name (a string) (e.g. name = \"my WARN\""),
    ("[[allow]]\npattern = '^mydrv: '\nreason = 'r'\nlink = 'l'\n", "[[allow]] entry 1: unknown keys link"),
    ("[[deny]\n", "kernel-log policy {f}: "),
    ("[tool]\n", "only [[deny]] and [[allow]] entries belong there, not tool"),
])
def test_a_bad_splats_file_is_a_usage_error(pytester, run, body, message):
    f = pytester.path / "mysplats.toml"
    f.write_text(body)
    result = run(f"--splats={f}")
    usage_error(result, f"--splats: kernel-log policy {f}")
    usage_error(result, message.format(f=f))
    assert not (pytester.path / RAN).exists()


USES_POLICY = """
from overlay_harness.plugin.session import state_of

def test_policy(kernel, request):
    policy = state_of(request.config).splat_policy
    assert policy.classify(6, "mydrv: fatal state") == "mydrv"
    assert policy.classify(6, "WARNING: CPU: 0 PID: 1 at fs/overlayfs/super.c") == "WARNING"
    assert policy.classify(3, "mydrv: retrying") is None
    open("ran.txt", "w").write("ok")
"""


def test_the_kernel_log_policy_takes_the_users_rules(pytester, run):
    """overlay_harness_splats adds deny and allow rules to the harness's own."""
    (pytester.path / "more").mkdir()
    (pytester.path / "more" / "splats.toml").write_text(
        "[[deny]]\nname = 'mydrv'\npattern = '^mydrv: fatal'\n"
        "[[allow]]\npattern = '^mydrv: retrying'\nreason = 'the driver logs its retries at error level'\n")
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\noverlay_harness_splats = "more/splats.toml"\n')
    result = run(case=USES_POLICY)
    assert result.ret == 0, result.stdout.str()
    assert (pytester.path / RAN).read_text() == "ok"


def test_under_xdist_a_bad_marker_is_one_usage_error(pytester, monkeypatch):
    """Workers collect: their usage error reaches the controller's end of the run (xdist
    would otherwise take the worker for crashed and print an INTERNALERROR without it)."""
    pytest.importorskip("xdist")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))  # this checkout
    image = bzimage(pytester.path / "vmlinuz-6.9.0-test", "6.9.0-test")
    pytester.makepyfile(test_q=MARKED.format(args='since="v6.14"'))
    result = pytester.runpytest_subprocess(*PLUGINS, f"--kernel={image}", "--accel=tcg", "-n", "2")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "INTERNALERROR" not in out
    assert out.count("known_issue marker: since='v6.14' is not a kernel version") == 1, out
    assert not (pytester.path / RAN).exists()


def test_a_bad_ini_value_is_an_error_even_when_the_command_line_overrides_it(pytester, run):
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\noverlay_harness_accel = "kvmm"\n')
    usage_error(run(), "overlay_harness_accel = 'kvmm' in ")  # run() gives --accel=tcg
    assert not (pytester.path / RAN).exists()


def test_under_xdist_an_expired_quarantine_entry_is_said_at_the_start(pytester, monkeypatch):
    pytest.importorskip("xdist")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))  # this checkout
    image = bzimage(pytester.path / "vmlinuz-6.9.0-test", "6.9.0-test")
    pytester.makepyfile(test_q=CASE)
    quarantine(pytester.path / "quarantine.toml", expires=datetime.date(2020, 1, 31))
    result = pytester.runpytest_subprocess(*PLUGINS, f"--kernel={image}", "--accel=tcg", "-n", "1")
    out = result.stdout.str()
    said = "quarantine: the entry for test_q.py::test_k expired on 2020-01-31"
    assert out.count(said) == 1 and out.index(said) < out.index("created: 1/1 worker"), out
    assert result.ret == 1, out
