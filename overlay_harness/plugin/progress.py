"""What the harness is doing before and between cases (fetching, building the overlay
module, probing KVM, booting): records of the standard logging module under the
"overlay_harness" logger, and the same line on pytest's terminal as pytest users expect
it: shown by default, kept out by -q, and not printed twice when live logging
(--log-cli-level=INFO) already shows the record."""

import logging
import sys

LOG = logging.getLogger("overlay_harness")


def live_log_shows_info(config):
    """Whether pytest's live logging prints INFO records (--log-cli-level / log_cli_level)."""
    level = config.getoption("log_cli_level", None) or config.getini("log_cli_level")
    if not level:
        return False
    number = logging.getLevelName(str(level).upper()) if not str(level).isdigit() else int(level)
    return isinstance(number, int) and number <= logging.INFO


def live_log_attached(config):
    """Whether live logging's handler is on the root logger now: from session start on;
    not yet in pytest_configure, where the overlay module is built."""
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    handler = getattr(plugin, "log_cli_handler", None)
    return handler is not None and handler in logging.getLogger().handlers


def terminal(config):
    """The terminal reporter progress lines go to, or None (-q, no terminal, an xdist worker)."""
    if hasattr(config, "workerinput") or config.get_verbosity() < 0:
        return None
    return config.pluginmanager.get_plugin("terminalreporter")


def new_line(tr):
    """Start a line of our own, also after xdist's progress dots (which pytest's
    ensure_newline does not know of)."""
    tr.ensure_newline()
    if getattr(getattr(tr, "_tw", None), "width_of_current_line", 0):
        tr.write("\n")


def reporter(config, name):
    """log(msg) for host code that reports progress (fetch, modbuild, accel): an INFO record
    of the logger overlay_harness.<name>, and the line on the terminal (stderr before the
    terminal reporter exists) unless -q, or live logging shows the record itself."""
    logger = LOG.getChild(name)

    def log(msg):
        logger.info(msg)
        if hasattr(config, "workerinput") or config.get_verbosity() < 0:
            return
        if live_log_shows_info(config) and live_log_attached(config):
            return
        tr = terminal(config)
        if tr is None:
            print(msg, file=sys.stderr, flush=True)
            return
        new_line(tr)
        tr.write_line(msg)
    return log
