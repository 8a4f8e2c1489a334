"""The fixtures: the kernel under test, its VM (booted once per worker and reused), and
per case the `guest` (call log, scratch tmpfs, cleanup stack, leak check), the
`upper` filesystem on a fault-injectable dm device, a tmpfs `lower`, and
`make_overlay`."""

import os
import re

import pytest

from ..host import kernel as kernel_mod
from ..host.agent_client import HarnessError
from ..host.target import SshTarget, TargetGone
from ..library import tracing
from ..library.devices import Filesystem, ScratchDevice
from ..library.features import prepare_guest, require
from ..library.guest import Guest
from ..library.overlay import Overlay, make_tree
from .known_issues import apply_known_issues
from .session import CASE_KEY, CaseState, state_of
from .timing import BOOT_ACCEL_PROP, BOOT_PROP, announce_boot


@pytest.fixture(scope="session")
def kernel(request):
    """The kernel under test (one per --kernel)."""
    state = state_of(request.config)
    return getattr(request, "param", None) or _stop_on_usage_error(lambda: state.kernels[0])


@pytest.fixture(scope="session")
def vm(kernel, request):
    """A booted VM running `kernel`, shared by the cases of this session."""
    state = state_of(request.config)
    lacking = kernel_mod.missing_options(kernel, ["boot"])
    if lacking:
        pytest.skip(kernel_mod.describe_missing(kernel, lacking) + ": virtme-ng cannot boot it")
    machine = _stop_on_usage_error(lambda: state.vm_for(kernel))
    if not machine.alive():
        _boot(machine, state, single=len(state.kernels) == 1, request=request)
    yield machine
    machine.stop()


def _boot(machine, state, single=True, request=None):
    """(Re)boot a VM. When it cannot boot, stop the run with one clear message (one
    kernel: the recorder keeps it in summary.json as boot_failure), or fail this
    kernel's cases with it (several kernels). In an xdist worker the stop is also the
    session's shouldstop, which the worker hands to the controller: xdist then stops every
    worker and ends the run with the message, instead of taking the worker for crashed
    (session.py sends boot_failure back and makes the status 3)."""
    try:
        with announce_boot(state.config, machine):
            machine.restart() if machine.proc else machine.start()
        state.use(machine).facts = prepare_guest(machine,
                                                 coverage=state.config.getoption("coverage"))
    except TargetGone:  # a --target that stopped answering: this case and the worker's next ones
        machine.stop()
        raise
    except HarnessError as e:
        machine.stop()
        what = (f"the target {machine.spec} gave no session" if isinstance(machine, SshTarget)
                else "the VM did not boot")
        message = f"{machine.kernel.release}: {what}: {e}"
        if single:
            state.boot_failure = message
            if state.worker is not None and request is not None:
                request.session.shouldstop = message
            pytest.exit(message, returncode=3)
        pytest.fail(message, pytrace=False)


def _stop_on_usage_error(resolve):
    """What the plugin resolves on first use (in an xdist worker, in a fixture: a bad
    kernel, --require-accel not met) stops the run with its message, as it would at start-up."""
    try:
        return resolve()
    except pytest.UsageError as e:
        pytest.exit(str(e), returncode=pytest.ExitCode.USAGE_ERROR)


def block_devices(guest):
    """{"loopN (backing file)" or "dm-N (dm name)": (kernel name, dm name or None)} for the
    loop devices with a backing file and the device-mapper devices."""
    found = {}
    for name in guest.must.listdir("/sys/block"):
        if name.startswith("loop"):
            backing = guest.read_file(f"/sys/block/{name}/loop/backing_file")
            if isinstance(backing, bytes):
                found[f"{name} ({backing.decode().strip()})"] = (name, None)
        elif name.startswith("dm-"):
            dm = guest.must.read_file(f"/sys/block/{name}/dm/name").decode().strip()
            found[f"{name} ({dm})"] = (name, dm)
    return found


def _case_dirname(nodeid):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::")[-1])[:60]


@pytest.fixture
def guest(vm, request):
    """The agent of `vm`, for this case: call log, scratch tmpfs, cleanup, leak check."""
    state = state_of(request.config)
    use = state.use(vm)
    if not healthy(vm):  # the last case lost the VM (panic, hang, QEMU killed): boot afresh
        _boot(vm, state, request=request)
    elif request.node.get_closest_marker("fresh_vm") and use.served == vm.boots:
        if not vm.reboots:
            pytest.skip(f"needs a kernel no other case has touched: {vm.name} is a --target "
                        "that is not rebooted without --target-reboot")
        _boot(vm, state, request=request)  # the case asked for a kernel no other case has touched
    use.served = vm.boots
    if vm.boots != use.reported_boots:  # this case waited for a boot: say so in its report
        request.node.user_properties += [(BOOT_PROP, round(vm.timings["ready"], 2)),
                                         (BOOT_ACCEL_PROP, vm.accel.name)]
        use.reported_boots = vm.boots
        if use.facts and use.facts.traced:  # the module's functions, as this kernel has them
            request.node.user_properties.append(
                (tracing.PROP_MODULE_FUNCTIONS, use.facts.traced.as_property()))
    apply_known_issues(request, vm.guest_release)
    path = f"{vm.scratch_root}/{_case_dirname(request.node.nodeid)}"
    g = Guest(vm.agent, release=vm.guest_release, label=vm.kernel.release, vm=vm, scratch=path,
              facts=use.facts)
    house = Guest(vm.agent)  # the harness's own bookkeeping: kept out of the case's call log
    traced = bool(use.facts and use.facts.traced)
    if traced:
        house.must.trace_functions()  # what ran since the last case is no case's
    kmsg = house.must.kmsg_seq()
    request.node.stash[CASE_KEY] = CaseState(
        guest=g, vm=vm, kmsg_start=kmsg, kmsg_checked=kmsg,
        taint_start=int(house.must.read_file("/proc/sys/kernel/tainted")),
        prelude=use.facts.prelude if use.facts else [])
    before_mounts = set(house.mounts())
    before_devs = set(block_devices(house))
    g.must.makedirs(path)
    g.must.mount("ovh-scratch", path, "tmpfs", 0, "size=1g,mode=0755")
    g.defer(_remove_scratch, g, path)
    yield g
    if not healthy(vm):
        return  # the guest is gone: nothing to clean, the error says why
    g.must.chdir("/")
    open_fds = g.must.close_all()  # open files would keep the mounts busy
    errors = g.run_deferred()
    if traced:  # the case's own calls and its cleanup (unmounts, evictions)
        _record_functions(request.node, house.must.trace_functions())
    new_mounts = [m for m in house.mounts() if m not in before_mounts]
    new_devs = {d: v for d, v in block_devices(house).items() if d not in before_devs}
    leaks = [f"mount {m}" for m in new_mounts] + [f"block device {d}" for d in new_devs]
    if leaks:
        _force_cleanup(g, path, new_mounts, new_devs.values())
    problems = errors + leaks
    if problems:
        pytest.fail("the case left things behind in the guest:\n  " + "\n  ".join(problems)
                    + (f"\n  (and fds {open_fds}, now closed)" if open_fds else ""),
                    pytrace=False)


@pytest.fixture
def upper(guest, upper_fs, request):
    """A fresh `upper_fs` filesystem on a dm device (healthy until a case switches it)."""
    require(guest, "loop", "dm", "dm-flakey", upper_fs.split("-")[0])
    dev = ScratchDevice(guest, f"ovh-upper-{os.getpid()}",
                        faults=not request.config.getoption("without_faults")).create()
    return Filesystem(guest, upper_fs, dev, f"{guest.scratch}/upperfs").create()


@pytest.fixture
def lower(guest):
    """A lower directory on the scratch tmpfs with one 64 KiB file, `f`."""
    require(guest, "overlay")
    return make_tree(guest, f"{guest.scratch}/lower", {"f": b"L" * 65536})


@pytest.fixture
def make_overlay(guest, upper, lower):
    """make_overlay(name="ovl", lowers=None, merged=None, **options): an Overlay on the
    case's `upper` filesystem, not mounted yet, over `lower` unless `lowers` names other
    lower directories (top first); `merged` defaults to `<scratch>/<name>.merged`.

    Its upper and work directories are `<name>/upper` and `<name>/work` on `upper`, so
    overlays made without distinct names share one upper directory and one work directory
    (what the shared-upper cases want). Give each overlay its own `name=` to put it on a
    separate upper directory of the same upper filesystem. `options` reach the kernel as
    they are: volatile=True, metacopy="on", index="on", ..."""
    def make(name="ovl", lowers=None, merged=None, **options):
        return Overlay(guest, name, lowers or [lower], upper, merged=merged, **options)
    return make


def _record_functions(item, trace):
    item.user_properties.append((tracing.PROP_FUNCTIONS, " ".join(trace["functions"])))
    if trace["lost"]:
        item.user_properties.append((tracing.PROP_FUNCTIONS_LOST, str(trace["lost"])))


def _remove_scratch(g, path):
    g.must.chdir("/")
    g.must.close_all()
    g.must.umount2(path, 0)
    g.must.rmdir(path)


def _force_cleanup(g, path, mounts, devices):
    """Best effort after a leak, so the next case starts clean: what the case made and
    nothing else (on a --target, the machine's own devices and mounts stay)."""
    for m in sorted(mounts, key=len, reverse=True):
        g.umount2(m, 2)  # MNT_DETACH
    for name, dm in sorted(devices, key=lambda d: d[1] is None):  # dm devices before loops
        if dm is not None:
            g.dm_remove(dm)
        else:
            g.loop_detach(f"/dev/{name}")
    g.run(["rm", "-rf", "--one-file-system", path], check=False)


def healthy(vm):
    return vm.alive() and vm.agent is not None and not vm.agent.broken
