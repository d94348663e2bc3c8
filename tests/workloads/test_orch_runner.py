"""orch-runner spoken to directly, without SSH (tests/guests/test_ssh_session.py has it behind
real SSH servers): its protocol, its kill at the deadline, and a malformed request."""

from __future__ import annotations

import subprocess
from pathlib import Path

from orchestrator.guests.runner import HELPER, encode_argv


def talk(bin_dir: Path, requests: bytes, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(bin_dir / HELPER), "ready"], input=requests,
                          capture_output=True, timeout=timeout)


def test_it_answers_each_request_after_the_command_output(bin_dir: Path) -> None:
    done = talk(bin_dir, encode_argv("a1", ["printf", "[%s]", "x\ny", "it's"], 5)
                + encode_argv("a2", ["sh", "-c", "echo e >&2; exit 3"], 5)
                + encode_argv("a3", ["/nonexistent/program"], 5)
                + encode_argv("a4", ["cat"], 5))  # stdin is /dev/null, not our requests
    assert done.returncode == 0
    assert done.stdout == b"ready 1\n[x\ny][it's]a1 0\na2 3\na3 127\na4 0\n"
    assert done.stderr.splitlines() == [b"ready", b"a1", b"e", b"a2",
                                        b"orch-runner: /nonexistent/program: No such file or "
                                        b"directory", b"a3", b"a4"]


def test_the_deadline_kills_the_command_and_what_it_started(bin_dir: Path) -> None:
    # the background sleep holds our stdout: only a kill of the whole group lets EOF come
    done = talk(bin_dir, encode_argv("k", ["sh", "-c", "sleep 41 & sleep 42; echo late"], 0.3),
                timeout=20)
    assert done.stdout == b"ready 1\nk 137\n"  # 128 + SIGKILL, as a shell would say it
    left = subprocess.run(["pgrep", "-f", "^sleep 4[12]$"], capture_output=True, text=True)
    assert left.stdout == ""


def test_a_malformed_request_ends_the_runner_with_a_message(bin_dir: Path) -> None:
    done = talk(bin_dir, b"n1 1000 5\nab")  # five bytes promised, two sent
    assert done.returncode == 2 and b"malformed request" in done.stderr
    done = talk(bin_dir, b"n1 1000 3\nabc")  # not NUL-terminated
    assert done.returncode == 2


def test_version_says_it_runs_here(bin_dir: Path) -> None:
    done = subprocess.run([str(bin_dir / HELPER), "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("orch-runner")
