"""A real SSH server on 127.0.0.1 for the SSH tests and bench/bench_trial_cost.py: OpenSSH's
sshd or dropbear (the `mini` guest's server), as a child process with its own host key,
authorized key and config in a temporary directory. Needs root (as the guests' SSH does).

The server runs in a mount namespace of its own where /etc/passwd gives root /bin/sh and a
temporary home, like the guests: a host's root login shell may read a ~/.bashrc that costs
tens of milliseconds (pyenv's init here) and prints on stderr, which is the host's, not the
protocol's. Without `unshare` the server runs as is, and says so in `clean_shell`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.guests.spec import pick_free_port

SERVERS = ("openssh", "dropbear")


@dataclass(frozen=True)
class Server:
    port: int
    host_key: str  # "ssh-ed25519 AAAA..."
    client_key: Path
    server: str
    clean_shell: bool


def available(server: str) -> str:
    """Why `server` cannot run here ("" if it can)."""
    if os.geteuid() != 0:
        return "needs root"
    binary = "/usr/sbin/sshd" if server == "openssh" else shutil.which("dropbear")
    return "" if binary and Path(binary).exists() else f"no {server} binary"


@contextmanager
def loopback_sshd(tmp: Path, server: str = "openssh") -> Iterator[Server]:
    """A running `server` on a free port of 127.0.0.1; stopped (by its pid) on exit."""
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    key = tmp / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True, timeout=30)
    authorized = home / ".ssh/authorized_keys"
    shutil.copyfile(key.with_suffix(".pub"), authorized)
    authorized.chmod(0o600)
    port = pick_free_port()
    host_key, argv = (_openssh if server == "openssh" else _dropbear)(tmp, authorized, port)
    clean = shutil.which("unshare") is not None
    if clean:
        argv = _with_clean_root(tmp, home, argv)
    daemon = subprocess.Popen(argv, stdout=subprocess.DEVNULL,  # noqa: S603
                              stderr=(tmp / "server.log").open("wb"))
    try:
        _wait_listening(port, daemon, tmp / "server.log")
        yield Server(port, host_key, key, server, clean)
    finally:
        daemon.kill()
        daemon.wait(timeout=30)


def _openssh(tmp: Path, authorized: Path, port: int) -> tuple[str, list[str]]:
    key = tmp / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True, timeout=30)
    config = tmp / "sshd_config"
    config.write_text(f"HostKey {key}\nAuthorizedKeysFile {authorized}\nListenAddress 127.0.0.1\n"
                      "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                      "PidFile none\nStrictModes no\nLogLevel ERROR\n"
                      "Subsystem sftp internal-sftp\n")
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    return public, ["/usr/sbin/sshd", "-D", "-e", "-f", str(config), "-p", str(port)]


def _dropbear(tmp: Path, authorized: Path, port: int) -> tuple[str, list[str]]:
    from orchestrator.guests.images import dropbear_host_key

    key = tmp / "dropbear_host_key"
    public = dropbear_host_key(key)
    # -F foreground, -E log to stderr, -s no passwords: as the mini guest's init runs it
    return public, ["dropbear", "-F", "-E", "-s", "-p", f"127.0.0.1:{port}", "-r", str(key)]


def _with_clean_root(tmp: Path, home: Path, argv: list[str]) -> list[str]:
    """argv run where root's passwd line says /bin/sh and `home` (module docstring)."""
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "root":
            fields[5], fields[6] = str(home), "/bin/sh"
        lines.append(":".join(fields))
    passwd = tmp / "passwd"
    passwd.write_text("\n".join(lines) + "\n")
    script = f'mount --bind "{passwd}" /etc/passwd && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def _wait_listening(port: int, daemon: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if daemon.poll() is not None:
            raise RuntimeError(f"the SSH server exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the SSH server did not listen on {port} within 20 s")
