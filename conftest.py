# Loads the harness plugins for both the kernel cases (cases/) and the harness's own tests (tests/)
# where the package's pytest11 entry points do not (a run with PYTHONPATH=. and no install); the
# entry points have the modules' names, so where both apply nothing loads twice.
pytest_plugins = ["overlay_harness.plugin", "overlay_harness.results.recorder"]
