"""Per-process state of a run (kernels, accelerator, run directory, VMs) and of a case,
kept in pytest's stash; the report header, parametrisation by kernel and upper
filesystem, and the end of the session (VMs stopped, logs dropped when all passed)."""

import dataclasses
import importlib.metadata
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..host import accel as accel_mod
from ..host import kernel as kernel_mod
from ..host import modbuild, splat
from ..host.vm import VM
from ..host.vng import mem_available_bytes, size_bytes
from ..library.devices import FILESYSTEMS
from ..library.features import GuestFacts
from ..library.guest import Guest


@dataclass
class VmUse:
    """What the plugin keeps about one VM beside the VM itself (which knows no cases)."""

    facts: GuestFacts | None = None  # prepare_guest's findings for the current boot
    served: int | None = None        # the boot the last case ran on
    reported_boots: int = 0          # the last boot whose time a case's report carries


@dataclass
class CaseState:
    """One case's guest and where its kernel log and taint stood when it began."""

    guest: Guest
    vm: VM
    kmsg_start: int                  # kernel log sequence number when the case began
    kmsg_checked: int                # ... and when it was last checked for splats
    taint_start: int
    prelude: list = field(default_factory=list)  # the calls that prepared the guest


class HarnessState:
    """Per-process state: kernels, accelerator, run directory, VMs."""

    def __init__(self, config):
        self.config = config
        opt = config.getoption
        specs = opt("kernel") or [None]
        try:
            self.kernels = [kernel_mod.resolve(s) for s in specs]
        except kernel_mod.KernelError as e:
            raise pytest.UsageError(str(e)) from None
        self._accel = None
        base = Path(opt("results_dir") or Path(config.rootpath) / "results")
        worker = getattr(config, "workerinput", None)
        run_id = (worker or {}).get("ovh_run_id") or time.strftime("run-%Y%m%d-%H%M%S-") + str(os.getpid())
        self.run_id = run_id
        self.run_dir = base / run_id
        self.vms = {}
        self.uses = {}  # (VM name, kernel release) -> VmUse
        self.boot_failure = None  # why the one kernel's VM did not boot (the run stopped)
        self.failed_nodes = 0
        self.splat_policy = splat.default_policy()
        self.phase_times = {"setup": [], "call": [], "teardown": []}  # per case, boots excluded
        self.boot_times = []
        self.kernel_times = {}  # kernel label -> its boots and phase times (timing.py)
        self._substitute_overlay(worker)

    def _substitute_overlay(self, worker):
        """--overlay-src/--overlay-module: one module per kernel, built (by the controller,
        before any VM boots) into the run directory, and each kernel booted from a shadow
        root that holds it (modbuild.substitute); xdist workers get the built modules."""
        opt = self.config.getoption
        src, path = opt("overlay_src"), opt("overlay_module")
        if not (src or path):
            return
        if src and path:
            raise pytest.UsageError("--overlay-src and --overlay-module: give one of them")
        built = (worker or {}).get("ovh_overlay_modules", {})
        for i, k in enumerate(self.kernels):
            out = self.run_dir / "overlay-module" / k.release
            try:
                if k.release in built:
                    module = modbuild.OverlayModule(**{**built[k.release],
                                                       "path": Path(built[k.release]["path"])})
                elif src:
                    module = modbuild.build(src, k, out)
                else:
                    module = modbuild.use(path, k, out)
                self.kernels[i] = modbuild.substitute(k, module, out)
            except modbuild.ModuleError as e:
                raise pytest.UsageError(str(e)) from None

    @property
    def accel(self):
        given = (getattr(self.config, "workerinput", None) or {}).get("ovh_accel")
        if self._accel is None and given:
            self._accel = accel_mod.Accel(**given)
        if self._accel is None:
            opt = self.config.getoption
            try:
                self._accel = accel_mod.resolve(opt("accel"), self.kernels[0],
                                                reprobe=opt("accel_reprobe"))
            except ValueError as e:
                raise pytest.UsageError(str(e)) from None
        return self._accel

    def vm_for(self, kernel):
        vm = self.vms.get(kernel.release)
        if vm is None:
            opt = self.config.getoption
            worker = getattr(self.config, "workerinput", {}).get("workerid", "main")
            workers = int(getattr(self.config, "workerinput", {}).get("workercount", 1))
            cpus = opt("vm_cpus") or max(1, (os.cpu_count() or 1) // workers)
            vm = VM(kernel, self.accel, self.run_dir / f"{kernel.release}-{worker}",
                    memory=opt("vm_memory"), cpus=cpus,
                    boot_timeout=opt("boot_timeout"), call_timeout=opt("call_timeout"),
                    name=f"ovh-{os.getpid()}-{worker}")
            self.vms[kernel.release] = vm
        return vm

    def use(self, vm):
        """The plugin's record of `vm` (created on first use). A worker's VMs for several
        kernels share its name: each kernel's VM has its own record (its facts, boots)."""
        return self.uses.setdefault((vm.name, vm.kernel.release), VmUse())

    def stop_all(self):
        for vm in self.vms.values():
            vm.stop()


STATE_KEY = pytest.StashKey[HarnessState]()
CASE_KEY = pytest.StashKey[CaseState]()
KERNEL_PROP = "kernel"  # the report property naming the kernel a case ran on (its label)


def state_of(config) -> HarnessState:
    return config.stash[STATE_KEY]


def kernel_of(item):
    """The Kernel an item runs on, or None for an item without the `kernel` fixture."""
    if "kernel" not in getattr(item, "fixturenames", ()):
        return None
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "kernel" in callspec.params:
        return callspec.params["kernel"]
    state = item.config.stash.get(STATE_KEY, None)
    return state.kernels[0] if state is not None and state.kernels else None


def set_property(item, name, value):
    """Set a report property of `item` (user_properties), replacing an earlier value."""
    props = item.user_properties
    for i, (key, _) in enumerate(props):
        if key == name:
            props[i] = (name, value)
            return
    props.append((name, value))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Every report of a kernel case names its kernel (before the report is made, so that
    it and JUnit's <properties> carry it): the time keeper and the results read it."""
    kernel = kernel_of(item)
    if kernel is not None:
        set_property(item, KERNEL_PROP, kernel.label)
    yield


def pytest_configure(config):
    from .timing import TimeKeeper  # timing.py reads this module's names

    state = config.stash[STATE_KEY] = HarnessState(config)
    config.pluginmanager.register(TimeKeeper(state), "overlay-harness-times")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: every worker writes into the same run directory, and the accelerator is
    found out once, here (a KVM probe boot), not by every worker at the same time."""
    state = state_of(node.config)
    node.workerinput["ovh_run_id"] = state.run_id
    node.workerinput["ovh_accel"] = dataclasses.asdict(state.accel)
    node.workerinput["ovh_overlay_modules"] = {
        k.release: {**dataclasses.asdict(k.overlay_module), "path": str(k.overlay_module.path)}
        for k in state.kernels if k.overlay_module}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one VM per worker, as many as the cores and the free memory allow."""
    per_vm = size_bytes(config.getoption("vm_memory")) + (512 << 20)  # + QEMU's own
    by_memory = (mem_available_bytes() or per_vm) // per_vm
    return max(1, min(os.cpu_count() or 1, by_memory))


def pytest_unconfigure(config):
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.stop_all()


def _versions():
    try:
        vng = importlib.metadata.version("virtme-ng")
    except importlib.metadata.PackageNotFoundError:
        vng = "not installed"
    return accel_mod.qemu_version() or "not installed", vng


def pytest_report_header(config):
    state = state_of(config)
    qemu, vng = _versions()
    lines = []
    for k in state.kernels:
        lacking = kernel_mod.missing_options(k)
        note = f"; {kernel_mod.describe_missing(k, lacking)}" if lacking else (
            "" if kernel_mod.config_known(k) else "; no config to check")
        lines.append(f"kernel: {k.release} ({k.image}){note}")
        if k.overlay_module:
            lines.append(k.overlay_module.describe())
    lines.append(f"accel: {state.accel.name} ({state.accel.reason})")
    lines.append(f"qemu: {qemu}; virtme-ng: {vng}; results: {state.run_dir}")
    return lines


def pytest_generate_tests(metafunc):
    kernels = state_of(metafunc.config).kernels
    if "kernel" in metafunc.fixturenames and len(kernels) > 1:
        metafunc.parametrize("kernel", kernels, ids=[k.release for k in kernels],
                             indirect=True, scope="session")
    if "upper_fs" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("upper_fs")
        kinds = list(marker.args) if marker else ["ext4"]
        unknown = set(kinds) - set(FILESYSTEMS)
        if unknown:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown upper_fs {unknown}")
        wanted = metafunc.config.getoption("upper_fs")
        if wanted:
            kinds = [k for k in kinds if k in wanted.split(",")]
        metafunc.parametrize("upper_fs", kinds)


def pytest_sessionfinish(session, exitstatus):
    state = session.config.stash.get(STATE_KEY, None)
    if state is None:
        return
    state.stop_all()
    # session.exitstatus: other plugins (the results recorder's regressions) may have failed the run
    if state.failed_nodes == 0 and session.exitstatus == 0 and state.run_dir.exists():
        for vm in state.vms.values():  # logs are kept only when something failed
            shutil.rmtree(vm.workdir, ignore_errors=True)
