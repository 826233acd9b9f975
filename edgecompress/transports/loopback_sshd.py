"""A throwaway OpenSSH server on 127.0.0.1: fresh host and user keys, key-only login, a known_hosts file for the
client. Used by the test suite and benchmarks/ssh_vs_local to drive the real SSH transport end to end, and by
anyone who wants to check the SSH path on one machine before pointing it at a Pi."""
from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SSHD = Path("/usr/sbin/sshd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def loopback_sshd(d: Path) -> Iterator["SshReach"]:  # noqa: F821 - imported lazily below
    """Start sshd with everything under folder d; yield an SshReach for the current user; stop it on exit."""
    from edgecompress.transports.reach import SshReach
    if not SSHD.exists():
        raise FileNotFoundError(f"{SSHD} not installed (apt-get install openssh-server; see .ci/install-system-deps)")
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "user_key"):
        if not (d / name).exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port = _free_port()
    sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                             "/usr/libexec/sftp-server") if Path(p).exists()), "internal-sftp")
    (d / "sshd_config").write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
# the temp dir is not root-owned 0755 all the way up, which StrictModes would reject
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# scp in OpenSSH >= 9 speaks SFTP
Subsystem sftp {sftp}
LogLevel ERROR
""")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation dir, normally made by the service unit
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {proc.stderr.read().decode()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within 15 s") from None
                time.sleep(0.1)
        host_pub = " ".join((d / "host_key.pub").read_text().split()[:2])
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
        yield SshReach(host="127.0.0.1", user=getpass.getuser(), port=port, key=str(d / "user_key"),
                       known_hosts=str(d / "known_hosts"), workdir=str(d / "remote"), python=sys.executable,
                       connect_timeout_s=5)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
