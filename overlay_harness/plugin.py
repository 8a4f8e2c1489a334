"""pytest plugin: options, the VM per kernel, the `guest` fixture, failure reports."""

import dataclasses
import importlib.metadata
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from .host import accel as accel_mod
from .host import kernel as kernel_mod
from .host import splat
from .host.agent_client import HarnessError
from .host.vm import VM
from .host.vng import mem_available_bytes, size_bytes
from .library.devices import FILESYSTEMS, Filesystem, ScratchDevice
from .library.guest import Guest
from .library.overlay import Overlay, make_tree
from .library.repro import reproducer

GUEST_KEY = pytest.StashKey()
SCRATCH_ROOT = "/run/ovh"


def pytest_addoption(parser):
    g = parser.getgroup("overlay-harness", "overlay-harness VM options")
    g.addoption("--kernel", action="append", default=[], metavar="KERNEL",
                help="bzImage/vmlinuz path, kernel build tree, or installed release "
                     "(default: the newest under /boot); repeat to compare kernels")
    g.addoption("--accel", choices=["auto", "kvm", "tcg"], default="auto",
                help="auto probes KVM once per host (cached) and falls back to TCG")
    g.addoption("--accel-reprobe", action="store_true", help="redo the cached KVM probe")
    g.addoption("--vm-memory", default="2G", help="guest memory (default 2G)")
    g.addoption("--vm-cpus", type=int, default=None,
                help="guest CPUs (default: the host's CPUs shared among the VMs of a run)")
    g.addoption("--boot-timeout", type=float, default=180.0,
                help="seconds for a VM to become ready (default 180)")
    g.addoption("--call-timeout", type=float, default=120.0,
                help="seconds one guest call may take before the guest counts as hung")
    g.addoption("--upper-fs", default=None, metavar="KINDS",
                help=f"comma list of upper filesystems to run ({', '.join(FILESYSTEMS)}); "
                     "default: every one a case supports")
    g.addoption("--without-faults", action="store_true",
                help="load no faulty dm table (error windows do nothing): checks that the cases "
                     "which expect an errno fail without their fault")
    g.addoption("--save-reproducers", action="store_true",
                help="write every case's reproducer under results/<run>/reproducers "
                     "(by default only failing cases get one)")
    g.addoption("--results-dir", default=None,
                help="where run directories go (default: <rootdir>/results)")


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
        self.failed_nodes = 0
        self.splat_policy = splat.default_policy()
        self.phase_times = {"setup": [], "call": [], "teardown": []}  # per case, boots excluded
        self.boot_times = []

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

    def stop_all(self):
        for vm in self.vms.values():
            vm.stop()


def _state(config) -> HarnessState:
    return config.stash[STATE_KEY]


STATE_KEY = pytest.StashKey[HarnessState]()


def pytest_configure(config):
    config.stash[STATE_KEY] = HarnessState(config)
    config.pluginmanager.register(TimeKeeper(config.stash[STATE_KEY]), "overlay-harness-times")
    for name, doc in [
        ("volatile", "overlay volatile mounts"), ("errseq", "writeback error sequence semantics"),
        ("syncfs", "syncfs error reporting"), ("shared_upper", "several overlays on one upper fs"),
        ("metacopy", "metadata-only copy-up"), ("lower_changes", "lower layers changed while mounted"),
        ("nfs", "NFS lower layers"), ("vm", "boots a VM"),
        ("fresh_vm", "the case needs a kernel no other case has touched (module state, "
         "a clean log): the VM is rebooted before it unless it is fresh already"),
        ("upper_fs(*kinds)", "upper filesystems the case supports (default: ext4)"),
        ("known_issue(reason, since=None, fixed=None, commit=None, upper_fs=None)",
         "the kernel disagrees with the documented behaviour the case asserts: a strict xfail "
         "on kernels in [since, fixed) (and only on the listed upper filesystems)"),
    ]:
        config.addinivalue_line("markers", f"{name}: {doc}")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: every worker writes into the same run directory, and the accelerator is
    found out once, here (a KVM probe boot), not by every worker at the same time."""
    state = _state(node.config)
    node.workerinput["ovh_run_id"] = state.run_id
    node.workerinput["ovh_accel"] = dataclasses.asdict(state.accel)


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
    state = _state(config)
    qemu, vng = _versions()
    lines = []
    for k in state.kernels:
        lacking = kernel_mod.missing_options(k)
        note = f"; {kernel_mod.describe_missing(k, lacking)}" if lacking else (
            "" if kernel_mod.config_known(k) else "; no config to check")
        lines.append(f"kernel: {k.release} ({k.image}){note}")
    lines.append(f"accel: {state.accel.name} ({state.accel.reason})")
    lines.append(f"qemu: {qemu}; virtme-ng: {vng}; results: {state.run_dir}")
    return lines


def pytest_generate_tests(metafunc):
    kernels = _state(metafunc.config).kernels
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


@pytest.fixture(scope="session")
def kernel(request):
    """The kernel under test (one per --kernel)."""
    return getattr(request, "param", None) or _state(request.config).kernels[0]


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


def prepare_guest(machine):
    """Set the guest up for cases, and record which features its kernel has."""
    g = Guest(machine.agent)
    for key, value in SYSCTLS.items():
        g.must.write_file(f"/proc/sys/{key}", value.encode())
    g.run(["modprobe", "-a", *PRELOAD], check=False)
    machine.prelude = list(g.log)  # replayed at the top of every reproducer
    machine.modules = guest_modules(g)  # read once per boot: cases ask about other modules too
    machine.features = {name: module in machine.modules for name, module in FEATURES.items()}
    return machine.features


def require(guest, *features):
    """Skip the case, naming what is missing, unless the guest kernel has `features`:
    first by the kernel's config (naming the CONFIG_ options), then by what the guest
    could load."""
    kernel = guest.vm.kernel
    known = kernel_mod.fragment_features()
    lacking = kernel_mod.missing_options(kernel, [f for f in features if f in known])
    if lacking:
        pytest.skip(kernel_mod.describe_missing(kernel, lacking))
    have = guest.vm.features
    missing = [f for f in features if not have.get(f)]
    if missing:
        pytest.skip(f"kernel {guest.vm.kernel.release} lacks {', '.join(missing)}")


@pytest.fixture(scope="session")
def vm(kernel, request):
    """A booted VM running `kernel`, shared by the cases of this session."""
    state = _state(request.config)
    lacking = kernel_mod.missing_options(kernel, ["boot"])
    if lacking:
        pytest.skip(kernel_mod.describe_missing(kernel, lacking) + ": virtme-ng cannot boot it")
    machine = state.vm_for(kernel)
    if not machine.alive():
        _boot(machine, single=len(state.kernels) == 1)
    yield machine
    machine.stop()


def _boot(machine, single=True):
    """(Re)boot a VM. When it cannot boot, stop the run with one clear message (one
    kernel), or fail this kernel's cases with it (several kernels)."""
    try:
        machine.restart() if machine.proc else machine.start()
        prepare_guest(machine)
    except HarnessError as e:
        machine.stop()
        message = f"{machine.kernel.release}: the VM did not boot: {e}"
        if single:
            pytest.exit(message, returncode=3)
        pytest.fail(message, pytrace=False)


class Scratch:
    """The case's scratch directory in the guest (a tmpfs of its own)."""

    def __init__(self, path):
        self.path = path


def guest_block_devices(guest):
    """Loop devices with a backing file and device-mapper devices, by name."""
    found = []
    for name in guest.must.listdir("/sys/block"):
        if name.startswith("loop"):
            backing = guest.read_file(f"/sys/block/{name}/loop/backing_file")
            if isinstance(backing, bytes):
                found.append(f"{name} ({backing.decode().strip()})")
        elif name.startswith("dm-"):
            dm = guest.must.read_file(f"/sys/block/{name}/dm/name").decode().strip()
            found.append(f"{name} ({dm})")
    return found


def kernel_version(release):
    """(major, minor, patch) from a release string like 6.1.0-56-amd64."""
    nums = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    return tuple(int(x or 0) for x in nums.groups()) if nums else (0, 0, 0)


def apply_known_issues(request, release):
    """Turn known_issue markers that apply to this kernel (and upper fs) into strict xfails."""
    version = kernel_version(release)
    params = getattr(request.node, "callspec", None)
    fs = params.params.get("upper_fs") if params else None
    for mark in request.node.iter_markers("known_issue"):
        since, fixed = mark.kwargs.get("since"), mark.kwargs.get("fixed")
        only_fs = mark.kwargs.get("upper_fs")
        if since and version < kernel_version(since):
            continue
        if fixed and version >= kernel_version(fixed):
            continue
        if only_fs and fs not in only_fs:
            continue
        span = f"kernels {since or 'any'} to {'before ' + fixed if fixed else 'now'}"
        commit = f"; commit {mark.kwargs['commit']}" if mark.kwargs.get("commit") else ""
        # raises=AssertionError: only a wrong errno or value is the known issue; a
        # harness error or a failed set-up step still fails the case.
        request.node.add_marker(pytest.mark.xfail(
            reason=f"known kernel issue ({span}{commit}): {mark.args[0]}", strict=True,
            raises=AssertionError))


def _case_dirname(nodeid):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::")[-1])[:60]


@pytest.fixture
def guest(vm, request):
    """The agent of `vm`, for this case: call log, scratch tmpfs, cleanup, leak check."""
    if not _healthy(vm):  # the last case lost the VM (panic, hang, QEMU killed): boot afresh
        _boot(vm)
    elif request.node.get_closest_marker("fresh_vm") and vm.served == vm.boots:
        _boot(vm)  # the case asked for a kernel no other case has touched
    vm.served = vm.boots
    if vm.boots != vm.reported_boots:  # this case waited for a boot: say so in its report
        request.node.user_properties.append(("vm_boot_s", round(vm.timings["ready"], 2)))
        vm.reported_boots = vm.boots
    apply_known_issues(request, vm.guest_release)
    g = Guest(vm.agent, release=vm.guest_release, label=vm.kernel.release)
    g.vm = vm
    house = Guest(vm.agent)  # the harness's own bookkeeping: kept out of the case's call log
    g.kmsg_start = g.kmsg_checked = house.must.kmsg_seq()
    g.taint_start = int(house.must.read_file("/proc/sys/kernel/tainted"))
    request.node.stash[GUEST_KEY] = g
    before_mounts = set(house.mounts())
    before_devs = set(guest_block_devices(house))
    path = f"{SCRATCH_ROOT}/{_case_dirname(request.node.nodeid)}"
    g.must.makedirs(path)
    g.must.mount("ovh-scratch", path, "tmpfs", 0, "size=1g,mode=0755")
    g.scratch = Scratch(path)
    g.defer(_remove_scratch, g, path)
    yield g
    if not _healthy(vm):
        return  # the guest is gone: nothing to clean, the error says why
    g.must.chdir("/")
    open_fds = g.must.close_all()  # open files would keep the mounts busy
    errors = g.run_deferred()
    leaks = [f"mount {m}" for m in house.mounts() if m not in before_mounts]
    leaks += [f"block device {d}" for d in guest_block_devices(house) if d not in before_devs]
    if leaks:
        _force_cleanup(g, path)
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
    return Filesystem(guest, upper_fs, dev, f"{guest.scratch.path}/upperfs").create()


@pytest.fixture
def lower(guest):
    """A lower directory on the scratch tmpfs with one 64 KiB file, `f`."""
    require(guest, "overlay")
    return make_tree(guest, f"{guest.scratch.path}/lower", {"f": b"L" * 65536})


@pytest.fixture
def make_overlay(guest, upper, lower):
    """make_overlay(name="ovl", lowers=None, merged=None, **options): an Overlay on `upper`
    (not mounted); overlays with the same name share upper and work dirs."""
    def make(name="ovl", lowers=None, merged=None, **options):
        return Overlay(guest, name, lowers or [lower], upper, merged=merged, **options)
    return make


def _remove_scratch(g, path):
    g.must.chdir("/")
    g.must.close_all()
    g.must.umount2(path, 0)
    g.must.rmdir(path)


def _force_cleanup(g, path):
    """Best effort after a leak, so the next case starts clean."""
    for m in sorted(g.mounts(), key=len, reverse=True):
        if m.startswith(SCRATCH_ROOT + "/"):
            g.umount2(m, 2)  # MNT_DETACH
    g.run(["dmsetup", "remove_all", "--force"], check=False)
    g.run(["losetup", "-D"], check=False)
    g.run(["rm", "-rf", path], check=False)


def _healthy(vm):
    return vm.alive() and vm.agent is not None and not vm.agent.broken


def check_kernel_log(g, policy):
    """Splats logged since the last check (the case's start), as an excerpt or None."""
    recs = g.vm.agent.request("kmsg", [g.kmsg_checked])
    taint = int(g.vm.agent.request("read_file", ["/proc/sys/kernel/tainted"]))
    if recs:
        g.kmsg_checked = recs[-1][0]
    found = splat.find_splats(recs, policy, g.taint_start, taint)
    g.taint_start = taint
    return splat.excerpt(recs, found) if found else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    g = item.stash.get(GUEST_KEY, None)
    if g is None:
        return
    state = _state(item.config)
    vm = g.vm
    if call.excinfo is not None and isinstance(call.excinfo.value, HarnessError):
        # The VM or the harness broke: an error of the run, not a result of the case.
        rep.ovh_error = True
    elif rep.when in ("call", "teardown") and _healthy(vm):
        try:
            found = check_kernel_log(g, state.splat_policy)
        except HarnessError as e:
            found, rep.ovh_error = None, True
            rep.longrepr = f"the guest was lost while reading its kernel log: {e}"
            rep.outcome = "failed"
        if found:
            rep.outcome = "failed"
            rep.longrepr = f"kernel splat during the case:\n{found}"
            if hasattr(rep, "wasxfail"):
                del rep.wasxfail
    if rep.failed or (rep.when == "call" and item.config.getoption("save_reproducers")):
        repro_file = _write_reproducer(state, item, g)
    if not rep.failed:
        return
    state.failed_nodes += 1
    rep.sections.append(("guest: kernel", f"{vm.kernel.release} ({vm.kernel.image}), "
                                          f"guest reports {g.release}, accel {vm.accel.name}"))
    rep.sections.append((f"guest: calls (reproducer, also in {repro_file})",
                         repro_file.read_text()))
    if _healthy(vm):
        try:
            recs = vm.agent.request("kmsg", [g.kmsg_start])
            text = "\n".join(f"[{usec / 1e6:12.6f}] {msg}" for _seq, _lvl, usec, msg in recs[-80:])
            rep.sections.append(("guest: dmesg since the case began", text or "(nothing)"))
        except HarnessError as e:
            rep.sections.append(("guest: dmesg", f"unavailable: {e}"))
    else:
        vm.settle_console()  # a panic may still be reaching the log
    rep.sections.append((f"guest: console (excerpt of {vm.console_log})",
                         vm.console_excerpt()))


class TimeKeeper:
    """Where the time goes: VM boots, and each case's set-up, body and teardown.

    Registered as a plugin so that it sees every report, in the xdist controller too."""

    def __init__(self, state):
        self.state = state

    def pytest_runtest_logreport(self, report):
        if report.when not in self.state.phase_times:
            return
        seconds = report.duration
        if report.when == "setup":
            boot = dict(report.user_properties).get("vm_boot_s")
            if boot:
                self.state.boot_times.append(boot)
                seconds = max(0.0, seconds - boot)
        self.state.phase_times[report.when].append(seconds)

    def pytest_sessionfinish(self, session):
        st = self.state
        if st.boot_times and not hasattr(session.config, "workerinput"):
            st.run_dir.mkdir(parents=True, exist_ok=True)
            (st.run_dir / "timing.json").write_text(json.dumps(
                {"boots_s": st.boot_times, "phases_s": st.phase_times}, indent=1))

    def pytest_terminal_summary(self, terminalreporter):
        st = self.state
        if not st.boot_times:
            return
        n = len(st.phase_times["call"])
        tot = {k: sum(v) for k, v in st.phase_times.items()}
        med = {k: (sorted(v)[len(v) // 2] if v else 0.0) for k, v in st.phase_times.items()}
        tr = terminalreporter
        tr.section("overlay-harness: where the time went")
        tr.line(f"{len(st.boot_times)} VM boot(s): {sum(st.boot_times):.1f} s "
                f"(median {sorted(st.boot_times)[len(st.boot_times) // 2]:.1f} s to ready)")
        tr.line(f"{n} cases: set-up {tot['setup']:.1f} s, body {tot['call']:.1f} s, "
                f"teardown {tot['teardown']:.1f} s; per case median: set-up {med['setup']:.2f} s, "
                f"body {med['call']:.2f} s, teardown {med['teardown']:.2f} s")


def _write_reproducer(state, item, g):
    repro_dir = state.run_dir / "reproducers"
    repro_dir.mkdir(parents=True, exist_ok=True)
    path = repro_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[:200] + ".py")
    path.write_text(reproducer(g.log, f"for {item.nodeid} on {g.release}",
                               prelude=getattr(g.vm, "prelude", ())))
    return path


def pytest_report_teststatus(report, config):
    if getattr(report, "ovh_error", False) and report.failed:
        return "error", "E", ("ERROR", {"red": True})
    return None


def pytest_sessionfinish(session, exitstatus):
    state = session.config.stash.get(STATE_KEY, None)
    if state is None:
        return
    state.stop_all()
    # session.exitstatus: other plugins (overlay_harness.report's regressions) may have failed the run
    if state.failed_nodes == 0 and session.exitstatus == 0 and state.run_dir.exists():
        for vm in state.vms.values():  # logs are kept only when something failed
            shutil.rmtree(vm.workdir, ignore_errors=True)
