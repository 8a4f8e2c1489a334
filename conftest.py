# Loads the harness plugins for both the kernel cases (cases/) and the harness's own tests (tests/).
pytest_plugins = ["overlay_harness.plugin", "overlay_harness.results.recorder"]
