"""Where the time goes: VM boots, and each case's set-up, body and teardown, in all and per
kernel; printed at the end of the run and kept as results/<run>/timing.json.

While a VM boots, the terminal says so: "booting 6.1.0-56-amd64 (tcg) ... ready in 32.4 s",
live where the VM boots in pytest's own process. An xdist worker's output does not reach
the terminal, so there the controller prints the same line, with the worker's id, when
the report of the case that waited for the boot arrives, with the accelerator the worker
booted under (the controller of a run that its workers made active knows none). `-q`
keeps it quiet.

The same goes to the `overlay_harness.boot` logger (INFO; WARNING for a VM that did not
boot): pytest's live logging (--log-cli-level=INFO) shows it instead of the terminal line,
and a failing case's "Captured log setup" has the boot it waited for."""

import contextlib
import json
import logging

from .progress import live_log_shows_info, new_line, terminal
from .session import KERNEL_PROP

BOOT_PROP = "vm_boot_s"  # on the set-up report of the case that waited for a boot
BOOT_ACCEL_PROP = "vm_accel"  # ... and the accelerator of that boot
PHASES = ("setup", "call", "teardown")
LOG = logging.getLogger("overlay_harness.boot")


def boot_line(kernel, accel, seconds=None, worker=None):
    text = f"{f'[{worker}] ' if worker else ''}booting {kernel}{f' ({accel})' if accel else ''} ..."
    return text if seconds is None else f"{text} ready in {seconds:.1f} s"


@contextlib.contextmanager
def announce_boot(config, vm):
    """Around a boot of `vm`: its kernel and accelerator on the terminal, then the time
    to ready (vm.timings["ready"], what the case's report carries as vm_boot_s)."""
    LOG.info(boot_line(vm.kernel.label, vm.accel.name))
    tr = None if live_log_shows_info(config) else terminal(config)
    if tr is None:
        ready = None
        try:
            yield
            ready = vm.timings.get("ready")
        finally:
            _log_ready(vm, ready)
        return
    capman = config.pluginmanager.get_plugin("capturemanager")

    def uncaptured():
        return capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()

    with uncaptured():
        new_line(tr)
        tr.write(boot_line(vm.kernel.label, vm.accel.name), flush=True)
    ready = None
    try:
        yield
        ready = vm.timings.get("ready")
    finally:
        with uncaptured():
            tr.write_line(f" ready in {ready:.1f} s" if ready is not None else " did not boot")
        _log_ready(vm, ready)


def _log_ready(vm, ready):
    if ready is not None:
        LOG.info("%s: ready in %.1f s", vm.kernel.label, ready)
    else:
        LOG.warning("%s: did not boot", vm.kernel.label)


def timing_of(state):
    """timing.json's content: boots and phase times in all, and per kernel."""
    return {"boots_s": state.boot_times, "phases_s": state.phase_times,
            "kernels": state.kernel_times}


class TimeKeeper:
    """Where the time goes: VM boots, and each case's set-up, body and teardown.

    Registered as a plugin so that it sees every report, in the xdist controller too."""

    def __init__(self, state):
        self.state = state

    def pytest_runtest_logreport(self, report):
        if report.when not in self.state.phase_times:
            return
        props = dict(report.user_properties)
        kernel = props.get(KERNEL_PROP)
        per = self.state.kernel_times.setdefault(
            kernel, {"boots_s": [], "phases_s": {p: [] for p in PHASES}}) if kernel else None
        seconds = report.duration
        if report.when == "setup":
            boot = props.get(BOOT_PROP)
            if boot:
                self.state.boot_times.append(boot)
                if per is not None:
                    per["boots_s"].append(boot)
                seconds = max(0.0, seconds - boot)
                worker = getattr(getattr(report, "node", None), "workerinput", {}).get("workerid")
                tr = terminal(self.state.config)
                if worker and tr is not None:  # booted in an xdist worker: say it here
                    new_line(tr)
                    # never state.accel here: a passive controller would probe for one
                    accel = props.get(BOOT_ACCEL_PROP) or getattr(self.state.known_accel, "name", None)
                    tr.write_line(boot_line(kernel, accel, boot, worker))
        self.state.phase_times[report.when].append(seconds)
        if per is not None:
            per["phases_s"][report.when].append(seconds)

    def pytest_sessionfinish(self, session):
        st = self.state
        if st.boot_times and not hasattr(session.config, "workerinput"):
            st.run_dir.mkdir(parents=True, exist_ok=True)
            (st.run_dir / "timing.json").write_text(json.dumps(timing_of(st), indent=1))

    def pytest_terminal_summary(self, terminalreporter):
        st = self.state
        if not st.boot_times:
            return
        n = len(st.phase_times["call"])
        tot = {k: sum(v) for k, v in st.phase_times.items()}
        med = {k: (sorted(v)[len(v) // 2] if v else 0.0) for k, v in st.phase_times.items()}
        tr = terminalreporter
        tr.section("overlay-harness: where the time went")
        tr.line(f"{len(st.boot_times)} VM boot(s): {sum(st.boot_times):.1f} s "
                f"(median {sorted(st.boot_times)[len(st.boot_times) // 2]:.1f} s to ready)")
        tr.line(f"{n} cases: set-up {tot['setup']:.1f} s, body {tot['call']:.1f} s, "
                f"teardown {tot['teardown']:.1f} s; per case median: set-up {med['setup']:.2f} s, "
                f"body {med['call']:.2f} s, teardown {med['teardown']:.2f} s")
