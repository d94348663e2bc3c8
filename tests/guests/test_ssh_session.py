"""GuestSession against real SSH servers on 127.0.0.1 (OpenSSH's sshd, and dropbear, the
`mini` guest's server): what a trial gets back is what the command did, through either runner
(orchestrator/guests/runner.py: the built orch-runner helper, and the shell loop with the
guest's `timeout` where a guest has no helper) as through a channel per command before them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.loopback_sshd import SERVERS, Server, available, loopback_sshd
from orchestrator import paths
from orchestrator.errors import HarnessError
from orchestrator.guests.guest import empty_trial_s
from orchestrator.guests.runner import HELPER
from orchestrator.guests.ssh import GuestSession
from orchestrator.proc import CommandError

pytestmark = [pytest.mark.integration, pytest.mark.needs_root]


@pytest.fixture(scope="module", params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    why = available(request.param)
    if why:
        pytest.skip(f"{request.param}: {why}")
    with loopback_sshd(tmp_path_factory.mktemp(request.param), request.param) as running:
        yield running


def connect(server: Server, host_key: str | None = None) -> GuestSession:
    return GuestSession("127.0.0.1", server.port, user="root", key=server.client_key,
                        host_key=host_key or server.host_key, connect_timeout=10)


HELPER_PATH = str(paths.workloads_bin_dir() / HELPER)  # the host is the "guest" here


@pytest.fixture(params=["orch-runner", "sh"])
def session(server: Server, request: pytest.FixtureRequest) -> Iterator[GuestSession]:
    with connect(server) as opened:
        if request.param == "orch-runner":
            opened.use_helper(HELPER_PATH)
        assert opened.runner_kind() == request.param
        yield opened


def test_a_helper_that_does_not_run_there_leaves_the_shell_loop(server: Server,
                                                                tmp_path: Path) -> None:
    broken = tmp_path / HELPER
    broken.write_text("#!/bin/sh\nexit 1\n")  # as a binary of another architecture would
    broken.chmod(0o755)
    for path in (str(broken), "/nonexistent/orch-runner"):
        with connect(server) as opened:
            opened.use_helper(path)
            assert opened.run(["echo", "ok"], timeout=10).stdout == "ok\n"
            assert opened.runner_kind() == "sh"


def test_stdout_stderr_and_exit_status_come_back_apart(session: GuestSession) -> None:
    done = session.run(["sh", "-c", "echo out; echo err >&2; printf 'no newline'; exit 3"],
                       timeout=10, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\nno newline", "err\n")
    with pytest.raises(CommandError) as failed:
        session.run(["sh", "-c", "exit 7"], timeout=10)
    assert failed.value.returncode == 7


def test_arguments_arrive_as_given(session: GuestSession) -> None:
    odd = ["a\nb", "it's", "$HOME", "*", "two  spaces", "", "-n", "`id`", "\\"]
    done = session.run(["printf", "[%s]", *odd], timeout=10)
    assert done.stdout == "".join(f"[{a}]" for a in odd)


def test_an_argument_with_a_nul_byte_is_refused_before_it_is_sent(session: GuestSession) -> None:
    with pytest.raises(CommandError, match="NUL byte"):
        session.run(["echo", "a\0b"], timeout=10)
    assert session.run(["echo", "after"], timeout=10).stdout == "after\n"


def test_stdin_is_at_end_of_file(session: GuestSession) -> None:
    assert session.run(["cat"], timeout=10).stdout == ""


def test_large_output_is_whole(session: GuestSession) -> None:
    done = session.run(["sh", "-c", "seq 1 200000; seq 1 50000 >&2"], timeout=30)
    assert done.stdout.splitlines() == [str(i) for i in range(1, 200001)]
    assert len(done.stderr.splitlines()) == 50000


def test_a_timeout_kills_the_command_and_the_session_goes_on(session: GuestSession) -> None:
    with pytest.raises(CommandError) as hung:
        session.run(["sleep", "37.5"], timeout=1)
    assert hung.value.timed_out
    left = session.run(["sh", "-c", "ps -eo args | grep -c '^sleep 37.5$' || true"], timeout=10)
    assert left.stdout.strip() == "0"
    assert session.run(["echo", "next"], timeout=10).stdout == "next\n"


def test_a_signal_death_is_reported_as_one(session: GuestSession) -> None:
    with pytest.raises(CommandError, match="killed by a signal") as killed:
        session.run(["sh", "-c", "kill -SEGV $$"], timeout=10)
    assert killed.value.returncode == -1


def test_a_timeout_kills_what_the_command_started_too(session: GuestSession) -> None:
    with pytest.raises(CommandError) as hung:
        session.run(["sh", "-c", "sleep 37.7 & sleep 37.6 & wait"], timeout=1)
    assert hung.value.timed_out
    left = session.run(["sh", "-c", "ps -eo args | grep -c '^sleep 37.[67]$' || true"],
                       timeout=10)
    assert left.stdout.strip() == "0"


def test_a_command_that_kills_the_runner_costs_only_itself(session: GuestSession) -> None:
    # orch-runner is the command's parent; the shell loop is the parent of its `timeout`
    killer = ("kill -9 $PPID" if session.runner_kind() == "orch-runner"
              else "kill -9 $(cut -d' ' -f4 /proc/$PPID/stat)")
    with pytest.raises(CommandError, match="killed by a signal"):
        session.run(["sh", "-c", killer], timeout=10)
    assert session.run(["echo", "again"], timeout=10).stdout == "again\n"


def test_many_sequential_runs_on_one_session(session: GuestSession) -> None:
    for i in range(300):
        done = session.run(["sh", "-c", f"echo {i}; echo e{i} >&2; exit {i % 5}"],
                           timeout=10, check=False)
        assert (done.stdout, done.stderr, done.returncode) == (f"{i}\n", f"e{i}\n", i % 5)


def test_concurrent_callers_each_get_their_own_answer(session: GuestSession) -> None:
    results: dict[int, str] = {}

    def call(i: int) -> None:
        results[i] = session.run(["sh", "-c", f"sleep 0.3; echo {i}"], timeout=10).stdout

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: f"{i}\n" for i in range(4)}


def test_another_host_key_is_refused(server: Server, tmp_path: Path) -> None:
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMi2aCiLqetwXWLHcPgRtrS49CMUpzEfTZ/Cvxu0Qayj"
    assert other != server.host_key
    with pytest.raises(HarnessError, match="host key mismatch"):
        connect(server, other)


def test_the_empty_trial_a_guest_records_is_timed_on_its_session(session: GuestSession) -> None:
    assert 0 < empty_trial_s(session, samples=3) < 30
