"""overlay-harness: overlayfs and VFS regression cases on real kernels under QEMU.

Where code runs, and what it may import: each layer imports only the layers above it
in this list (tests/test_layers.py reads the import graph and fails on any other).

  1 in_guest/   runs INSIDE the VM: stdlib-only scripts started as `python3 -I -S FILE`
                (the agent, the NFS/netns helper, the copy-up race); imports nothing
                from this package
  2 host/       the host's VM runtime: which kernel (kernel.py), KVM or TCG (accel.py),
                starting vng under a reaper (vng.py, reaper.py), one VM (vm.py), a
                machine it does not boot, over SSH (target.py), the agent's host end
                (agent_client.py), the kernel-log policy (splat.py), what the machine
                lacks (preflight.py)
  3 library/    the case library: Guest (each agent call a method), scratch devices and
                faults, overlays, the NFS lower, kernel features and `require`,
                reproducers
  4 plugin/     the pytest layer: options, per-run and per-case state, fixtures, known
                issues and the quarantine, a report's evidence (the `pytest11` entry point,
                or `-p overlay_harness.plugin`)
  5 results/    outcomes as data, their renderings, and the recorder plugin that writes
                summary.json and JUnit evidence (`-p overlay_harness.results.recorder`)
  6 tools       fetch.py, report.py, bisect.py, catalogue.py, preflight.py, apiref.py:
                `python -m overlay_harness.TOOL`

Cases import from this package only: `from overlay_harness import Overlay, require, ...`.
The names below are loaded on first use, so `python -m overlay_harness.host.reaper`
or a tool pays only for what it imports itself.
"""

import importlib

# The case API: name -> the module that defines it.
_API = {
    "Errno": "host.agent_client", "is_errno": "host.agent_client",
    "HarnessError": "host.agent_client", "GuestLost": "host.agent_client",
    "GuestTimeout": "host.agent_client",
    "Guest": "library.guest", "StepFailed": "library.guest", "CallFailed": "library.guest",
    "CommandFailed": "library.guest",
    "ScratchDevice": "library.devices", "Filesystem": "library.devices", "LowerFs": "library.devices",
    "FILESYSTEMS": "library.devices", "WHOLE_DEVICE_FAULTS": "library.devices",
    "Overlay": "library.overlay", "make_tree": "library.overlay", "read_tree": "library.overlay",
    "create_file": "library.overlay", "posix_acl": "library.overlay",
    "NfsLower": "library.nfs", "skip_unless_nfs": "library.nfs",
    "expect_kmsg": "library.kmsg",
    "require": "library.features", "require_version": "library.features",
    "guest_script": "in_guest",
}
_RENAMED = {"guest_script": "script"}

__all__ = sorted(_API)


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_API[name]}")
    value = getattr(module, _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
