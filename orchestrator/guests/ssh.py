"""SSH into guests: pinned host keys, a per-run client key, argv in, proc.py's contract out.

The host key is the one recorded when the image was built; anything else is refused (no
AutoAddPolicy). Each command is killed in the guest at its timeout (by orch-runner, or the
guest's `timeout -s KILL`), and the client has its own deadline too, so neither a hung workload
nor a dead guest can hang the run.

Per-command cost (issue #21): commands go through one long-lived runner channel (runner.py)
instead of a session each, and the socket has TCP_NODELAY from before the handshake. Without
it, paramiko's CHANNEL_CLOSE of one command and the CHANNEL_OPEN of the next are two small
writes in a row, and Nagle holds the second until the server's delayed ACK of the first:
40 ms per command on Linux. A caller arriving while the runner is busy (another thread) gets
a channel of its own, as before.
"""

from __future__ import annotations

import base64
import logging
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import paramiko

from orchestrator import proc
from orchestrator.errors import HarnessError
from orchestrator.guests.runner import ARGV, Runner, timeout_command
from orchestrator.proc import CommandError, Completed

log = logging.getLogger(__name__)
# paramiko logs every refused connection while a guest boots at ERROR: that is expected noise
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

GRACE_S = 15.0  # the channel deadline beyond the guest-side kill


def new_run_key(directory: Path) -> tuple[Path, str]:
    """A fresh Ed25519 client key for one run; returns (private key path, public key line)."""
    key = directory / "ssh_key"
    if not key.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # ssh-keygen makes it 0600
        proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "orchestrator-run",
                  "-f", str(key)], timeout=30)
    return key, key.with_suffix(".pub").read_text().strip()


def kernel_key_arg(public_line: str) -> str:
    """The kernel command line word that hands the guest its authorized key."""
    return "orch.ssh_key=" + base64.b64encode(public_line.encode()).decode()


def _pinned(host_key_line: str) -> paramiko.PKey:
    kind, blob = host_key_line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))


class ConnectionLost(CommandError):
    """The SSH connection died under a command (the guest crashed, or its sshd went away)."""


class GuestSession:
    """One persistent SSH connection to a guest."""

    def __init__(self, host: str, port: int, *, user: str, key: Path, host_key: str,
                 connect_timeout: float) -> None:
        self.host, self.port = host, port
        self._runner: Runner | None = None
        self._helper: str | None = None
        self._runner_lock = threading.Lock()
        self._client = paramiko.SSHClient()
        self._client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self._client.get_host_keys().add(f"[{host}]:{port}", host_key.split()[0],
                                         _pinned(host_key))
        try:
            self._client.connect(host, port, username=user, key_filename=str(key),
                                 sock=_connect(host, port, connect_timeout),
                                 timeout=connect_timeout, banner_timeout=connect_timeout,
                                 auth_timeout=connect_timeout, look_for_keys=False,
                                 allow_agent=False)
        except paramiko.BadHostKeyException as exc:
            self._client.close()
            raise HarnessError(f"host key mismatch for {host}:{port}: refused",
                               hint="the guest is not the image that was built; rebuild it "
                                    "with `orchestrate image build --force`") from exc
        except (paramiko.SSHException, OSError) as exc:
            self._client.close()
            raise ConnectionError(str(exc)) from exc

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True) -> Completed:
        argv = [str(a) for a in argv]
        if any("\0" in a for a in argv):  # execve could not take it either
            raise CommandError(argv, None, reason="has an argument with a NUL byte",
                               hint="remove the NUL from the suite's parameters")
        log.debug("+ ssh %s:%d %s", self.host, self.port, shlex.join(argv))
        start = time.monotonic()
        try:
            out, err, status = self._exec(argv, timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionLost(argv, None, reason=f"lost the guest ({exc})",
                               hint="see the guest console log in the run's logs/") from None
        # The guest-side SIGKILL shows as 137, or as -1 when the server reports the signal
        # instead of a status; only the elapsed time tells it from a crash by signal.
        if status in (-1, 124, 137) and time.monotonic() - start >= timeout * 0.95:
            raise CommandError(argv, None, out, err, reason=f"timed out after {timeout:g}s")
        if status == -1:  # no exit status: the connection died, or a signal killed it
            transport = self._client.get_transport()
            if transport is None or not transport.is_active():
                raise ConnectionLost(argv, None, out, err, reason="lost the guest mid-command",
                                   hint="see the guest console log in the run's logs/")
            raise CommandError(argv, -1, out, err, reason="was killed by a signal")
        done = Completed(tuple(argv), status, out, err)
        if check and status != 0:
            raise CommandError(argv, status, out, err)
        return done

    def put(self, files: dict[Path, str], *, mode: int = 0o755) -> None:
        """Copies each local file to its guest path over SFTP (on this connection), with mode."""
        try:
            with self._client.open_sftp() as sftp:
                for local, remote in files.items():
                    sftp.put(str(local), remote)
                    sftp.chmod(remote, mode)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HarnessError(f"copying files into the guest failed: {exc}",
                               hint="does the guest's sshd offer SFTP (Subsystem sftp)?"
                               ) from None

    def use_helper(self, path: str) -> None:
        """From the next runner on, commands go through the guest's orch-runner at `path` (a
        runner that cannot start it falls back to the shell loop)."""
        with self._runner_lock:
            self._helper = path
            self._drop_runner()

    def runner_kind(self) -> str:
        """What carries this session's commands: "orch-runner", or "sh" (the shell loop and the
        guest's `timeout`); starts the runner if no command has yet."""
        with self._runner_lock:
            transport = self._client.get_transport()
            runner = self._started_runner(transport, GRACE_S) if transport else None
            return "orch-runner" if runner and runner.protocol == ARGV else "sh"

    def _exec(self, argv: Sequence[str], timeout: float) -> tuple[str, str, int]:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("the connection is closed")
        if not self._runner_lock.acquire(blocking=False):  # the runner is busy
            return _exec_channel(transport, timeout_command(argv, timeout), timeout + GRACE_S)
        try:
            return self._through_runner(transport, argv, timeout)
        finally:
            self._runner_lock.release()

    def _through_runner(self, transport: paramiko.Transport, argv: Sequence[str],
                        timeout: float) -> tuple[str, str, int]:
        """One command through the runner, started on first use. A runner that timed out or
        ended is dropped (the next command starts a fresh one); a runner that ended under a
        live connection was killed with its command (e.g. by a `kill 0`): a signal death."""
        deadline_s = timeout + GRACE_S
        runner = self._started_runner(transport, deadline_s)
        try:
            out, err, status = runner.call(argv, timeout, time.monotonic() + deadline_s)
        except EOFError:
            self._drop_runner()
            if not transport.is_active():
                raise
            return "", "", -1
        except BaseException:
            self._drop_runner()
            raise
        return out.decode(errors="replace"), err.decode(errors="replace"), status

    def _started_runner(self, transport: paramiko.Transport, deadline_s: float) -> Runner:
        """The session's runner, started now if it has none (caller holds the runner lock)."""
        if self._runner is None:
            self._runner = Runner(transport, deadline_s, self._helper)
        return self._runner

    def _drop_runner(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def close(self) -> None:
        self._drop_runner()
        self._client.close()

    def __enter__(self) -> GuestSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """The TCP connection, with TCP_NODELAY before any SSH byte is sent (module docstring)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _exec_channel(transport: paramiko.Transport, command: str,
                  deadline_s: float) -> tuple[str, str, int]:
    """One command on a channel of its own (a second caller while the runner is busy)."""
    channel = transport.open_session(timeout=deadline_s)
    channel.settimeout(deadline_s)
    try:
        channel.exec_command(command)
        channel.shutdown_write()
        out, err = _drain(channel, time.monotonic() + deadline_s)
        return out, err, channel.recv_exit_status()
    finally:
        channel.close()


def _drain(channel: paramiko.Channel, deadline: float) -> tuple[str, str]:
    out, err = bytearray(), bytearray()
    while not (channel.exit_status_ready() and not channel.recv_ready()
               and not channel.recv_stderr_ready()):
        if time.monotonic() > deadline:
            raise TimeoutError("no exit status before the deadline")
        if channel.recv_ready():
            out += channel.recv(65536)
        elif channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
        elif channel.closed:
            break
        else:  # woken by data, EOF or close; the exit status alone sets no event: 50 ms cap
            select.select([channel], [], [], min(0.05, max(0.0, deadline - time.monotonic())))
    return out.decode(errors="replace"), err.decode(errors="replace")


def wait_for_ssh(host: str, port: int, *, user: str, key: Path, host_key: str,
                 deadline_s: float, alive: Callable[[], bool],
                 console: Callable[[], str]) -> GuestSession:
    """Retry until SSH answers with the pinned key, the guest dies, or the deadline passes."""
    end = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < end:
        if not alive():
            raise HarnessError(f"the guest died while booting ({console()})",
                               hint="a kernel panic or a bad image (see the console log)")
        try:
            return GuestSession(host, port, user=user, key=key, host_key=host_key,
                                connect_timeout=min(10.0, max(1.0, end - time.monotonic())))
        except ConnectionError as exc:
            last = str(exc)
            time.sleep(0.5)
    raise HarnessError(f"no SSH from the guest within {deadline_s:g}s ({last}; console "
                       f"{console()})", hint="raise timeouts.boot, or check the image")
