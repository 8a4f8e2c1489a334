"""What a case's report carries beyond pass/fail, added where the case ran (so it
survives pytest-xdist):

- the kernel-log check: a splat or a new taint flag since the case began fails it;
- facts as report properties, which the results layer reads and never parses out
  of prose: `infra_error` (the kind of HarnessError: boot, lost, timeout, agent,
  harness), `reproducer` and `console_log` (paths, for a failed case), and the
  evidence report.html shows: `kernel_log` (the guest's kernel log since the case
  began) or, when the guest is gone, `console_excerpt`;
- the "guest: ..." sections a person reads: kernel, reproducer, dmesg, console.
"""

import re

import pytest

from ..host import splat
from ..host.agent_client import GuestLost, HarnessError
from ..library import repro
from .fixtures import healthy
from .session import CASE_KEY, INFRA_ERROR, infra_error, state_of, uses_harness

KERNEL_LOG, CONSOLE_EXCERPT = "kernel_log", "console_excerpt"


def check_kernel_log(case, policy):
    """Splats logged since the last check (the case's start), as an excerpt or None."""
    agent = case.vm.agent
    recs = agent.request("kmsg", [case.kmsg_checked])
    taint = int(agent.request("read_file", ["/proc/sys/kernel/tainted"]))
    if recs:
        case.kmsg_checked = recs[-1][0]
    found = splat.find_splats(recs, policy, case.taint_start, taint, case.guest.expected_kmsg)
    case.taint_start = taint
    return splat.excerpt(recs, found) if found else None


@pytest.hookimpl(hookwrapper=True)  # outside pytest's xfail handling: a splat is no xfail
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    case = item.stash.get(CASE_KEY, None)
    if case is None:
        if (call.excinfo is not None and isinstance(call.excinfo.value, HarnessError)
                and uses_harness(item)):  # before the case had its guest: e.g. a target gone
            rep.user_properties.append((INFRA_ERROR, call.excinfo.value.kind))
        return
    state = state_of(item.config)
    g, vm = case.guest, case.vm
    if call.excinfo is not None and isinstance(call.excinfo.value, HarnessError):
        # The VM or the harness broke: an error of the run, not a result of the case.
        rep.user_properties.append((INFRA_ERROR, call.excinfo.value.kind))
    elif rep.when in ("call", "teardown") and healthy(vm):
        try:
            found = check_kernel_log(case, state.splat_policy)
        except HarnessError as e:
            found = None
            rep.user_properties.append((INFRA_ERROR, GuestLost.kind))
            rep.longrepr = f"the guest was lost while reading its kernel log: {e}"
            rep.outcome = "failed"
        if found:
            rep.outcome = "failed"
            rep.longrepr = f"kernel splat during the case:\n{found}"
            if hasattr(rep, "wasxfail"):
                del rep.wasxfail
    if rep.failed or (rep.when == "call" and item.config.getoption("save_reproducers")):
        repro_file = _write_reproducer(state, item, case)
    if not rep.failed:
        return
    state.failed_nodes += 1
    rep.user_properties += [("reproducer", str(repro_file)), ("console_log", str(vm.console_log))]
    rep.sections.append(("guest: kernel", f"{vm.kernel.release} ({vm.kernel.image}), "
                                          f"guest reports {g.release}, accel {vm.accel.name}"))
    rep.sections.append((f"guest: calls (reproducer, also in {repro_file})",
                         repro_file.read_text()))
    if healthy(vm):
        try:
            recs = vm.agent.request("kmsg", [case.kmsg_start])
            text = "\n".join(f"[{usec / 1e6:12.6f}] {msg}" for _seq, _lvl, usec, msg in recs[-80:])
            rep.sections.append(("guest: dmesg since the case began", text or "(nothing)"))
            rep.user_properties.append((KERNEL_LOG, text))
        except HarnessError as e:
            rep.sections.append(("guest: dmesg", f"unavailable: {e}"))
    else:
        vm.settle_console()  # a panic may still be reaching the log
    excerpt = vm.console_excerpt()
    if not healthy(vm):  # the guest's own kernel log is out of reach: the console has it
        rep.user_properties.append((CONSOLE_EXCERPT, excerpt))
    rep.sections.append((f"guest: console (excerpt of {vm.console_log})", excerpt))


def _write_reproducer(state, item, case):
    repro_dir = state.run_dir / "reproducers"
    repro_dir.mkdir(parents=True, exist_ok=True)
    path = repro_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[:200] + ".py")
    return repro.write(path, case.guest.log, f"for {item.nodeid} on {case.guest.release}",
                       prelude=case.prelude)


def pytest_report_teststatus(report, config):
    if report.failed and infra_error(report):
        return "error", "E", ("ERROR", {"red": True})
    return None

