"""pytest plugin: options, the VM per kernel, the `guest` fixture, failure reports."""

import importlib.metadata
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from . import accel as accel_mod
from . import kernel as kernel_mod
from .devices import FILESYSTEMS, Filesystem, ScratchDevice
from .guest import Guest, HarnessError
from .overlay import Overlay, make_tree
from .vm import VM

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
    g.addoption("--vm-cpus", type=int, default=2, help="guest CPUs (default 2)")
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

    @property
    def accel(self):
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
            vm = VM(kernel, self.accel, self.run_dir / f"{kernel.release}-{worker}",
                    memory=opt("vm_memory"), cpus=opt("vm_cpus"),
                    boot_timeout=opt("boot_timeout"), call_timeout=opt("call_timeout"),
                    name=f"ovh-{worker}")
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
    for name, doc in [
        ("volatile", "overlay volatile mounts"), ("errseq", "writeback error sequence semantics"),
        ("syncfs", "syncfs error reporting"), ("shared_upper", "several overlays on one upper fs"),
        ("metacopy", "metadata-only copy-up"), ("lower_changes", "lower layers changed while mounted"),
        ("nfs", "NFS lower layers"), ("vm", "boots a VM"),
        ("upper_fs(*kinds)", "upper filesystems the case supports (default: ext4)"),
        ("known_issue(reason, since=None, fixed=None, commit=None, upper_fs=None)",
         "the kernel disagrees with the documented behaviour the case asserts: a strict xfail "
         "on kernels in [since, fixed) (and only on the listed upper filesystems)"),
    ]:
        config.addinivalue_line("markers", f"{name}: {doc}")


def pytest_configure_node(node):  # xdist: every worker writes into the same run directory
    node.workerinput["ovh_run_id"] = _state(node.config).run_id


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
    lines = [f"kernel: {k.release} ({k.image})" for k in state.kernels]
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


# Kernel features the cases need: module to load, and how to tell it is there.
FEATURES = {
    "overlay": ("overlay", "filesystem"),
    "loop": ("loop", "/dev/loop-control"),
    "dm": ("dm_mod", "/dev/mapper/control"),
    "dm-flakey": ("dm_flakey", "target flakey"),
    "ext4": ("ext4", "filesystem"),
    "xfs": ("xfs", "filesystem"),
    "btrfs": ("btrfs", "filesystem"),
}


# Writeback only when a case asks for it (sync, fsync, syncfs): no periodic flusher
# writing dirty pages back before or after an error window.
SYSCTLS = {"vm/dirty_writeback_centisecs": "0", "vm/dirty_expire_centisecs": "360000"}


def prepare_guest(machine):
    """Set the guest up for cases; load the modules they use and record which
    features the guest kernel has."""
    g = Guest(machine.agent)
    for key, value in SYSCTLS.items():
        g.must.write_file(f"/proc/sys/{key}", value.encode())
    for module, _ in FEATURES.values():
        g.run(["modprobe", module], check=False)
    filesystems = g.must.read_file("/proc/filesystems").decode().split()
    targets = g.run(["dmsetup", "targets"], check=False).stdout.split()
    found = {}
    for name, (module, how) in FEATURES.items():
        if how == "filesystem":
            found[name] = module in filesystems
        elif how.startswith("target "):
            found[name] = how.split()[1] in targets
        else:
            found[name] = isinstance(g.stat(how), dict)
    machine.features = found
    return found


def require(guest, *features):
    """Skip the case, naming what is missing, unless the guest kernel has `features`."""
    have = guest.vm.features
    missing = [f for f in features if not have.get(f)]
    if missing:
        pytest.skip(f"kernel {guest.vm.kernel.release} lacks {', '.join(missing)}")


@pytest.fixture(scope="session")
def vm(kernel, request):
    """A booted VM running `kernel`, shared by the cases of this session."""
    state = _state(request.config)
    machine = state.vm_for(kernel)
    if not machine.alive():
        machine.start()
        prepare_guest(machine)
    yield machine
    machine.stop()


class Scratch:
    """Per-case cleanup stack and scratch directory in the guest."""

    def __init__(self, guest, path):
        self.guest = guest
        self.path = path
        self._deferred = []

    def defer(self, fn, *args, **kwargs):
        self._deferred.append((fn, args, kwargs))

    def run_deferred(self):
        errors = []
        while self._deferred:
            fn, args, kwargs = self._deferred.pop()
            try:
                fn(*args, **kwargs)
            except Exception as e:  # keep cleaning; report all at the end
                errors.append(f"{getattr(fn, '__name__', fn)}{args}: {e}")
        return errors


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
    vm.check_alive()
    apply_known_issues(request, vm.guest_release)
    g = Guest(vm.agent, release=vm.guest_release, label=vm.kernel.release)
    g.vm = vm
    g.kmsg_start = g.must.kmsg_seq()
    request.node.stash[GUEST_KEY] = g
    before_mounts = set(g.mounts())
    before_devs = set(guest_block_devices(g))
    path = f"{SCRATCH_ROOT}/{_case_dirname(request.node.nodeid)}"
    g.run(["mkdir", "-p", path])
    g.must.mount("ovh-scratch", path, "tmpfs", 0, "size=1g,mode=0755")
    g.scratch = Scratch(g, path)
    g.defer = g.scratch.defer
    g.defer(_remove_scratch, g, path)
    yield g
    if not vm.alive() or vm.agent is None or vm.agent.broken:
        return  # the guest is gone: nothing to clean, the failure says why
    g.must.chdir("/")
    open_fds = g.must.close_all()  # open files would keep the mounts busy
    errors = g.scratch.run_deferred()
    leaks = [f"mount {m}" for m in g.mounts() if m not in before_mounts]
    leaks += [f"block device {d}" for d in guest_block_devices(g) if d not in before_devs]
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    g = item.stash.get(GUEST_KEY, None)
    if g is None or not rep.failed:
        return
    state = _state(item.config)
    state.failed_nodes += 1
    vm = g.vm
    rep.sections.append(("guest: kernel", f"{vm.kernel.release} ({vm.kernel.image}), "
                                          f"guest reports {g.release}, accel {vm.accel.name}"))
    repro = g.reproducer(f"for {item.nodeid} on {g.release}")
    repro_dir = state.run_dir / "reproducers"
    repro_dir.mkdir(parents=True, exist_ok=True)
    repro_file = repro_dir / f"{_case_dirname(item.nodeid)}.py"
    repro_file.write_text(repro)
    rep.sections.append(("guest: calls (reproducer, also in %s)" % repro_file, repro))
    if vm.agent is not None and not vm.agent.broken:
        try:
            recs = vm.agent.request("kmsg", [g.kmsg_start])
            text = "\n".join(f"[{usec / 1e6:12.6f}] {msg}" for _seq, _lvl, usec, msg in recs[-80:])
            rep.sections.append(("guest: dmesg since the case began", text or "(nothing)"))
        except HarnessError as e:
            rep.sections.append(("guest: dmesg", f"unavailable: {e}"))
    rep.sections.append((f"guest: console (last lines of {vm.console_log})", vm.console_tail(30)))


def pytest_sessionfinish(session, exitstatus):
    state = session.config.stash.get(STATE_KEY, None)
    if state is None:
        return
    state.stop_all()
    if state.failed_nodes == 0 and exitstatus == 0 and state.run_dir.exists():
        for vm in state.vms.values():  # logs are kept only when something failed
            shutil.rmtree(vm.workdir, ignore_errors=True)
