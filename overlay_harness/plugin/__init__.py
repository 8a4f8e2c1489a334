"""Layer 4, the pytest layer: options, per-process state, fixtures, known issues, and
what a case's report carries (splat check, sections, facts as properties).

Load it with `-p overlay_harness.plugin` (conftest.py does); its parts:

    options.py       every command-line option and marker (one place)
    session.py       HarnessState (kernels, accelerator, run directory, VMs), the stash
                     keys, the report header, parametrisation, end of session
    fixtures.py      kernel, vm, guest, upper, lower, make_overlay
    known_issues.py  known_issue markers -> strict xfails on the kernels in range;
                     the quarantine file (flaky cases parked, with an expiry date)
    evidence.py      makereport: kernel-log check, infra_error / reproducer /
                     console_log / kernel_log properties, the "guest: ..." sections
    series.py        --overlay-patch: a series built from a base, and its baseline run
    timing.py        where the time went (boots, set-up, body, teardown), per kernel;
                     the "booting ... ready in" line
"""

pytest_plugins = [
    "overlay_harness.plugin.options",
    "overlay_harness.plugin.series",  # before session.py, which imports it
    "overlay_harness.plugin.session",
    "overlay_harness.plugin.known_issues",  # before fixtures.py, which imports it
    "overlay_harness.plugin.fixtures",
    "overlay_harness.plugin.evidence",
]
