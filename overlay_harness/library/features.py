"""Guest preparation and kernel features: what a guest is set up with after each boot
(sysctls, preloaded modules), which features its kernel has, and `require`, which
skips a case naming what the kernel lacks."""

from dataclasses import dataclass

import pytest

from ..host import kernel as kernel_mod
from ..host import modbuild
from ..host.agent_client import HarnessError
from . import tracing
from .guest import Guest, StepFailed

# Kernel features the cases need, by the module that provides them.
FEATURES = {
    "overlay": "overlay", "loop": "loop", "dm": "dm_mod", "dm-flakey": "dm_flakey",
    "ext4": "ext4", "xfs": "xfs", "btrfs": "btrfs", "nfs": "nfsd",
}
# Loaded at boot: their control devices must exist before the first case. The rest load
# on first use (mount, dm table), so a run pays only for what its cases use.
PRELOAD = ["loop", "dm_mod"]

# Writeback only when a case asks for it (sync, fsync, syncfs): no periodic flusher
# writing dirty pages back before or after an error window.
SYSCTLS = {"vm/dirty_writeback_centisecs": "0", "vm/dirty_expire_centisecs": "360000"}


def guest_modules(g):
    """Module names the guest kernel has, built in or loadable (from modules.builtin/.dep)."""
    names = set()
    base = f"/lib/modules/{g.uname()[2]}"
    for index in ("modules.builtin", "modules.dep"):
        text = g.read_file(f"{base}/{index}")
        if isinstance(text, bytes):
            for line in text.decode(errors="replace").splitlines():
                path = line.split(":", 1)[0]
                names.add(path.rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_"))
    return names


@dataclass
class GuestFacts:
    """What prepare_guest found out about a freshly booted guest (once per boot)."""

    prelude: list    # the calls that prepared it, replayed at the top of every reproducer
    modules: set     # module names its kernel has, built in or loadable
    features: dict   # FEATURES name -> whether the kernel has it
    traced: tracing.ModuleFunctions | None = None  # --coverage: the overlay module's functions


def prepare_guest(machine, coverage=False):
    """Set the guest of a booted VM up for cases; what its kernel has, as GuestFacts.
    With `coverage`, the function tracer records the overlay module's functions."""
    g = Guest(machine.agent)
    for key, value in SYSCTLS.items():
        path = f"/proc/sys/{key}"
        machine.restore_at_stop(path, Guest(machine.agent).must.read_file(path))  # a target's stays
        g.must.write_file(path, value.encode())
    g.run(["modprobe", "-a", *PRELOAD], check=False)
    modules = guest_modules(g)  # read once per boot: cases ask about other modules too
    if not kernel_mod.config_known(machine.kernel):
        config_from_guest(Guest(machine.agent), machine.kernel)
    if machine.kernel.overlay_module:  # --overlay-src/--overlay-module: is it the one loaded?
        try:
            modbuild.check_in_guest(Guest(machine.agent), machine.kernel.overlay_module)
        except modbuild.ModuleError as e:
            raise HarnessError(str(e)) from None
    traced = None
    if coverage and "overlay" in modules:
        try:
            traced = tracing.start(Guest(machine.agent))
        except (RuntimeError, StepFailed) as e:
            raise HarnessError(f"--coverage: {e}") from None
    return GuestFacts(prelude=list(g.log), modules=modules,
                      features={name: module in modules for name, module in FEATURES.items()},
                      traced=traced)


def config_from_guest(g, kernel):
    """A kernel that came without its config (a bare image): take the one the running
    kernel carries (/proc/config.gz, CONFIG_IKCONFIG_PROC) or /boot/config-<release>
    in the guest, so that skips still name the options it lacks."""
    import gzip
    packed = g.read_file("/proc/config.gz")
    text = gzip.decompress(packed).decode(errors="replace") if isinstance(packed, bytes) else None
    where = "/proc/config.gz"
    if text is None:
        where = f"/boot/config-{kernel.release}"
        plain = g.read_file(where)
        text = plain.decode(errors="replace") if isinstance(plain, bytes) else None
    if text:
        kernel.config = kernel_mod.parse_config_text(text)
        kernel.config_path = f"the guest's {where}"


def require(guest, *features):
    """Skip the case, naming what is missing, unless the guest kernel has `features`:
    first by the kernel's config (naming the CONFIG_ options), then by what the guest
    could load."""
    kernel = guest.vm.kernel
    known = kernel_mod.fragment_features()
    lacking = kernel_mod.missing_options(kernel, [f for f in features if f in known])
    if lacking:
        pytest.skip(kernel_mod.describe_missing(kernel, lacking))
    have = guest.facts.features
    missing = [f for f in features if not have.get(f)]
    if missing:
        pytest.skip(f"kernel {guest.vm.kernel.release} lacks {', '.join(missing)}")


def require_version(guest, since, feature):
    """Skip the case, naming the feature, on a guest kernel older than `since` (a version
    tuple such as (6, 8)): for behaviour the documents date by kernel version."""
    if kernel_mod.version(guest.release)[:len(since)] < tuple(since):
        pytest.skip(f"kernel {guest.release} predates {feature} "
                    f"(v{'.'.join(map(str, since))})")
