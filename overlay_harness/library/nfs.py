"""An NFS lower layer: an NFSv3 export served from a network namespace of the guest
(joined by a veth pair, driven by in_guest/netns.py) and mounted, soft, in the guest's
own namespace."""

import importlib.util
import os

import pytest

from ..host.vng import guest_python
from ..in_guest import script
from .features import require
from .overlay import Overlay, make_tree

NFS_CLIENT = "169.254.231.1"   # link-local /30 on a veth pair inside the guest
NFS_SERVER = "169.254.231.2"
TIMEO, RETRANS = 10, 2        # deciseconds, retransmissions: soft requests give up fast
NFS_OPTIONS = (f"vers=3,proto=tcp,mountproto=tcp,nolock,soft,timeo={TIMEO},retrans={RETRANS},"
               f"lookupcache=none,actimeo=0,addr={NFS_SERVER},mountaddr={NFS_SERVER}")
NFS_TOOLS = ("/usr/sbin/rpcbind", "/usr/sbin/rpcinfo", "/usr/sbin/rpc.mountd",
             "/usr/sbin/rpc.nfsd", "/usr/sbin/exportfs")
# The guest shares the host's root: the helper runs there with the guest's system python
# (it starts in a fraction of the venv's time under TCG) and finds pyroute2 where the
# host has it.
HELPER = script("netns.py")
NETCTL = "/run/ovh-netctl.sock"  # the guest's network control process: one per VM


def pyroute2_site():
    spec = importlib.util.find_spec("pyroute2")
    return None if spec is None else os.path.dirname(spec.submodule_search_locations[0])


class NfsLower:
    """An NFS export served from a network namespace of the guest (overlay_harness/in_guest/netns.py)
    and mounted, soft, in the guest's own namespace: the lower layer of an overlay."""

    def __init__(self, guest, tree):
        self.guest = guest
        self.tree = tree                   # {path: data} the export starts with
        top = guest.scratch
        self.export = f"{top}/export"      # the server's directory (changed "on the server")
        self.mnt = f"{top}/nfs"            # the client mount: the overlay's lower
        self.ns = f"{top}/netns/ovh-nfs"   # bound by pyroute2; its dir is bind-mounted
        self.state = f"{top}/nfs-state"
        self.veth, self.peer = "ovhnfs0", "ovhnfs1"

    def helper(self, *argv, timeout=120, check=True):
        """overlay_harness/in_guest/netns.py in the guest: -S for a cheap start, -I to keep the cwd (maybe
        inside the overlay) off sys.path."""
        return self.guest.run([guest_python(), "-I", "-S", HELPER, *argv], timeout=timeout,
                              check=check)

    def start(self):
        """Start the server in its namespace and mount the export in the guest (stopped
        at the end of the case); returns self."""
        g = self.guest
        make_tree(g, self.export, self.tree)
        g.must.makedirs(os.path.dirname(self.ns))
        g.defer(self._check_gone)  # runs last: nothing of the server or the namespace is left
        self.helper("net-start", "--control", NETCTL, "--site", pyroute2_site(), timeout=420)
        g.defer(self._net_stop)
        self.helper("net-ctl", "--control", NETCTL, "setup", "--ns", self.ns, "--veth", self.veth,
                    "--peer", self.peer, "--addr", f"{NFS_CLIENT}/30",
                    "--peer-addr", f"{NFS_SERVER}/30")
        g.defer(self.helper, "nfs-stop", "--state", self.state)
        self.helper("nfs-start", "--ns", self.ns, "--state", self.state,
                    "--export", self.export, "--client", NFS_CLIENT, timeout=180)
        g.must.makedirs(self.mnt)
        assert g.mount(f"{NFS_SERVER}:{self.export}", self.mnt, "nfs", 0, NFS_OPTIONS) == 0, \
            "NFS mount of the guest's own server failed"
        g.defer(self._umount)
        return self

    def _net_stop(self):
        """Remove the veth pair, the namespace and its bind mount (through the control
        process; directly if it is gone)."""
        if self.helper("net-ctl", "--control", NETCTL, "stop", "--ns", self.ns,
                       "--veth", self.veth, check=False).rc == 0:
            return
        self.helper("teardown", "--ns", self.ns, "--veth", self.veth, "--site", pyroute2_site(),
                    timeout=300)

    def _check_gone(self):
        res = self.helper("leftovers", "--ns", self.ns, "--veth", self.veth, check=False)
        if res.rc != 0:
            raise AssertionError(f"left behind in the guest: {res.stdout.strip()} {res.stderr.strip()}")

    def _umount(self):
        if self.mnt in self.guest.mounts():
            self.guest.must.umount2(self.mnt, 0)

    def link(self, state):
        """Set the server's end of the veth pair up or down (pyroute2, in its namespace)."""
        self.helper("net-ctl", "--control", NETCTL, "link", self.peer, state, "--ns", self.ns)

    def overlay(self):
        """A mounted overlay with this export as its lower and the scratch tmpfs as upper."""
        ovl = Overlay(self.guest, "ovl", [self.mnt], f"{self.guest.scratch}/upperfs")
        assert ovl.mount() == 0
        return ovl


def skip_unless_nfs(guest):
    """Skip the case, naming what is missing, unless the guest can serve and mount NFS
    over a veth pair (kernel features, server tools, pyroute2)."""
    require(guest, "overlay", "nfs")
    missing = [p for p in NFS_TOOLS if not isinstance(guest.stat(p), dict)]
    if missing:
        pytest.skip(f"NFS server tools missing in the guest: {', '.join(missing)} "
                    "(Debian packages nfs-kernel-server, rpcbind; see setup.sh)")
    if pyroute2_site() is None:
        pytest.skip("pyroute2 missing from the project's venv (run ./setup.sh)")
    for module in ("nfsd", "nfs", "nfsv3", "veth"):
        guest.run(["modprobe", module], check=False)
    filesystems = guest.must.read_file("/proc/filesystems").decode().split()
    lacks = [fs for fs in ("nfsd", "nfs") if fs not in filesystems]
    if "veth" not in guest.facts.modules:  # built in or loadable (no /sys/module entry when built in)
        lacks.append("veth")
    if lacks:
        pytest.skip(f"kernel {guest.vm.kernel.release} lacks {', '.join(lacks)}")
