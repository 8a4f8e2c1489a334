"""Known issues and quarantined cases.

- known_issue markers: a documented behaviour the kernel does not follow becomes a
  strict xfail on the kernels in range (and the upper filesystems named).
- the quarantine file (quarantine.toml, --quarantine): flaky cases parked, each with a
  reason, a link and an expiry date, on an optional kernel range. A quarantined case
  still runs; when it fails (not a harness error) its report is marked with the
  `quarantine` property and counts as "quarantined", not as a failure. An entry past its
  expiry date quarantines nothing, and fails the run when a case it names ran.

    [[quarantine]]
    case = "cases/test_x.py::test_y"   # a node id; without [...] every parametrisation
    reason = "fails one run in twenty under TCG"
    link = "https://example.org/issue/1"
    expires = 2027-01-31                # a TOML date
    since = "6.12"                      # optional kernel range [since, fixed)
    fixed = "6.14"
"""

import datetime
import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..host.agent_client import HarnessError
from ..host.kernel import version as kernel_version
from ..library.devices import FILESYSTEMS
from .options import setting
from .session import collection_usage_error, infra_error, kernel_of, state_of, uses_harness

PROP_QUARANTINE = "quarantine"
PROP_EXPIRED = "quarantine_expired"  # an entry past its date names this case
QUARANTINE_FILE = "quarantine.toml"


BOUND = re.compile(r"\d+\.\d+(\.\d+)?(-rc\d+)?")  # what a kernel range's since/fixed may be
KNOWN_ISSUE_KEYS = {"since", "fixed", "commit", "upper_fs"}


def bound_problem(name, value, assign="="):
    """Why `value` is not a kernel range bound (`since`, `fixed`), or None. A bound that
    named no version would compare as 0.0.0: a range that covers every kernel or none."""
    if value is None:
        return None
    example = f'e.g. {name}{assign}"6.12"'
    if not isinstance(value, str):
        return (f"{name}{assign}{value!r} is a {type(value).__name__}: write the version as a "
                f"string ({example}; a number would make 6.10 the same as 6.1)")
    if not BOUND.fullmatch(value):
        return (f"{name}{assign}{value!r} is not a kernel version: write major.minor[.patch] "
                f"or major.minor-rcN, without a leading v ({example})")
    return None


def known_issue_problems(mark):
    """What is wrong with a known_issue marker's arguments (a list of phrases, [] when none)."""
    found = []
    if len(mark.args) != 1 or not isinstance(mark.args[0], str) or not mark.args[0].strip():
        found.append('the first argument must be the reason, a string '
                     '(e.g. known_issue("returns EIO, documented ENOSPC", since="6.8"))')
    unknown = set(mark.kwargs) - KNOWN_ISSUE_KEYS
    if unknown:
        found.append(f"unknown keywords {', '.join(sorted(unknown))} "
                     f"(known: {', '.join(sorted(KNOWN_ISSUE_KEYS))})")
    found += [p for p in (bound_problem(k, mark.kwargs.get(k)) for k in ("since", "fixed")) if p]
    only_fs = mark.kwargs.get("upper_fs")
    if only_fs is not None:
        kinds = [only_fs] if isinstance(only_fs, str) else list(only_fs)
        if not kinds or any(k not in FILESYSTEMS for k in kinds):
            found.append(f"upper_fs={only_fs!r}: give a list of {', '.join(FILESYSTEMS)} "
                         '(e.g. upper_fs=["xfs"])')
    return found


def in_range(release, since=None, fixed=None):
    """Whether a kernel release lies in [since, fixed) (an open end is no bound)."""
    version = kernel_version(release)
    return not ((since and version < kernel_version(since)) or (fixed and version >= kernel_version(fixed)))


def apply_known_issues(request, release):
    """Turn known_issue markers that apply to this kernel (and upper fs) into strict xfails."""
    params = getattr(request.node, "callspec", None)
    fs = params.params.get("upper_fs") if params else None
    for mark in request.node.iter_markers("known_issue"):
        since, fixed = mark.kwargs.get("since"), mark.kwargs.get("fixed")
        only_fs = mark.kwargs.get("upper_fs")
        if not in_range(release, since, fixed):
            continue
        if only_fs and fs not in only_fs:
            continue
        # raises=AssertionError: only a wrong errno or value is the known issue; a
        # harness error or a failed set-up step still fails the case.
        request.node.add_marker(pytest.mark.xfail(
            reason=f"known kernel issue ({span(mark)}): {mark.args[0]}", strict=True,
            raises=AssertionError))


def kernel_range(since, fixed):
    """A kernel range [since, fixed) in words: "kernels 5.11 to before 6.13"."""
    return f"kernels {since or 'any'} to {'before ' + fixed if fixed else 'now'}"


def span(mark):
    """Where a known_issue marker applies: "kernels 5.11 to before 6.13; commit 150c174a6053"."""
    since, fixed, commit = (mark.kwargs.get(k) for k in ("since", "fixed", "commit"))
    return kernel_range(since, fixed) + (f"; commit {commit}" if commit else "")


@dataclass(frozen=True)
class Quarantine:
    case: str
    reason: str
    link: str
    expires: datetime.date
    since: str | None = None
    fixed: str | None = None

    def names(self, nodeid):
        return self.case in (nodeid, nodeid.split("[", 1)[0])

    def covers(self, nodeid, release, today):
        return self.names(nodeid) and today <= self.expires and in_range(release, self.since, self.fixed)

    def describe(self):
        """Reason, link, expiry date and kernel range, in words."""
        kernels = f"; {kernel_range(self.since, self.fixed)}" if self.since or self.fixed else ""
        return f"{self.reason} ({self.link}; until {self.expires.isoformat()}{kernels})"


def load_quarantine(path):
    """The entries of a quarantine file; ValueError naming the file and entry when one is bad."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"quarantine file {path}: {e}") from None
    entries = []
    for i, raw in enumerate(data.get("quarantine", []), 1):
        where = f"quarantine file {path}, entry {i} ({raw.get('case', 'no case')})"
        unknown = set(raw) - {"case", "reason", "link", "expires", "since", "fixed"}
        missing = [k for k in ("case", "reason", "link", "expires") if not raw.get(k)]
        if unknown or missing:
            raise ValueError(f"{where}: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"unknown keys {', '.join(sorted(unknown))}"] if unknown else [])))
        if type(raw["expires"]) is not datetime.date:
            raise ValueError(f"{where}: expires must be a date (expires = 2027-01-31)")
        for key in ("since", "fixed"):
            problem = bound_problem(key, raw.get(key), assign=" = ")
            if problem:
                raise ValueError(f"{where}: {problem}")
        entries.append(Quarantine(**raw))
    if set(data) - {"quarantine"}:
        raise ValueError(f"quarantine file {path}: only [[quarantine]] entries belong there")
    return entries


QUARANTINE_KEY = pytest.StashKey[list]()


def quarantine_of(config):
    """The entries of --quarantine / overlay_harness_quarantine, else of <rootdir>/quarantine.toml
    where there is one (read once)."""
    entries = config.stash.get(QUARANTINE_KEY, None)
    if entries is None:
        path = setting(config, "quarantine")
        default = Path(config.rootpath) / QUARANTINE_FILE
        if path is None and default.is_file():
            path = default
        try:
            entries = load_quarantine(path) if path else []
        except ValueError as e:
            raise pytest.UsageError(str(e)) from None
        config.stash[QUARANTINE_KEY] = entries
    return entries


@pytest.hookimpl(trylast=True)  # after session.py's, which decides whether the run is active
def pytest_configure(config):
    if state_of(config).active:
        quarantine_of(config)  # a bad file is one usage error at start-up
    if not hasattr(config, "workerinput"):  # the controller (or the only process) reports
        config.pluginmanager.register(Expiry(config), "overlay-harness-quarantine")


DESELECTED_KEY = pytest.StashKey[list]()


def pytest_deselected(items):
    if items:
        config = items[0].config
        config.stash.setdefault(DESELECTED_KEY, []).extend(i.nodeid for i in items)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """Read only in a run that uses the harness (a passive plugin leaves another project's
    quarantine.toml alone). A bad file, an entry that names no case of a file collected (or
    no file at all), or a bad known_issue marker is one usage error before any test runs."""
    harness = [i for i in items if uses_harness(i)]
    if not harness:
        return
    problem = _collection_problem(config, items, harness)
    if problem:
        collection_usage_error(session, items, problem)


def _collection_problem(config, items, harness):
    """The first bad known_issue marker or quarantine entry, in words, or None."""
    for item in harness:
        for mark in item.iter_markers("known_issue"):
            problems = known_issue_problems(mark)
            if problems:
                return f"{item.nodeid}: known_issue marker: {'; '.join(problems)}"
    collected = [i.nodeid for i in items] + config.stash.get(DESELECTED_KEY, [])
    for entry in quarantine_of(config):
        file = entry.case.split("::", 1)[0]
        where = f"quarantine entry {entry.case!r}"
        if not (Path(config.rootpath) / file).exists():
            return (f"{where}: no file {file} under {config.rootpath} (a case is a node id, "
                    "e.g. case = \"cases/test_volatile.py::test_fsync\")")
        in_file = [n for n in collected if n.startswith(file + "::")]
        if in_file and not any(entry.names(n) for n in in_file):
            near = difflib.get_close_matches(entry.case, {n.split("[", 1)[0] for n in in_file}, n=1)
            return f"{where}: no such case in {file}" + (f" (did you mean {near[0]!r}?)" if near else "")
    return None


EXPIRY_SAID = pytest.StashKey[bool]()


def _expired_lines(config):
    """Entries past their date, said once at the start: they quarantine nothing."""
    if config.stash.get(EXPIRY_SAID, False):
        return None
    config.stash[EXPIRY_SAID] = True
    today = datetime.date.today()
    return [f"quarantine: the entry for {e.case} expired on {e.expires.isoformat()}: it quarantines "
            "nothing, and the run fails when the case runs (remove or renew it)"
            for e in quarantine_of(config) if e.expires < today]


def pytest_report_header(config):
    """In the header of a run active from the start (an xdist controller collects nothing)."""
    return _expired_lines(config) if state_of(config).active else None


def pytest_report_collectionfinish(config, start_path, items):
    """... else once collection made the run active."""
    return _expired_lines(config) if any(uses_harness(i) for i in items) else None


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # the outermost: sees the splat check's verdict
def pytest_runtest_makereport(item, call):
    """A failed case (not a harness error) that an entry in force covers on this kernel
    is quarantined: reported apart, not failing the run."""
    outcome = yield
    rep = outcome.get_result()
    kernel = kernel_of(item) if rep.when == "call" else None
    if kernel is None:
        return
    today = datetime.date.today()
    entries = quarantine_of(item.config)
    for entry in entries:
        if entry.expires < today and entry.names(item.nodeid):
            rep.user_properties.append((PROP_EXPIRED, f"{entry.case}: {entry.describe()}"))
    harness_broke = call.excinfo is not None and isinstance(call.excinfo.value, HarnessError)
    if not rep.failed or harness_broke or infra_error(rep) or hasattr(rep, "wasxfail"):
        return
    for entry in entries:
        if entry.covers(item.nodeid, kernel.release, today):
            rep.outcome = "skipped"
            rep.wasxfail = f"quarantined: {entry.describe()}"
            rep.user_properties.append((PROP_QUARANTINE, entry.describe()))
            return


class Expiry:
    """In the process that reports: quarantine entries past their date whose case ran (the
    `quarantine_expired` property, set where the case ran)."""

    def __init__(self, config):
        self.config = config
        self.expired = {}  # entry's description -> a node id it names

    def pytest_runtest_logreport(self, report):
        for name, value in report.user_properties:
            if name == PROP_EXPIRED:
                self.expired.setdefault(value, report.nodeid)

    def pytest_sessionfinish(self, session):
        if self.expired and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        quarantined = tr.stats.get("quarantined", [])
        if quarantined:
            tr.write_sep("=", f"{len(quarantined)} quarantined (failed, not counted)", yellow=True)
            for r in quarantined:
                tr.write_line(f"QUARANTINED {r.nodeid}: {dict(r.user_properties)[PROP_QUARANTINE]}")
        if self.expired:
            tr.write_sep("=", f"{len(self.expired)} expired quarantine entr"
                              f"{'y' if len(self.expired) == 1 else 'ies'}", red=True, bold=True)
            for entry, nodeid in self.expired.items():
                tr.write_line(f"EXPIRED quarantine of {entry} (ran as {nodeid}): remove the entry "
                              "or renew it", red=True)


def pytest_report_teststatus(report, config):
    if report.when == "call" and report.skipped and PROP_QUARANTINE in dict(report.user_properties):
        return "quarantined", "Q", ("QUARANTINED", {"yellow": True})
    return None
