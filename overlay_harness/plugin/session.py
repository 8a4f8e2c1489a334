"""Per-process state of a run (kernels, accelerator, run directory, VMs) and of a case,
kept in pytest's stash; the report header, parametrisation by kernel and upper
filesystem, the `kernel` report property of each kernel case, and the end of the session
(VMs stopped, logs dropped when all passed).

The plugin is passive until it becomes active: at start-up when an option of its group
or an `overlay_harness_*` ini setting is given, else once collection finds a test that
uses a harness fixture (options.HARNESS_FIXTURES). Before that nothing is resolved (no
kernel, no KVM probe) and no header line is printed, so an installed plugin costs other
pytest runs nothing. Under pytest-xdist the controller collects nothing: unless an option
made it active, each worker resolves the accelerator itself (host/accel.py serialises the
probe) and sends its header lines back, which the controller prints at the end."""

import dataclasses
import functools
import importlib.metadata
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..host import accel as accel_mod
from ..host import kernel as kernel_mod
from ..host import modbuild, preflight, splat
from ..host import target as target_mod
from ..host.agent_client import HarnessError
from ..host.series import SeriesError
from ..host.vm import VM
from ..host.vng import mem_available_bytes, size_bytes
from ..library.devices import FILESYSTEMS
from ..library.features import GuestFacts
from ..library.guest import Guest
from . import progress
from . import series as series_plugin
from .options import HARNESS_FIXTURES, given, setting


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
    """Per-process state: kernels, accelerator, run directory, VMs (each resolved on
    first use)."""

    def __init__(self, config):
        self.config = config
        self.worker = getattr(config, "workerinput", None)
        self.specs = setting(config, "kernel") or [None]
        self.active = bool((self.worker or {}).get("ovh_active"))
        self.header_shown = False
        self.worker_header = None  # xdist controller: the header lines a worker sent back
        self._kernels = None
        self._accel = None
        base = Path(setting(config, "results_dir") or Path(config.rootpath) / "results")
        self.run_id = ((self.worker or {}).get("ovh_run_id")
                       or time.strftime("run-%Y%m%d-%H%M%S-") + str(os.getpid()))
        self.run_dir = base / self.run_id
        self.targets = self._parse_targets()  # --target: machines the harness does not boot
        self.vms = {}
        self.uses = {}  # (VM name, kernel release) -> VmUse
        self.boot_failure = None  # why the one kernel's VM did not boot (the run stopped)
        self.marker_problems = []  # bad markers found while collecting (a usage error after it)
        self.usage_error = None  # xdist: the usage error a worker's collection found
        self.failed_nodes = 0
        self.phase_times = {"setup": [], "call": [], "teardown": []}  # per case, boots excluded
        self.boot_times = []
        self.kernel_times = {}  # kernel label -> its boots and phase times (timing.py)
        self.series = None        # --overlay-patch: the host.series.Series under test
        self.series_info = {}     # release -> what its module was built from (plugin/series.py)
        self.baseline = None      # {(case, kernel): outcome} of the run without the series
        self.baseline_meta = None

    def _parse_targets(self):
        """--target, checked before anything connects (a usage error names what is wrong)."""
        opt = self.config.getoption
        if self.worker:
            workers = int(self.worker.get("workercount", 1))
        else:
            n = opt("numprocesses", None)
            workers = n if isinstance(n, int) and n > 0 else None
        if opt("target") and opt("coverage"):
            raise pytest.UsageError("--coverage and --target: the function tracer is set up only in "
                                    "guests the harness boots (it would stay set on the target)")
        try:
            return target_mod.parse_targets(opt("target"), opt("target_key"), opt("target_reboot"),
                                            workers, [s for s in self.specs if s])
        except target_mod.TargetUsageError as e:
            raise pytest.UsageError(str(e)) from None

    @property
    def target(self):
        """This process's target: an xdist worker's by its index (gw0: the first)."""
        index = int((self.worker or {}).get("workerid", "gw0")[2:] or 0)
        return self.targets[index]

    @functools.cached_property
    def splat_policy(self):
        """The harness's kernel-log policy, plus the rules of --splats / overlay_harness_splats
        (a usage error names a bad file or entry)."""
        extra = setting(self.config, "splats")
        if not extra:
            return splat.default_policy()
        try:
            return splat.default_policy().extended(splat.Policy.load(Path(extra)))
        except ValueError as e:
            raise pytest.UsageError(f"--splats: {e}") from None

    @property
    def kernels(self):
        """The kernels under test, resolved on first use (a usage error names a bad one)."""
        if self._kernels is None and self.targets:
            if self.config.getoption("overlay_src") or self.config.getoption("overlay_module"):
                raise pytest.UsageError("--overlay-src/--overlay-module and --target: the patch loop "
                                        "boots the kernel it builds for; a target runs its own")
            self._kernels = [target_mod.target_kernel(self.target)]
        if self._kernels is None:
            try:
                kernels = [kernel_mod.resolve(s) for s in self.specs]
            except kernel_mod.KernelError as e:
                raise pytest.UsageError(str(e)) from None
            self._kernels = self._substitute_overlay(kernels)
        return self._kernels

    def _substitute_overlay(self, kernels):
        """--overlay-src/--overlay-module: one module per kernel, built (by the controller,
        before any VM boots) into the run directory, and each kernel booted from a shadow
        root that holds it (modbuild.substitute); xdist workers get the built modules."""
        opt = self.config.getoption
        src, path = opt("overlay_src"), opt("overlay_module")
        based = series_plugin.wanted(self.config)  # --overlay-patch / --overlay-base
        if not (src or path or based):
            return kernels
        if src and path:
            raise pytest.UsageError("--overlay-src and --overlay-module: give one of them")
        if based and path:
            raise pytest.UsageError("--overlay-patch/--overlay-base and --overlay-module: the series "
                                    "is built from a source (--overlay-src, or the kernel's own)")
        built = (self.worker or {}).get("ovh_overlay_modules", {})
        built_log = progress.reporter(self.config, "build")
        kernels = list(kernels)
        for i, k in enumerate(kernels):
            out = self.run_dir / "overlay-module" / k.release
            try:
                if k.release in built:
                    module = modbuild.OverlayModule(**{**built[k.release],
                                                       "path": Path(built[k.release]["path"])})
                elif based:
                    module = series_plugin.build(self, k, out, log=built_log)
                elif src:
                    module = modbuild.build(src, k, out, log=built_log)
                else:
                    module = modbuild.use(path, k, out)
                kernels[i] = modbuild.substitute(k, module, out)
            except (modbuild.ModuleError, SeriesError) as e:
                message = str(e)
                if based or isinstance(e, SeriesError):  # the series' messages name their patch
                    raise pytest.UsageError(message) from None
                opt = f"--overlay-src={src}" if src else f"--overlay-module={path}"
                raise pytest.UsageError(message if message.startswith(opt.split("=")[0])
                                        else f"{opt}: {message}") from None
        return kernels

    @property
    def accel(self):
        """The accelerator (resolved on first use: maybe a KVM probe boot); a usage error
        when it is not the one --require-accel names."""
        sent = (self.worker or {}).get("ovh_accel")
        if self.targets:
            self._accel = target_mod.ACCEL  # nothing boots: no KVM probe
        if self._accel is None and sent:
            self._accel = accel_mod.Accel(**sent)
        if self._accel is None:
            try:
                found = accel_mod.resolve(setting(self.config, "accel"), self.kernels[0],
                                          reprobe=self.config.getoption("accel_reprobe"),
                                          log=progress.reporter(self.config, "accel"))
                accel_mod.check_required(found, setting(self.config, "require_accel"))
            except ValueError as e:
                raise pytest.UsageError(str(e)) from None
            self._accel = found
        return self._accel

    @property
    def known_accel(self):
        """The accelerator when it has been found out already (never probes), else None."""
        return self._accel

    def activate(self):
        """Become active (idempotent): from now on kernels and the accelerator are resolved."""
        self.active = True

    def vm_for(self, kernel):
        vm = self.vms.get(kernel.release)
        if vm is None and self.targets:
            opt = self.config.getoption
            worker = (self.worker or {}).get("workerid", "main")
            vm = target_mod.SshTarget(self.target, kernel, self.run_dir / f"target-{worker}",
                                      key_file=opt("target_key"), reboot=opt("target_reboot"),
                                      boot_timeout=opt("boot_timeout"),
                                      call_timeout=opt("call_timeout"),
                                      name=f"ovh-{os.getpid()}-{worker}")
            self.vms[kernel.release] = vm
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
INFRA_ERROR = "infra_error"  # the report property: the kind of HarnessError (evidence.py sets it)


def infra_error(report):
    """The kind of infrastructure error a report records, or None."""
    return dict(getattr(report, "user_properties", ())).get(INFRA_ERROR)


CASE_KEY = pytest.StashKey[CaseState]()
KERNEL_PROP = "kernel"  # the report property naming the kernel a case ran on (its label)


def state_of(config) -> HarnessState:
    return config.stash[STATE_KEY]


def collection_usage_error(session, items, message):
    """A usage error found in the collected items. One process: raised. An xdist worker
    (where xdist would take a collection that raises for a crashed worker, and lose the
    message): the worker runs nothing and stops with it; the controller ends the run with
    the message and status 4 (pytest_sessionfinish)."""
    if not hasattr(session.config, "workerinput"):
        raise pytest.UsageError(message)
    items[:] = []
    session.shouldstop = message
    state_of(session.config).usage_error = message


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
    if given(config):
        state.activate()
        state.kernels  # noqa: B018 -- a bad --kernel is a usage error now, before collection
        state.splat_policy  # noqa: B018 -- and so is a bad --splats file


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: every worker writes into the same run directory; when the run is active
    from the start, the accelerator is found out once, here (a KVM probe boot), not by
    every worker at the same time, and the overlay modules are built once."""
    state = state_of(node.config)
    node.workerinput["ovh_run_id"] = state.run_id
    if not state.active:
        return
    node.workerinput["ovh_active"] = True
    if not node.config.option.collectonly:  # --co: no KVM probe boot
        node.workerinput["ovh_accel"] = dataclasses.asdict(state.accel)
    node.workerinput["ovh_overlay_modules"] = {
        k.release: {**dataclasses.asdict(k.overlay_module), "path": str(k.overlay_module.path)}
        for k in state.kernels if k.overlay_module}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist controller: what a worker found out (its accelerator, its header lines)."""
    state = state_of(node.config)
    out = getattr(node, "workeroutput", None) or {}
    if out.get("ovh_accel") and state._accel is None:
        state._accel = accel_mod.Accel(**out["ovh_accel"])
    if out.get("ovh_header") and state.worker_header is None:
        state.worker_header = out["ovh_header"]
    if out.get("ovh_usage_error") and state.usage_error is None:
        state.usage_error = out["ovh_usage_error"]
    if out.get("ovh_boot_failure") and state.boot_failure is None:
        state.boot_failure = out["ovh_boot_failure"]  # the recorder writes it into summary.json


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # xdist's own answers (a CPU count) otherwise
def pytest_xdist_auto_num_workers(config):
    """`-n auto` in a run of the harness: one VM per worker, as many as the CPUs (xdist's
    count) and the free memory allow (with --target: one worker per target). A passive plugin
    (no option or setting of the group, no conftest that loads it), or
    $PYTEST_XDIST_AUTO_NUM_WORKERS, leaves xdist's count."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or not (given(config) or loaded_by_conftest(config)):
        return None
    if config.getoption("target"):
        return len(config.getoption("target"))
    from xdist.plugin import pytest_xdist_auto_num_workers as by_cpus

    per_vm = size_bytes(config.getoption("vm_memory")) + (512 << 20)  # + QEMU's own
    by_memory = (mem_available_bytes() or per_vm) // per_vm
    return max(1, min(by_cpus(config), by_memory))


def loaded_by_conftest(config):
    """Whether a conftest.py of the run names the plugin in its `pytest_plugins` (a project
    of harness cases, such as this checkout)."""
    for plugin in config.pluginmanager.get_plugins():
        wanted = getattr(plugin, "pytest_plugins", ())
        wanted = [wanted] if isinstance(wanted, str) else wanted
        if str(getattr(plugin, "__file__", "")).endswith("conftest.py") and __package__ in wanted:
            return True
    return False


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


def header_lines(state, resolve=True):
    """The kernels, the accelerator (when resolve, or when known already), QEMU and
    virtme-ng, where results go, and what preflight finds missing."""
    if state.targets:  # nothing boots here: each target's own preflight runs when it connects
        return [f"target: {t} (the kernel it runs; preflight there on connecting)"
                for t in state.targets] + [f"results: {state.run_dir}"]
    qemu, vng = _versions()
    lines = []
    for k in state.kernels:
        lacking = kernel_mod.missing_options(k)
        note = f"; {kernel_mod.describe_missing(k, lacking)}" if lacking else (
            "" if kernel_mod.config_known(k) else "; no config to check")
        lines.append(f"kernel: {k.release} ({k.image}){note}")
        if k.overlay_module:
            lines.append(k.overlay_module.describe())
        if state.series is not None and k.release in state.series_info:
            lines.append(f"series: {len(state.series.patches)} patches onto "
                         f"{state.series_info[k.release]['base']} (patchset hash "
                         f"{state.series.patchset_hash[:16]}); compared against the same source without it")
    accel = state.accel if resolve else state.known_accel
    if accel is not None:
        lines.append(f"accel: {accel.name} ({accel.reason})")
    lines.append(f"qemu: {qemu}; virtme-ng: {vng}; results: {state.run_dir}")
    lines += [f"preflight: {p}" for p in preflight.problems(state.kernels[0].image)]  # all of them
    return lines


def pytest_report_header(config):
    state = state_of(config)
    if not state.active:
        return None
    state.header_shown = True
    return header_lines(state, resolve=not config.option.collectonly)  # --co: no KVM probe boot


@pytest.hookimpl(trylast=True)  # after -k/-m deselection
def pytest_collection_modifyitems(session, config, items):
    """A test that uses a harness fixture makes the plugin active; with pytest-rerunfailures'
    --reruns, such a test is rerun only for a harness error (HarnessError: a VM that did not
    boot, was lost or hung), never for an assertion or any other failure of the case."""
    if state_of(config).marker_problems:
        collection_usage_error(session, items, state_of(config).marker_problems[0])
        return
    harness = [i for i in items if uses_harness(i)]
    if harness:
        state_of(config).activate()
        state_of(config).splat_policy  # noqa: B018 -- a bad --splats file: a usage error now
    reruns = _global_reruns(config)
    if not reruns:
        return
    for item in harness:
        if item.get_closest_marker("flaky") is None:
            # only_rerun: the exception must be a HarnessError; condition: a failure without
            # one (a splat found in the kernel log, whatever order the hooks ran in) is final.
            item.add_marker(pytest.mark.flaky(reruns=reruns, only_rerun=[HarnessError],
                                              condition=_harness_broke))


def uses_harness(item, names=HARNESS_FIXTURES):
    """Whether `item` uses one of this plugin's fixtures `names` (not a fixture of the same
    name that a conftest or test module defines)."""
    info = getattr(item, "_fixtureinfo", None)
    for name in names & set(getattr(item, "fixturenames", ())):
        defs = info.name2fixturedefs.get(name) if info is not None else None
        if defs and defs[-1].func.__module__ == f"{__package__}.fixtures":
            return True
    return False


def kernel_of(item):
    """The Kernel an item runs on, or None for an item without the `kernel` fixture."""
    if not uses_harness(item, {"kernel"}):
        return None
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "kernel" in callspec.params:
        return callspec.params["kernel"]
    state = item.config.stash.get(STATE_KEY, None)
    return state.kernels[0] if state is not None and state.kernels else None


def _harness_broke(error):
    return isinstance(error, HarnessError)


def _global_reruns(config):
    """pytest-rerunfailures' --reruns (or its ini `reruns`), or None."""
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return None
    value = config.getoption("reruns", None)
    if value is None:
        try:
            value = int(config.getini("reruns"))
        except (TypeError, ValueError):
            value = None
    return value


def pytest_report_collectionfinish(config, start_path, items):
    """The header, for a run that became active at collection (nothing before it)."""
    state = state_of(config)
    if not state.active or state.header_shown or hasattr(config, "workerinput"):
        return None
    state.header_shown = True
    return header_lines(state, resolve=not config.option.collectonly)


def pytest_terminal_summary(terminalreporter, config):
    """xdist controller of a run its workers made active: the header lines they sent."""
    state = state_of(config)
    if state.worker_header and not state.header_shown:
        terminalreporter.section("overlay-harness")
        for line in state.worker_header:
            terminalreporter.line(line)


def pytest_generate_tests(metafunc):
    state = state_of(metafunc.config)
    if "kernel" in metafunc.fixturenames and len(state.specs) > 1:
        kernels = state.kernels
        metafunc.parametrize("kernel", kernels, ids=[k.release for k in kernels],
                             indirect=True, scope="session")
    # `upper_fs` is a parameter of the harness's, unless the test's own fixture has the name
    if "upper_fs" in metafunc.fixturenames and not metafunc._arg2fixturedefs.get("upper_fs"):
        marker = metafunc.definition.get_closest_marker("upper_fs")
        kinds = list(marker.args) if marker else ["ext4"]
        unknown = [k for k in kinds if k not in FILESYSTEMS]
        if unknown or not kinds:  # a usage error once collection is over (here: a collection error)
            state.marker_problems.append(
                f"{metafunc.definition.nodeid}: upper_fs marker {', '.join(map(repr, kinds))}: "
                f"name one or more of {', '.join(FILESYSTEMS)} "
                "(e.g. @pytest.mark.upper_fs(\"ext4\", \"xfs\"))")
        wanted = setting(metafunc.config, "upper_fs")
        if wanted:
            kinds = [k for k in kinds if k in wanted.split(",")]
        metafunc.parametrize("upper_fs", kinds)


@pytest.hookimpl(tryfirst=True)  # the status is final before the recorder writes it
def pytest_sessionfinish(session, exitstatus):
    state = session.config.stash.get(STATE_KEY, None)
    if state is None:
        return
    state.stop_all()
    if state.worker is not None and state.usage_error:
        session.config.workeroutput["ovh_usage_error"] = state.usage_error
    elif state.usage_error and session.exitstatus == pytest.ExitCode.INTERRUPTED:
        session.exitstatus = pytest.ExitCode.USAGE_ERROR  # xdist printed it: "Interrupted: ..."
    if state.worker is not None and state.boot_failure:
        session.config.workeroutput["ovh_boot_failure"] = state.boot_failure
    elif state.boot_failure and session.exitstatus == pytest.ExitCode.INTERRUPTED:
        # xdist controller: a worker's VM did not boot and xdist stopped the run with the
        # reason ("Interrupted: ..."); the status is the one a single process ends with
        session.exitstatus = 3
    if state.worker is not None and state.active:  # an xdist worker: tell the controller
        session.config.workeroutput["ovh_header"] = header_lines(state, resolve=False)
        if state.known_accel is not None:
            session.config.workeroutput["ovh_accel"] = dataclasses.asdict(state.known_accel)
    # session.exitstatus: other plugins (the results recorder's regressions) may have failed the run
    if state.failed_nodes == 0 and session.exitstatus == 0 and state.run_dir.exists():
        for vm in state.vms.values():  # logs are kept only when something failed
            shutil.rmtree(vm.workdir, ignore_errors=True)
