"""Every command-line option and marker of the suite, in one place (`pytest --help`,
group "overlay-harness"; `pytest --markers`)."""

from ..library.devices import FILESYSTEMS


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
    g.addoption("--overlay-src", default=None, metavar="DIR",
                help="build overlay.ko from DIR (fs/overlayfs, or a kernel tree) against each "
                     "kernel under test and load it in the guest instead of the stock module")
    g.addoption("--overlay-module", default=None, metavar="PATH",
                help="load this built overlay.ko in the guest instead of the stock module")


def pytest_configure(config):
    for name, doc in [
        ("volatile", "overlay volatile mounts"), ("errseq", "writeback error sequence semantics"),
        ("syncfs", "syncfs error reporting"), ("shared_upper", "several overlays on one upper fs"),
        ("metacopy", "metadata-only copy-up"), ("lower_changes", "lower layers changed while mounted"),
        ("nfs", "NFS lower layers"),
        ("whiteout", "whiteouts and opaque directories"), ("readdir", "readdir of merged directories"),
        ("rename", "renaming directories and redirects"),
        ("copyup_metadata", "what copy-up preserves (owner, mode, times, xattrs, symlinks)"),
        ("inode_numbers", "st_ino, st_dev and d_ino, with and without xino"),
        ("hardlinks_index", "hard links with and without the inodes index"),
        ("new_features", "features of kernels newer than 6.1 (skipped, named, where absent)"),
        ("vm", "boots a VM"),
        ("fresh_vm", "the case needs a kernel no other case has touched (module state, "
         "a clean log): the VM is rebooted before it unless it is fresh already"),
        ("upper_fs(*kinds)", "upper filesystems the case supports (default: ext4)"),
        ("known_issue(reason, since=None, fixed=None, commit=None, upper_fs=None)",
         "the kernel disagrees with the documented behaviour the case asserts: a strict xfail "
         "on kernels in [since, fixed) (and only on the listed upper filesystems)"),
    ]:
        config.addinivalue_line("markers", f"{name}: {doc}")
