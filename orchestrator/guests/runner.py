"""The guest-side command runner: one long-lived SSH channel that runs commands one at a time.

A channel per command costs the server a session each time: OpenSSH forks a session child
and a login shell, dropbear also re-seeds its random pool from /proc in every child (about
7 ms on the host, far more under TCG). The runner is started once on its own channel, in one
of two forms, and says which in its ready line ("NONCE PROTOCOL"):

- protocol 1, `orch-runner` (guest-workloads/src/orch-runner.c), when the guest has it: each
  request is "NONCE MILLISECONDS LENGTH" and the argv, NUL-terminated; it forks the command
  into a process group of its own and kills the group at the deadline itself. No `timeout`
  process per command: that fork+exec was the largest part of an empty trial (issue #21).
- protocol 0, a POSIX shell loop, anywhere else (an image without the helper, a binary that
  does not run there): it reads one line per command ("NONCE COMMAND") and evals COMMAND, the
  quoted `timeout -s KILL N argv` a channel per command would run.

Either way the command runs with stdin from /dev/null, its output goes straight to the channel,
and the runner then writes "NONCE STATUS" on stdout and "NONCE" on stderr, so the client has all
of it once both markers are in. The nonce is fresh per command, so nothing a workload prints
can end its own output early.

Semantics kept from a channel per command: the same argv, stdin at EOF, stdout and stderr apart,
the exit status, the guest-side kill; a command killed by a signal reports -1 (what the SSH
servers report for a signal death), a runner can only say 128+N, so 129..192 map to -1.
A command's background child that keeps the runner's stdout or stderr open would have what it
prints later land in a later command's output; the harness's own (dirty.py) redirect theirs.
"""

from __future__ import annotations

import secrets
import select
import shlex
import time
from collections.abc import Sequence

import paramiko

# `read -r` takes one line; a newline inside an argument travels as "$NL" (see encode)
SCRIPT = """NL='
'
if [ -n "$2" ] && "$2" --version >/dev/null 2>&1; then exec "$2" "$1"; fi
printf '%s 0\\n' "$1"; printf '%s\\n' "$1" >&2
while IFS= read -r line; do
  nonce=${line%% *}
  eval "${line#* }" </dev/null
  status=$?
  printf '%s %d\\n' "$nonce" "$status"
  printf '%s\\n' "$nonce" >&2
done
"""
NEWLINE_IN_QUOTES = "'\"$NL\"'"
SIGNALLED = range(129, 193)  # 128 + signal number, as a shell reports a signal death


class RunnerGone(EOFError):
    """The runner's channel ended (the runner was killed, or the connection died)."""


SHELL, ARGV = 0, 1  # the protocols, as the ready line names them
HELPER = "orch-runner"  # its name among the guest workloads


def timeout_command(argv: Sequence[str], timeout_s: float) -> str:
    """The shell line that runs argv under the guest's `timeout` (protocol 0, or a channel of
    its own): whole seconds, at least one."""
    return shlex.join(["timeout", "-s", "KILL", str(max(1, round(timeout_s))), *argv])


def encode(nonce: str, command: str) -> bytes:
    """One protocol-0 request line. A shell-quoted command holds newlines only inside single
    quotes (shlex.quote quotes anything with one), so each becomes '"$NL"': close the quote,
    the runner's newline, reopen."""
    return (nonce + " " + command.replace("\n", NEWLINE_IN_QUOTES) + "\n").encode()


def encode_argv(nonce: str, argv: Sequence[str], timeout_s: float) -> bytes:
    """One protocol-1 request: its header line, then the argv NUL-terminated (a NUL cannot be
    in an argument, as in execve)."""
    if any("\0" in a for a in argv):
        raise ValueError("an argument holds a NUL byte")
    body = b"".join(a.encode() + b"\0" for a in argv)
    return f"{nonce} {max(1, round(timeout_s * 1000))} {len(body)}\n".encode() + body


class Runner:
    """The runner on one channel of `transport`; `call` runs one argv through it. `helper` is
    the guest's path of orch-runner, if it may have one."""

    def __init__(self, transport: paramiko.Transport, deadline_s: float,
                 helper: str | None = None) -> None:
        self.channel = transport.open_session(timeout=deadline_s)
        ready = secrets.token_hex(8)
        try:
            self.channel.exec_command(shlex.join(["exec", "/bin/sh", "-c", SCRIPT,
                                                  "orch-runner", ready, helper or ""]))
            # what the login shell printed before the loop started is dropped with the marker
            _, _, self.protocol = _collect(self.channel, ready, time.monotonic() + deadline_s)
        except BaseException:
            self.channel.close()
            raise

    def call(self, argv: Sequence[str], timeout_s: float,
             deadline: float) -> tuple[bytes, bytes, int]:
        """(stdout, stderr, status) of argv, killed in the guest after timeout_s; TimeoutError
        past `deadline`, RunnerGone if the runner's channel ends first (either leaves the runner
        unusable)."""
        nonce = secrets.token_hex(8)
        if self.protocol == ARGV:
            self.channel.sendall(encode_argv(nonce, argv, timeout_s))
        else:
            self.channel.sendall(encode(nonce, timeout_command(argv, timeout_s)))
        out, err, status = _collect(self.channel, nonce, deadline)
        return out, err, -1 if status in SIGNALLED else status

    def close(self) -> None:
        self.channel.close()


def _collect(channel: paramiko.Channel, nonce: str, deadline: float) -> tuple[bytes, bytes, int]:
    """Reads both streams until each carries the nonce's marker; blocks in select, never
    polls, so an answer is taken the moment it arrives."""
    out, err = bytearray(), bytearray()
    mark = nonce.encode()
    done_out: tuple[bytes, int] | None = None
    done_err = False
    while done_out is None or not done_err:
        if channel.recv_ready():
            out += channel.recv(65536)
            done_out = _status_line(out, mark)
        elif channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
            done_err = err.endswith(mark + b"\n")
        elif channel.eof_received or channel.closed:
            raise RunnerGone("the runner's channel ended")
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer from the runner before the deadline")
            select.select([channel], [], [], remaining)
    body, status = done_out
    return body, bytes(err[:len(err) - len(mark) - 1]), status


def _status_line(out: bytearray, mark: bytes) -> tuple[bytes, int] | None:
    """(the command's stdout, its status) once "NONCE STATUS\\n" has arrived, else None. The
    marker ends the stream, so it is searched for from the end."""
    if not out.endswith(b"\n"):
        return None
    at = out.rfind(mark + b" ")
    if at < 0:
        return None
    tail = out[at + len(mark) + 1:-1]
    return (bytes(out[:at]), int(tail)) if tail.lstrip(b"-").isdigit() else None
