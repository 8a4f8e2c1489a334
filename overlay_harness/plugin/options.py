"""Every command-line option, ini setting and marker of the suite, in one place (`pytest
--help`, group "overlay-harness"; `pytest --markers`).

Settings that belong to a repository (the kernel, the accelerator, the upper filesystems,
the results directory, the quarantine file, extra kernel-log rules) can also live in its
pyproject.toml, under [tool.pytest.ini_options] as `overlay_harness_<name>`; the command
line wins over them (a bad value in the file is an error all the same).
Giving any option of the group, or any of these settings, makes the plugin active at
start-up (see session.py); otherwise it stays passive until a test uses its fixtures."""

import argparse
import math
import re
from pathlib import Path

import pytest

from ..host.vng import size_bytes
from ..library.devices import FILESYSTEMS

# Each value is checked when it is read (argparse `type=`, or setting() for the ini file):
# one usage error naming it, what is accepted and an example, before anything boots.

def upper_fs_kinds(text, example="--upper-fs=ext4,xfs"):
    """--upper-fs / overlay_harness_upper_fs: a comma list of FILESYSTEMS, as given."""
    kinds = [k.strip() for k in str(text).split(",")]
    unknown = [k for k in kinds if k not in FILESYSTEMS]
    if unknown:
        what = ", ".join(repr(k) for k in unknown)
        raise argparse.ArgumentTypeError(
            f"unknown upper filesystem {what}" + (f" in {text!r}" if len(kinds) > 1 else "")
            + "; give a comma list of "
            f"{', '.join(FILESYSTEMS)} (e.g. {example})")
    return ",".join(kinds)


def memory_size(text):
    """--vm-memory: a size QEMU takes, with the parser the VM uses (host/vng.py)."""
    ok = re.fullmatch(r"\d+(\.\d+)?[KMGTkmgt]?", str(text).strip())
    if not ok or size_bytes(text) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a memory size: give a positive number with a unit K, M, G "
            "or T (no unit: MiB), e.g. --vm-memory=4G")
    return str(text).strip()


def positive(kind, name, example):
    """An argparse type: a positive, finite number of `kind` (int or float)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            noun = "a positive whole number" if kind is int else "a positive number of seconds"
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun} (e.g. {name}={example})")
        return value
    parse.__name__ = kind.__name__
    return parse


# dest -> (choices, or a check that returns the value or raises argparse.ArgumentTypeError,
# or None; the value when neither the command line nor the ini file gives one)
SETTINGS = {
    "kernel": (None, []),
    "accel": (("auto", "kvm", "tcg"), "auto"),
    "require_accel": (("kvm", "tcg"), None),
    "upper_fs": (upper_fs_kinds, None),
    "results_dir": (None, None),
    "quarantine": (None, None),
    "splats": (None, None),
}
PATH_SETTINGS = {"results_dir", "quarantine", "splats"}  # relative to the ini file's directory
_DEFAULTS = {}  # every option of the group: dest -> its default (to tell when one was given)
_VALUED = set()  # the options of the group that take a value

# The fixtures that make a test a harness test (each needs a VM).
HARNESS_FIXTURES = frozenset({"kernel", "vm", "guest", "upper", "lower", "make_overlay"})


def ini_name(dest):
    return f"overlay_harness_{dest}"


def pytest_addoption(parser):
    g = parser.getgroup("overlay-harness", "overlay-harness VM options")

    def add(name, default=None, **kw):
        g.addoption(name, default=default, **kw)
        _DEFAULTS[name.lstrip("-").replace("-", "_")] = default
        if kw.get("action") not in ("store_true", "store_false"):
            _VALUED.add(name)

    add("--kernel", action="append", default=[], metavar="KERNEL",
        help="bzImage/vmlinuz path, kernel build tree, or installed release "
             "(default: the newest under /boot); repeat to compare kernels")
    add("--accel", choices=["auto", "kvm", "tcg"],
        help="auto (default) probes KVM once per host (cached) and falls back to TCG")
    add("--require-accel", choices=["kvm", "tcg"],
        help="stop the run, with the reason, when the accelerator is not this one "
             "(CI runners that must have KVM: --require-accel kvm)")
    add("--accel-reprobe", action="store_true", default=False, help="redo the cached KVM probe")
    add("--vm-memory", default="2G", type=memory_size, metavar="SIZE",
        help="guest memory: 512M, 4G, ... (default 2G)")
    add("--vm-cpus", type=positive(int, "--vm-cpus", 2), metavar="N",
        help="guest CPUs (default: the host's CPUs shared among the VMs of a run)")
    add("--boot-timeout", type=positive(float, "--boot-timeout", 300), default=180.0, metavar="SECONDS",
        help="seconds for a VM to become ready (default 180)")
    add("--call-timeout", type=positive(float, "--call-timeout", 300), default=120.0, metavar="SECONDS",
        help="seconds one guest call may take before the guest counts as hung")
    add("--upper-fs", metavar="KINDS", type=upper_fs_kinds,
        help=f"comma list of upper filesystems to run ({', '.join(FILESYSTEMS)}); "
             "default: every one a case supports")
    add("--without-faults", action="store_true", default=False,
        help="load no faulty dm table (error windows do nothing): checks that the cases "
             "which expect an errno fail without their fault")
    add("--save-reproducers", action="store_true", default=False,
        help="write every case's reproducer under results/<run>/reproducers "
             "(by default only failing cases get one)")
    add("--results-dir", help="where run directories go (default: <rootdir>/results)")
    add("--quarantine", metavar="FILE",
        help="flaky cases parked with a reason, a link and an expiry date "
             "(default: <rootdir>/quarantine.toml where there is one)")
    add("--splats", metavar="FILE",
        help="more kernel-log rules, added to the harness's own (a TOML file like its "
             "host/splats.toml: [[deny]] name and pattern, [[allow]] pattern and reason)")
    add("--overlay-src", metavar="DIR",
        help="build overlay.ko from DIR (fs/overlayfs, or a kernel tree) against each "
             "kernel under test and load it in the guest instead of the stock module")
    add("--coverage", action="store_true", default=False,
        help="record which functions of the overlay module each case reaches (the "
             "function tracer): coverage.json in the run directory and a summary per kernel")
    add("--overlay-module", metavar="PATH",
        help="load this built overlay.ko in the guest instead of the stock module")
    add("--shard", metavar="I/N",
        help="run part I of N: the collected cases split into N parts of about the same "
             "measured duration (results/shard.py); `python -m overlay_harness.report merge` "
             "puts the parts' results together")
    add("--shard-durations", metavar="FILE",
        help="--shard: the cases' durations from this file (a summary.json, or JSON "
             "{case: seconds}) instead of the earlier whole runs in the results directory")
    add("--overlay-patch", action="append", default=[], metavar="FILE",
        help="a patch series for fs/overlayfs (git format-patch files, a b4 mbox, or diffs; "
             "repeatable, in order) applied onto --overlay-src or the kernel's own source, built "
             "and loaded; outcomes are compared with the same source without it (docs/patch-series.md)")
    add("--overlay-base", action="store_true", default=False,
        help="build overlay.ko from the kernel's own unmodified fs/overlayfs (or --overlay-src) "
             "the way --overlay-patch builds a series: the baseline's run")
    add("--target", action="append", default=[], metavar="ssh://[user@]host[:port]",
        help="run the cases on this running machine over SSH (paramiko) instead of booting a "
             "VM; repeat for one per xdist worker (-n N); see docs/ssh-targets.md")
    add("--target-key", metavar="FILE",
        help="private key for --target (default: the SSH agent's and ~/.ssh's keys)")
    add("--target-reboot", metavar="COMMAND",
        help="shell command that reboots a --target that stopped answering (a power switch, a "
             "cloud CLI); the harness then waits for SSH from a new boot")
    for dest in SETTINGS:
        parser.addini(ini_name(dest), f"overlay-harness: the default of --{dest.replace('_', '-')}",
                      type="linelist" if dest == "kernel" else "string")


def setting(config, dest):
    """A setting's value: the command line's, else the ini file's, else its default."""
    value = config.getoption(dest)
    if value not in (None, []):
        return value
    return ini_setting(config, dest)


def ini_setting(config, dest):
    """A setting's value in the ini file (checked: a usage error names a bad one), else its default."""
    choices, default = SETTINGS[dest]
    raw = config.getini(ini_name(dest))
    if not raw:
        return default
    if callable(choices):
        try:
            raw = choices(raw, example=f'{ini_name(dest)} = "ext4,xfs"')
        except argparse.ArgumentTypeError as e:
            raise pytest.UsageError(f"{ini_name(dest)} in {config.inipath}: {e}") from None
    elif choices and raw not in choices:
        raise pytest.UsageError(f"{ini_name(dest)} = {raw!r} in {config.inipath}: "
                                f"choose one of {', '.join(choices)} "
                                f"(e.g. {ini_name(dest)} = \"{choices[0]}\")")
    if dest in PATH_SETTINGS and config.inipath is not None:
        return str(Path(config.inipath).parent / raw)
    return raw


def given(config):
    """The options of the group given on the command line and the settings given in the
    ini file, as the user wrote them ([] when none: the plugin stays passive)."""
    found = [f"--{dest.replace('_', '-')}" for dest, default in _DEFAULTS.items()
             if config.getoption(dest) != default]
    found += [ini_name(dest) for dest in SETTINGS if config.getini(ini_name(dest))]
    return found


MARKERS = [
    ("volatile", "overlay volatile mounts"), ("errseq", "writeback error sequence semantics"),
    ("syncfs", "syncfs error reporting"), ("shared_upper", "several overlays on one upper fs"),
    ("metacopy", "metadata-only copy-up"), ("lower_changes", "lower layers changed while mounted"),
    ("nfs", "NFS lower layers"),
    ("whiteout", "whiteouts and opaque directories"), ("readdir", "readdir of merged directories"),
    ("rename", "renaming directories and redirects"),
    ("copyup_metadata", "what copy-up preserves (owner, mode, times, xattrs, symlinks)"),
    ("inode_numbers", "st_ino, st_dev and d_ino, with and without xino"),
    ("hardlinks_index", "hard links with and without the inodes index"),
    ("file_operations", "file, inode, xattr and super operations through the overlay "
     "(fallocate, copy_file_range, FICLONE, AIO, inode flags, statfs, remount, ...)"),
    ("file_handles", "NFS export: file handles of overlay objects (nfs_export=on)"),
    ("refusals", "what overlayfs refuses or falls back from at mount time (docs/refusals.md)"),
    ("new_features", "features of kernels newer than 6.1 (skipped, named, where absent)"),
    ("vm", "boots a VM"),
    ("fresh_vm", "the case needs a kernel no other case has touched (module state, "
     "a clean log): the VM is rebooted before it unless it is fresh already"),
    ("upper_fs(*kinds)", "upper filesystems the case supports (default: ext4)"),
    ("known_issue(reason, since=None, fixed=None, commit=None, upper_fs=None)",
     "the kernel disagrees with the documented behaviour the case asserts: a strict xfail "
     "on kernels in [since, fixed) (and only on the listed upper filesystems)"),
]


def check_path_words(args, invocation_dir):
    """A path given to one of the group's options as a separate word is a usage error.
    pytest picks its root directory and reads pyproject.toml from the command line's
    existing paths before any plugin has declared its options, so it takes that path for
    a test path: outside the project, it loses the project's settings (testpaths,
    xfail_strict, addopts) and collects everything under the current directory."""
    for opt, value in zip(args, args[1:], strict=False):
        if opt in _VALUED and (Path(invocation_dir) / value).exists():
            raise pytest.UsageError(
                f"{opt} {value}: write {opt}={value} (one word). pytest chooses its root "
                "directory and configuration from the command line's paths before it knows "
                f"{opt}, so it would take {value} for a test path.")


@pytest.hookimpl(tryfirst=True)  # before session.py resolves the kernels these options name
def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # xdist workers get their arguments from the controller
        check_path_words([str(a) for a in config.invocation_params.args],
                         config.invocation_params.dir)
    for name, doc in MARKERS:
        config.addinivalue_line("markers", f"{name}: {doc}")
    for dest in SETTINGS:
        ini_setting(config, dest)  # a bad value in the ini file (even one the command line overrides)
