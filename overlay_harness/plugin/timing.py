"""Where the time goes: VM boots, and each case's set-up, body and teardown; printed at
the end of the run and kept as results/<run>/timing.json."""

import json


class TimeKeeper:
    """Where the time goes: VM boots, and each case's set-up, body and teardown.

    Registered as a plugin so that it sees every report, in the xdist controller too."""

    def __init__(self, state):
        self.state = state

    def pytest_runtest_logreport(self, report):
        if report.when not in self.state.phase_times:
            return
        seconds = report.duration
        if report.when == "setup":
            boot = dict(report.user_properties).get("vm_boot_s")
            if boot:
                self.state.boot_times.append(boot)
                seconds = max(0.0, seconds - boot)
        self.state.phase_times[report.when].append(seconds)

    def pytest_sessionfinish(self, session):
        st = self.state
        if st.boot_times and not hasattr(session.config, "workerinput"):
            st.run_dir.mkdir(parents=True, exist_ok=True)
            (st.run_dir / "timing.json").write_text(json.dumps(
                {"boots_s": st.boot_times, "phases_s": st.phase_times}, indent=1))

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
