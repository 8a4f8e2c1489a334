"""A throwaway OpenSSH server on 127.0.0.1 for the harness's own tests: its own config,
host key, client key and authorized_keys in a test's tmp_path, started by the test and
stopped by it (never the system's service; `apt-get install openssh-server`, which
setup.sh does, only installs it)."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; its service unit makes it


def available():
    """Why a local sshd cannot run here, or None when it can."""
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is not installed (setup.sh installs openssh-server)"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen is not installed (openssh-client)"
    if os.geteuid() != 0:
        return "sshd runs as root here (it changes to the user who logs in)"
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path, kind="ed25519"):
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "ovh-test", "-f", str(path)],
                   check=True)
    return path


class LocalSshd:
    """sshd -D on 127.0.0.1:<free port>, logins by key for `users` only."""

    def __init__(self, directory, users=("root",)):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(self.dir / "host_key")
        self.client_key = keygen(self.dir / "client_key")
        (self.dir / "authorized_keys").write_text((self.dir / "client_key.pub").read_text())
        self.users = users
        self.port = None
        self.proc = None
        self.log = self.dir / "sshd.log"

    def config(self):
        sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/lib/ssh/sftp-server")
                     if os.path.exists(p)), "internal-sftp")
        return "\n".join([
            "ListenAddress 127.0.0.1", f"Port {self.port}", f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}", f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "StrictModes no", "UsePAM no", f"AllowUsers {' '.join(self.users)}",
            f"Subsystem sftp {sftp}", "LogLevel VERBOSE", ""])

    def start(self, timeout=10.0):
        if not PRIVSEP_DIR.is_dir():  # what Debian's sshd.service makes (RuntimeDirectory)
            PRIVSEP_DIR.mkdir(mode=0o755)
        self.port = self.port or free_port()
        conf = self.dir / "sshd_config"
        conf.write_text(self.config())
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(4) == b"SSH-":
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port}: {self.log.read_text()}")

    def known_hosts_line(self):
        kind, key = (self.dir / "host_key.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {key}\n"

    def stop(self):
        """Stop the listener (connections already made keep their own sshd processes)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
