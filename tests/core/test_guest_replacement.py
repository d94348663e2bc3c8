"""A guest that stops answering mid-point is replaced by a fresh one for the trials left, and
given up after MAX_REPLACEMENTS; the guest boundary is a stand-in that runs the fake workload
locally until it "stalls" (every command, the liveness probe included, then times out)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator import proc
from orchestrator.run.execute import MAX_REPLACEMENTS, Executor, Progress
from orchestrator.run.targets import ModeState
from orchestrator.store import rundir
from orchestrator.store.journal import Journal, latest_attempts, read_journal
from orchestrator.suite.loader import parse_suite
from orchestrator.suite.plan import make_plan
from orchestrator.suite.schema import RequestedMode

SUITE = """\
name: stall
paging: [tdp]
guests:
  g: {image: mini}
workloads:
  - {name: fork, kind: fork-dirty, params: {pages: [100, 2000]}, trials: 3, warmup: 1}
"""


class StallingGuest:
    """Runs commands on this machine until its `stall_after`-th command, then answers none."""

    paging_mode = "tdp"
    accel = "kvm"

    def __init__(self, bin_dir: Path, stall_after: int | None) -> None:
        self.name, self.bin_dir = "g", str(bin_dir)
        self.stall_after = stall_after
        self.commands = 0

    def run(self, argv: Sequence[str], *, timeout: float) -> proc.Completed:
        self.commands += 1
        if self.stall_after is not None and self.commands > self.stall_after:
            raise proc.CommandError(argv, None, reason=f"timed out after {timeout:g}s")
        return proc.run(argv, timeout=timeout, check=False)


class StallingBackend:
    """Guest number i (from 0) stalls after stalls[i] commands (None: never)."""

    def __init__(self, bin_dir: Path, stalls: list[int | None]) -> None:
        self.bin_dir, self.stalls = bin_dir, stalls
        self.booted: list[StallingGuest] = []
        self.open_now = 0

    @contextmanager
    def enter_mode(self, mode: RequestedMode) -> Iterator[ModeState]:
        yield ModeState(mode, "tdp", "kvm", {})

    @contextmanager
    def open_target(self, state: ModeState, guest: str) -> Iterator[StallingGuest]:
        stall = self.stalls[min(len(self.booted), len(self.stalls) - 1)]
        self.booted.append(StallingGuest(self.bin_dir, stall))
        self.open_now += 1
        try:
            yield self.booted[-1]
        finally:
            self.open_now -= 1


class Notes(Progress):
    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def run_with(tmp_path: Path, backend: StallingBackend, suite: str = SUITE
             ) -> tuple[list[dict[str, Any]], Notes]:
    loaded = parse_suite(suite, tmp_path / "suite.yaml")
    run_dir = rundir.new_run_dir(tmp_path, "stall")
    progress = Notes()
    with Journal(run_dir) as journal:
        Executor(loaded.suite, make_plan(loaded.suite), backend, journal, progress).run()
    return list(read_journal(run_dir)), progress


def test_a_stalled_guest_is_replaced_and_the_point_goes_on(fake_bin: Path,
                                                            tmp_path: Path) -> None:
    backend = StallingBackend(fake_bin, [3, None])  # the first guest dies in its 4th trial
    rows, progress = run_with(tmp_path, backend)
    assert len(rows) == 8 and len(backend.booted) == 2 and backend.open_now == 0
    assert [r["outcome"] for r in rows] == ["ok"] * 3 + ["error"] + ["ok"] * 4
    assert "timed out" in rows[3]["reason"]
    assert all(r["info"].get("guest_replacements") == 1 for r in rows[4:])
    assert not any("guest_replacements" in r["info"] for r in rows[:4])
    assert progress.notes == ["guest g (tdp) stopped answering; booting a fresh one for its "
                              "4 remaining trials"]


def test_a_timed_out_trial_in_a_guest_that_still_answers_keeps_the_guest(
        fake_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_BEHAVIOUR", "hang")  # the workload hangs, the guest is fine
    backend = StallingBackend(fake_bin, [None])
    quick = SUITE.replace("trials: 3, warmup: 1", "trials: 1, warmup: 0") + \
        "timeouts: {trial: 1s}\n"
    rows, progress = run_with(tmp_path, backend, quick)
    assert [r["outcome"] for r in rows] == ["error", "error"]
    assert all("timed out" in r["reason"] for r in rows)
    assert len(backend.booted) == 1 and progress.notes == []


def test_a_guest_that_keeps_stalling_is_given_up(fake_bin: Path, tmp_path: Path) -> None:
    backend = StallingBackend(fake_bin, [1, 0])  # one trial, then no fresh guest answers
    rows, progress = run_with(tmp_path, backend)
    assert len(backend.booted) == MAX_REPLACEMENTS + 1 and backend.open_now == 0
    assert len(rows) == 8 and [r["outcome"] for r in rows[:2]] == ["ok", "error"]
    assert all(r["outcome"] == "error" for r in rows[1:])
    given_up = [r for r in rows if "stopped answering" in r["reason"]]
    assert len(given_up) == 8 - 1 - (MAX_REPLACEMENTS + 1)
    assert progress.notes[-1] == given_up[0]["reason"]


def test_with_lost_guest_retries_the_lost_trial_runs_again(fake_bin: Path,
                                                           tmp_path: Path) -> None:
    backend = StallingBackend(fake_bin, [3, None])  # the 4th trial loses the first guest
    rows, progress = run_with(tmp_path, backend, SUITE + "lost_guest_retries: 1\n")
    assert len(rows) == 9 and len(backend.booted) == 2 and backend.open_now == 0
    lost, again = rows[3], rows[4]
    assert (lost["outcome"], again["outcome"]) == ("error", "ok")
    assert (lost["cell_id"], lost["trial"]) == (again["cell_id"], again["trial"])
    assert (lost["attempt"], again["attempt"]) == (1, 2)
    assert again["info"]["guest_replacements"] == 1
    assert "again, as attempt 2" in progress.notes[0]
    latest = latest_attempts(rows_dir(tmp_path))
    assert len(latest) == 8 and {r["outcome"] for r in latest.values()} == {"ok"}


def test_a_trial_that_loses_every_guest_is_retried_only_as_often_as_allowed(
        fake_bin: Path, tmp_path: Path) -> None:
    backend = StallingBackend(fake_bin, [3, 0, None])  # lost again in the first retry
    rows, _ = run_with(tmp_path, backend, SUITE + "lost_guest_retries: 1\n")
    attempts = [(r["trial"], r["attempt"], r["outcome"]) for r in rows
                if (r["cell_id"], r["trial"]) == (rows[3]["cell_id"], rows[3]["trial"])]
    assert attempts == [(rows[3]["trial"], 1, "error"), (rows[3]["trial"], 2, "error")]
    assert len(backend.booted) == 3 and rows[-1]["outcome"] == "ok"


def test_a_workload_failure_in_a_guest_that_answers_is_never_retried(
        fake_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_BEHAVIOUR", "hang")
    quick = SUITE.replace("trials: 3, warmup: 1", "trials: 1, warmup: 0") + \
        "timeouts: {trial: 1s}\nlost_guest_retries: 2\n"
    rows, _ = run_with(tmp_path, StallingBackend(fake_bin, [None]), quick)
    assert [(r["outcome"], r["attempt"]) for r in rows] == [("error", 1), ("error", 1)]


def rows_dir(tmp_path: Path) -> Path:
    """The one run directory run_with made."""
    (run_dir,) = (p for p in tmp_path.iterdir() if (p / rundir.JOURNAL).exists())
    return run_dir
