"""--target without a VM: the options' usage errors, and SshTarget against an OpenSSH server
the test starts on 127.0.0.1 with its own config and keys (tests/sshd.py): the SFTP copy into
a private directory, the agent's start as root, a wrong and an unknown host key, a refused
user, a call naming a block device of the machine's own, a lost session, a target that is
gone, and a reboot command that brings no new boot. The agent the tests start runs on this
host as root; they make no device, mount or sysctl change on it."""

import hashlib
import os
import signal
import subprocess

import pytest
from procs import wait_for
from sshd import SSHD, LocalSshd, available, keygen

from overlay_harness.host import target as target_mod
from overlay_harness.host.agent_client import GuestLost, GuestTimeout
from overlay_harness.host.vng import BootError
from overlay_harness.in_guest import script

PLUGINS = ["-p", "overlay_harness.plugin", "-p", "no:cacheprovider"]


# -- the options -----------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("root@host", "write ssh://[user@]host[:port]"),
    ("ftp://host", "write ssh://[user@]host[:port]"),
    ("ssh://host:99999", "the port is not a number"),
    ("ssh://host/some/path", "no path, password or query"),
    ("ssh://user:secret@host", "no path, password or query"),
])
def test_a_malformed_target_is_a_usage_error(text, message):
    with pytest.raises(target_mod.TargetUsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        target_mod.parse_target(text)


def test_a_target_names_user_host_and_port():
    assert target_mod.parse_target("ssh://alice@box.example:2222") == target_mod.TargetSpec(
        "alice", "box.example", 2222)
    spec = target_mod.parse_target("ssh://127.0.0.1", default_user="bob")
    assert (spec.user, spec.port, spec.known_hosts_name) == ("bob", 22, "127.0.0.1")
    assert target_mod.TargetSpec("root", "127.0.0.1", 2200).known_hosts_name == "[127.0.0.1]:2200"


@pytest.mark.parametrize("kwargs, message", [
    (dict(texts=["ssh://a", "ssh://b"]), "need one xdist worker each: -n 2"),
    (dict(texts=["ssh://a", "ssh://b"], workers=3), "one target per xdist worker"),
    (dict(texts=["ssh://a", "ssh://a"], workers=2), "names one machine twice"),
    (dict(texts=["ssh://a"], kernels=["6.1"]), "a target runs its own kernel"),
    (dict(texts=[], key_file="k"), "--target-key needs --target"),
    (dict(texts=[], reboot="true"), "--target-reboot needs --target"),
    (dict(texts=["ssh://a"], key_file="/nonexistent/key"), "no such readable file"),
])
def test_target_options_are_checked_before_anything_connects(kwargs, message):
    with pytest.raises(target_mod.TargetUsageError, match=message):
        target_mod.parse_targets(**kwargs)


def test_two_targets_and_one_worker_stop_the_run_before_it_starts(pytester):
    """The plugin turns a bad --target into a usage error (exit 4) at start-up; the addresses
    (TEST-NET-1, never reached) show that nothing connected: it would have timed out."""
    pytester.makepyfile(test_k="def test_k(guest):\n    pass\n")
    result = pytester.runpytest(*PLUGINS, "--target=ssh://192.0.2.1", "--target=ssh://192.0.2.2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "2 --target machines need one xdist worker each: -n 2" in result.stderr.str()


# -- against a local sshd -------------------------------------------------------------
@pytest.fixture
def sshd(tmp_path):
    why = available()
    if why:
        pytest.skip(why)
    server = LocalSshd(tmp_path / "sshd", users=("root",)).start()
    yield server
    server.stop()


@pytest.fixture
def known_hosts(tmp_path, sshd):
    path = tmp_path / "known_hosts"
    path.write_text(sshd.known_hosts_line())
    return path


def make_target(sshd, tmp_path, known_hosts, user="root", **kw):
    spec = target_mod.TargetSpec(user, "127.0.0.1", sshd.port)
    kw.setdefault("key_file", str(sshd.client_key))
    return target_mod.SshTarget(spec, target_mod.target_kernel(spec), tmp_path / "work",
                                known_hosts=str(known_hosts), **kw)


@pytest.fixture
def target(sshd, tmp_path, known_hosts):
    machine = make_target(sshd, tmp_path, known_hosts, boot_timeout=30, call_timeout=30)
    yield machine
    machine.stop()


def session_processes(pid):
    """`pid` and its ancestors up to the connection's own sshd process ("sshd: user@..."):
    the agent and what carries its session."""
    chain = []
    while pid > 1:
        chain.append(pid)
        if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"sshd: "):
            return chain
        pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    raise AssertionError(f"no sshd session process above {chain}")


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_the_scripts_go_into_a_private_directory_and_the_agent_runs_there_as_root(target):
    target.start()
    remote = target.remote_dir
    st = os.stat(remote)  # the "target" is this host: its directory can be looked at here
    assert st.st_mode & 0o777 == 0o700 and st.st_uid == 0
    here = script("agent.py").parent
    assert sorted(os.listdir(remote)) == sorted(p.name for p in here.glob("*.py"))
    for path in here.glob("*.py"):
        assert sha(f"{remote}/{path.name}") == sha(path), path.name
    info = target.agent.request("ping")
    status = open(f"/proc/{info['pid']}/status").read()
    assert "\nUid:\t0\t0\t0\t0\n" in status
    cmdline = open(f"/proc/{info['pid']}/cmdline", "rb").read().split(b"\0")
    assert os.path.basename(cmdline[0]) == b"python3"  # the login's python3, from its PATH
    assert cmdline[1:4] == [b"-I", b"-S", f"{remote}/agent.py".encode()]
    assert target.guest_release == target.kernel.release == os.uname().release
    assert target.alive()
    # a guest-side script named by its host path runs as its copy on the target
    out = target.agent.request("run", [["cat", str(script("netns.py"))]])
    assert out["rc"] == 0 and out["stdout"] == open(script("netns.py")).read()
    target.stop()
    assert not os.path.exists(remote)
    assert wait_for(lambda: not os.path.exists(f"/proc/{info['pid']}"), timeout=10), "the agent stayed"


def test_an_unknown_host_key_says_how_to_accept_it(sshd, tmp_path):
    machine = make_target(sshd, tmp_path, tmp_path / "empty_known_hosts")
    with pytest.raises(target_mod.UnknownHostKey) as e:
        machine.start()
    fp = subprocess.run(["ssh-keygen", "-lf", str(sshd.host_key) + ".pub"], capture_output=True,
                        text=True, check=True).stdout.split()[1]
    assert fp in str(e.value)  # the fingerprint to check on the machine
    assert f"ssh-keyscan -p {sshd.port} -t ssh-ed25519 127.0.0.1 >> {tmp_path}/empty_known_hosts" \
        in str(e.value)
    assert machine.ssh is None and machine.remote_dir is None


def test_a_wrong_host_key_is_refused(sshd, tmp_path):
    other = keygen(tmp_path / "other_host_key")
    kind, key = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    machine = make_target(sshd, tmp_path, tmp_path / "known_hosts")
    with pytest.raises(BootError, match="is not the one .* has for \\[127.0.0.1\\]:") as e:
        machine.start()
    assert "ssh-keygen -f" in str(e.value) and other.exists()
    assert machine.ssh is None


def test_a_refused_user_is_named(sshd, tmp_path, known_hosts):
    machine = make_target(sshd, tmp_path, known_hosts, user="nobody")  # not in AllowUsers
    with pytest.raises(BootError, match=f"refused user nobody with --target-key {sshd.client_key}"):
        machine.start()
    wrong = keygen(tmp_path / "wrong_key")
    machine = make_target(sshd, tmp_path, known_hosts, key_file=str(wrong))
    with pytest.raises(BootError, match="refused user root"):
        machine.start()


def test_a_block_device_of_the_machines_own_is_refused_before_it_is_sent(target, tmp_path):
    target.start()
    assert target.own_rdevs, "this host has block devices of its own"
    major, minor = sorted(target.own_rdevs)[0]
    name = next(n for n in os.listdir("/sys/class/block")
                if open(f"/sys/class/block/{n}/dev").read().strip() == f"{major}:{minor}")
    ran = tmp_path / "ran"
    for path in (f"/dev/{name}", "/dev/disk/by-uuid/x"):
        with pytest.raises(target_mod.RefusedDevice, match="of .*'s own"):
            target.agent.request("run", [["sh", "-c", f"touch {ran}; : {path}"]])
        assert not ran.exists(), f"the call naming {path} reached the agent"
    assert not target.agent.broken
    assert target.agent.request("run", [["sh", "-c", f"touch {ran}; : /dev/null"]])["rc"] == 0
    assert ran.exists()  # a character device is no block device of its own


def test_a_lost_agent_is_lost_and_a_new_session_replaces_it(target):
    target.start()
    first = target.agent.request("ping")["pid"]
    old_dir = target.remote_dir
    os.kill(first, signal.SIGKILL)
    with pytest.raises(GuestLost):
        target.agent.request("ping")
    assert not target.alive()
    target.restart()  # SSH still answers: a new session, no reboot needed
    assert target.boots == 2 and target.agent.request("ping")["pid"] != first
    assert not os.path.exists(old_dir) and os.path.isdir(target.remote_dir)


def test_a_hung_agent_times_out_and_a_silent_target_is_lost(target, sshd):
    target.start()
    pid = target.agent.request("ping")["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(GuestTimeout):  # SSH answers: the agent hangs
            target.agent.request("ping", timeout=1)
        target.agent.broken = None
        sshd.stop()  # no SSH server greets a new connection any more
        with pytest.raises(GuestLost, match="stopped answering"):
            target.agent.request("ping", timeout=1)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_target_that_is_gone_stays_gone_without_a_reboot_command(target, sshd):
    target.start()
    left = target.remote_dir
    pid = target.agent.request("ping")["pid"]
    sshd.stop()
    for p in session_processes(pid):  # the connection's own sshd processes, and the agent
        os.kill(p, signal.SIGKILL)
    with pytest.raises(GuestLost):
        target.agent.request("ping")
    with pytest.raises(target_mod.TargetGone, match="without --target-reboot"):
        target.restart()
    with pytest.raises(target_mod.TargetGone):  # at once, for each of the worker's next cases
        target.start()
    assert os.path.isdir(left) and target.stale_dirs == [left]  # kept, for the next session
    sshd.start()
    target.gone = None
    target.start()
    assert not os.path.exists(left) and not target.stale_dirs  # the next session removed it


def test_a_reboot_command_must_bring_a_new_boot(target, tmp_path):
    target.start()
    target.reboot = f"touch {tmp_path}/rebooted"  # reboots nothing: the boot_id stays
    target.boot_timeout = 4
    with pytest.raises(BootError, match="no new boot answered SSH 4 s after --target-reboot"):
        target.restart()
    assert (tmp_path / "rebooted").exists()
    target.reboot = "exit 3"
    with pytest.raises(BootError, match="--target-reboot exited with 3"):
        target.restart()


def test_a_target_down_when_its_session_starts_is_brought_up_by_the_reboot_command(target, sshd):
    """A machine that is off when the run (or the next session) starts: the reboot command
    (here: start the SSH server again, as a power switch would) runs first, then the session."""
    sshd.stop()
    assert not target.answers()
    target.reboot = f"{SSHD} -f {sshd.dir / 'sshd_config'}"  # sshd daemonizes: the machine is 'on'
    try:
        target.start()
        assert target.boots == 1 and target.agent.request("ping")["pid"]
    finally:
        target.stop()
        os.kill(int((sshd.dir / "sshd.pid").read_text()), signal.SIGTERM)


def test_a_target_run_boots_nothing_here(pytester):
    """With --target the header names the target and no kernel, accelerator (no KVM probe)
    or host preflight; collecting connects to nothing (TEST-NET-1 is never reached)."""
    pytester.makepyfile(test_k="def test_k(guest):\n    pass\n")
    result = pytester.runpytest(*PLUGINS, "--target=ssh://alice@192.0.2.1:2222", "--collect-only")
    assert result.ret == 0
    out = result.stdout.str()
    assert "target: ssh://alice@192.0.2.1:2222" in out
    assert "accel:" not in out and "kernel:" not in out and "qemu:" not in out


def test_one_target_per_xdist_worker(pytester):
    """-n must match the targets: one each (the controller checks, before any worker
    connects); matching, the workers start and collect without connecting."""
    pytest.importorskip("xdist")
    pytester.makepyfile(test_k="def test_k(guest):\n    pass\n")
    bad = pytester.runpytest_subprocess(*PLUGINS, "-n", "2", "--target=ssh://192.0.2.1")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "1 --target machine(s) and -n 2: one target per xdist worker (-n 1)" in bad.stderr.str()
    good = pytester.runpytest_subprocess(*PLUGINS, "-n", "2", "--target=ssh://192.0.2.1",
                                         "--target=ssh://192.0.2.2", "--collect-only")
    assert good.ret == 0, good.stdout.str() + good.stderr.str()


def test_a_target_that_refuses_the_connection_stops_the_run_naming_the_target(pytester):
    """Nothing listens on the port: the run stops before its first case (exit 3) with the
    target's name and the reason, not as a VM that did not boot."""
    from sshd import free_port
    port = free_port()
    pytester.makepyfile(test_k="def test_k(guest):\n    pass\n")
    result = pytester.runpytest_subprocess(*PLUGINS, f"--target=ssh://root@127.0.0.1:{port}",
                                           f"--results-dir={pytester.path / 'results'}")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 3, out
    assert f"the target ssh://root@127.0.0.1:{port} gave no session" in out, out
    assert "the VM did not boot" not in out
