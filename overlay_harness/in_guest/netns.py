"""Guest-side helper: a network namespace joined to the guest's own by a veth pair,
an NFS server inside that namespace, and the link between them cut and restored.

Runs inside the guest, as root, with -I -S (a cheap start under TCG; -I also keeps
the current directory, maybe inside an overlay whose NFS lower is cut off, off
sys.path). pyroute2 is imported from --site, the directory it is installed in (the
guest shares the host's root, so the project's venv is there):

    H="python3 -I -S overlay_harness/in_guest/netns.py"
    $H net-start --control SOCK --site DIR
    $H net-ctl --control SOCK setup --ns PATH --veth NAME --peer NAME --addr A/N --peer-addr B/N
    $H net-ctl --control SOCK link NAME up|down [--ns PATH]
    $H net-ctl --control SOCK stop --ns PATH --veth NAME
    $H teardown --ns PATH --veth NAME --site DIR
    $H nfs-start --ns PATH --state DIR --export DIR --client IP [--fsid N]
    $H nfs-stop --state DIR
    $H leftovers --ns PATH --veth NAME

Importing pyroute2 takes several seconds in a TCG guest, so `net-start` forks one
control process per VM that imports it once and serves requests on a UNIX socket
(when one already answers there, `net-start` only says so): `setup` makes a
namespace (pyroute2's netns.create, bound at PATH, whose directory pyroute2
bind-mounts onto itself as `ip netns add` does with /run/netns), the veth pair with
one end moved into it and addresses on both ends; `link` sets an end up or down;
`stop` removes the veth pair, the namespace and the bind mount. `teardown` does the
same removal without the control process (a fallback).

`nfs-start` forks a supervisor that enters the namespace and a private mount
namespace (so its tmpfs on /var/lib/nfs and its nfsd filesystem on /proc/fs/nfsd
are never seen by the guest's own mount table), starts rpcbind and rpc.mountd,
exports DIR to IP, starts the kernel server (NFSv3) with rpc.nfsd, and reports
ready. `nfs-stop` signals the supervisor, which stops nfsd (`rpc.nfsd 0`),
unexports, and ends its daemons. The supervisor's log is DIR/server.log.
`leftovers` lists (and fails on) server processes, nfsd threads, the veth and the
namespace still there once all was stopped.
"""

import argparse
import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
READY = b"READY"

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
LIBC.unshare.argtypes = [ctypes.c_int]
LIBC.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _check(ret, what):
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def _mount(source, target, fstype, flags=0, data=None):
    enc = [None if s is None else os.fsencode(s) for s in (source, target, fstype, data)]
    _check(LIBC.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {target}")


def _enter_netns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        _check(LIBC.setns(fd, CLONE_NEWNET), f"setns {path}")
    finally:
        os.close(fd)


def _split(cidr):
    addr, _, plen = cidr.partition("/")
    return addr, int(plen or 32)


def _pyroute2(site=None):
    """Import pyroute2 (sys.path lacks site-packages under -S: `site` is where it is)."""
    if site and site not in sys.path:
        sys.path.append(site)
    import pyroute2
    from pyroute2 import netns
    return pyroute2.IPRoute, netns


# -- namespace and veth ----------------------------------------------------------
def setup(ns, veth, peer, addr, peer_addr):
    IPRoute, netns = _pyroute2()
    netns.create(ns)
    nsfd = os.open(ns, os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=veth, kind="veth", peer=peer)
            ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], net_ns_fd=nsfd)
            idx = ipr.link_lookup(ifname=veth)[0]
            a, plen = _split(addr)
            ipr.addr("add", index=idx, address=a, prefixlen=plen)
            ipr.link("set", index=idx, state="up")
    finally:
        os.close(nsfd)
    with IPRoute(netns=ns, flags=0) as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        idx = ipr.link_lookup(ifname=peer)[0]
        a, plen = _split(peer_addr)
        ipr.addr("add", index=idx, address=a, prefixlen=plen)
        ipr.link("set", index=idx, state="up")


def link(ifname, state, ns=None):
    IPRoute, _netns = _pyroute2()
    kwargs = {"netns": ns, "flags": 0} if ns else {}
    with IPRoute(**kwargs) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise RuntimeError(f"no interface {ifname} in {ns or 'the initial namespace'}")
        ipr.link("set", index=found[0], state=state)
        got = ipr.get_links(found[0])[0].get_attr("IFLA_OPERSTATE")
    return f"{ifname}: {state} (operstate {got})"


def teardown(ns, veth, site=None):
    """Remove the veth pair (both ends go together), the namespace and its directory's
    bind mount. Each step is tried; an exception lists the ones that failed."""
    IPRoute, netns = _pyroute2(site)
    failed = []
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=veth)
        if found:
            try:
                ipr.link("del", index=found[0])
            except Exception as e:  # keep going: the namespace must still go
                failed.append(f"del {veth}: {e}")
    if os.path.exists(ns):
        try:
            netns.remove(ns)
        except OSError as e:
            failed.append(f"remove {ns}: {e}")
    rundir = os.path.dirname(ns)
    if _is_mountpoint(rundir) and LIBC.umount2(os.fsencode(rundir), 0) < 0:
        failed.append(f"umount {rundir}: {os.strerror(ctypes.get_errno())}")
    if failed:
        raise RuntimeError("; ".join(failed))
    return f"removed {veth}, {ns}"


def _is_mountpoint(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def _daemonize(logfile):
    """Fork; the child gets its own session, / as cwd and the log as stdout/stderr.
    Returns (pid, read end) in the parent and (0, write end) in the child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        return pid, r
    os.close(r)
    os.setsid()
    os.chdir("/")
    log = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    return 0, w


def _child(w, body):
    """Run body(w) in a forked child and leave, whatever happens."""
    rc = 1
    try:
        rc = body(w)
    except BaseException as e:  # the log is the only report
        import traceback
        traceback.print_exc()
        _log(f"failed: {e!r}")
    finally:
        sys.stdout.flush()
        os._exit(rc)


def _wait_ready(pid, r, timeout, logfile, what):
    got = b""
    deadline = time.monotonic() + timeout
    while READY not in got:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            break
        chunk = os.read(r, 64)
        if not chunk:
            break
        got += chunk
    os.close(r)
    if READY in got:
        print(f"{what} ready: pid {pid}")
        return True
    print(f"{what} did not start (pid {pid}); its log:", file=sys.stderr)
    print(_read(logfile)[-4000:], file=sys.stderr)
    return False


def _request(control, req, timeout):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    conn.connect(control)
    with conn, conn.makefile("rwb") as f:
        f.write(json.dumps(req).encode() + b"\n")
        f.flush()
        return json.loads(f.readline() or b'{"error": "no answer"}')


def net_start(args):
    try:
        if "ok" in _request(args.control, {"cmd": "ping"}, timeout=10):
            print(f"network control already serving on {args.control}")
            return 0
    except OSError:
        pass  # none yet (or a dead one's socket): start it
    logfile = args.control + ".log"
    pid, fd = _daemonize(logfile)
    if pid == 0:
        _child(fd, lambda w: _net_serve(args, w))
    if _wait_ready(pid, fd, args.timeout, logfile, "network control"):
        return 0
    _stop(pid, timeout=30)
    return 1


def _net_serve(args, ready_fd):
    _pyroute2(args.site)  # the slow part, once per VM
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(args.control):
        os.unlink(args.control)
    srv.bind(args.control)
    srv.listen(4)
    os.write(ready_fd, READY + b"\n")
    os.close(ready_fd)
    handlers = {
        "ping": lambda r: "pong",
        "setup": lambda r: setup(r["ns"], r["veth"], r["peer"], r["addr"], r["peer_addr"]),
        "link": lambda r: link(r["ifname"], r["state"], r.get("ns")),
        "stop": lambda r: teardown(r["ns"], r["veth"]),
    }
    while True:
        conn, _ = srv.accept()
        with conn, conn.makefile("rwb") as f:
            req = json.loads(f.readline() or b"{}")
            _log(f"request {req}")
            try:
                out = {"ok": handlers[req.get("cmd")](req)}
            except KeyError as e:
                out = {"error": f"bad request {req}: {e}"}
            except Exception as e:  # reported to the client
                out = {"error": f"{type(e).__name__}: {e}"}
            _log(f"answer {out}")
            f.write(json.dumps(out).encode() + b"\n")
            f.flush()


def net_ctl(args):
    req = {k: v for k, v in vars(args).items()
           if k in ("ns", "veth", "peer", "addr", "peer_addr", "ifname", "state") and v is not None}
    req["cmd"] = args.what
    out = _request(args.control, req, args.timeout)
    if args.what == "setup" and "ok" not in out:
        # a half-made namespace must not outlive the request
        _request(args.control, {"cmd": "stop", "ns": args.ns, "veth": args.veth}, args.timeout)
    if "ok" in out:
        print(out["ok"] if out["ok"] is not None else "done")
        return 0
    print(out["error"], file=sys.stderr)
    return 1


# -- NFS server --------------------------------------------------------------------
def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        raise
    except OSError as e:
        return f"({path}: {e})"


def _log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _run(argv, timeout=60):
    _log("run " + " ".join(argv))
    p = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    out = p.stdout.decode(errors="replace").strip()
    if out:
        _log(out)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {out}")
    return out


def _wait_for(what, probe, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if probe():
                return
        except Exception as e:  # not ready yet
            _log(f"{what}: {e}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.2)


def _rpcinfo_has(program):
    p = subprocess.run(["rpcinfo", "-p", "127.0.0.1"], check=False, capture_output=True,
                       timeout=10)
    return p.returncode == 0 and program in p.stdout.decode()


def _serve(args, ready_fd):
    _enter_netns(args.ns)
    _check(LIBC.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("ovh-nfs-state", "/var/lib/nfs", "tmpfs", 0, "mode=0755,size=16m")
    for d in ("sm", "sm.bak", "v4recovery", "rpc_pipefs"):
        os.mkdir(f"/var/lib/nfs/{d}")
    for f in ("etab", "rmtab", "xtab", "state"):
        open(f"/var/lib/nfs/{f}", "w").close()
    _mount("nfsd", "/proc/fs/nfsd", "nfsd")
    daemons = []
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    try:
        _log("start rpcbind -f")
        daemons.append(subprocess.Popen(["rpcbind", "-f"], stdin=subprocess.DEVNULL))
        _wait_for("rpcbind", lambda: _rpcinfo_has("portmapper"))
        _log("start rpc.mountd -F")
        daemons.append(subprocess.Popen(["rpc.mountd", "-F", "-N", "4"], stdin=subprocess.DEVNULL))
        _wait_for("rpc.mountd", lambda: _rpcinfo_has("mountd"))
        _run(["exportfs", "-i", "-o",
              f"rw,sync,no_subtree_check,no_root_squash,insecure,fsid={args.fsid}",
              f"{args.client}:{args.export}"])
        _run(["rpc.nfsd", "-N", "4", str(args.threads)])
        _wait_for("nfsd", lambda: _rpcinfo_has("nfs"))
        _log(f"versions {_read('/proc/fs/nfsd/versions')}; "
             f"threads {_read('/proc/fs/nfsd/threads')}")
        os.write(ready_fd, READY + b"\n")
        os.close(ready_fd)
        ready_fd = None
        while not stop:
            time.sleep(0.2)
        _log("stopping")
    finally:
        if ready_fd is not None:
            os.close(ready_fd)
        for argv in (["rpc.nfsd", "0"], ["exportfs", "-ua"], ["exportfs", "-f"]):
            try:
                _run(argv)
            except Exception as e:  # stop the rest all the same
                _log(f"{argv}: {e}")
        for p in reversed(daemons):
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=15)
            _log(f"{p.args[0]} exited {p.returncode}")
        LIBC.umount2(b"/proc/fs/nfsd", 0)
        LIBC.umount2(b"/var/lib/nfs", 0)
    return 0


def nfs_start(args):
    os.makedirs(args.state, exist_ok=True)
    logfile = f"{args.state}/server.log"
    pid, fd = _daemonize(logfile)
    if pid == 0:
        _child(fd, lambda w: _serve(args, w))
    with open(f"{args.state}/server.pid", "w") as f:
        f.write(f"{pid}\n")
    if _wait_ready(pid, fd, args.timeout, logfile, "nfs server"):
        return 0
    _stop(pid, timeout=30)
    return 1


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _stop(pid, timeout):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # only when it is our child
        except ChildProcessError:
            pass
        time.sleep(0.2)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)  # its own session: the supervisor and its daemons
        except ProcessLookupError:
            pass
        return False
    return True


def nfs_stop(args):
    pidfile = f"{args.state}/server.pid"
    try:
        pid = int(_read(pidfile))
    except FileNotFoundError:
        print("no server")
        return 0
    clean = _stop(pid, args.timeout)
    os.unlink(pidfile)
    print(_read(f"{args.state}/server.log")[-3000:])
    if not clean:
        print(f"supervisor {pid} did not stop in {args.timeout} s: killed", file=sys.stderr)
        return 1
    return 0


def leftovers(veth, ns):
    """What a stopped server and a removed namespace must not leave behind: server
    processes and kernel threads, its supervisor, the veth, the namespace."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(pid) == os.getpid() or not _alive(int(pid)):
            continue
        if comm in ("rpcbind", "rpc.mountd", "nfsd") or (
                "netns.py" in cmdline and "nfs-start" in cmdline):
            found.append(f"process {pid} {comm} ({cmdline or 'kernel thread'})")
    if os.path.exists(f"/sys/class/net/{veth}"):
        found.append(f"interface {veth}")
    if os.path.exists(ns):
        found.append(f"namespace {ns}")
    if _is_mountpoint(os.path.dirname(ns)):
        found.append(f"bind mount {os.path.dirname(ns)}")
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -I -S overlay_harness/in_guest/netns.py",
                                 description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("net-start", help="the per-VM control process (pyroute2)")
    p.add_argument("--control", required=True, help="its UNIX socket")
    p.add_argument("--site", help="the directory pyroute2 is installed in")
    p.add_argument("--timeout", type=float, default=300.0)
    p = sub.add_parser("net-ctl")
    p.add_argument("--control", required=True)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("what", choices=["setup", "link", "stop"])
    p.add_argument("ifname", nargs="?")
    p.add_argument("state", nargs="?", choices=["up", "down"])
    for opt in ("--ns", "--veth", "--peer", "--addr", "--peer-addr"):
        p.add_argument(opt)
    p = sub.add_parser("teardown")
    p.add_argument("--ns", required=True)
    p.add_argument("--veth", required=True)
    p.add_argument("--site")
    p = sub.add_parser("nfs-start")
    p.add_argument("--ns", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--export", required=True)
    p.add_argument("--client", required=True)
    p.add_argument("--fsid", type=int, default=1)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--timeout", type=float, default=120.0)
    p = sub.add_parser("nfs-stop")
    p.add_argument("--state", required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p = sub.add_parser("leftovers", help="exit 1 listing what is left of a server and namespace")
    p.add_argument("--ns", required=True)
    p.add_argument("--veth", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "leftovers":
        found = leftovers(args.veth, args.ns)
        print("\n".join(found) or "nothing left")
        return 1 if found else 0
    if args.cmd == "net-ctl":
        need = {"setup": ("ns", "veth", "peer", "addr", "peer_addr"), "link": ("ifname", "state"),
                "stop": ("ns", "veth")}[args.what]
        missing = [n for n in need if getattr(args, n) is None]
        if missing:
            ap.error(f"net-ctl {args.what} needs {', '.join(missing)}")
    if args.cmd == "teardown":
        print(teardown(args.ns, args.veth, args.site))
        return 0
    return {"net-start": net_start, "net-ctl": net_ctl, "nfs-start": nfs_start,
            "nfs-stop": nfs_stop}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
