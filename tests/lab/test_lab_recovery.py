"""What the lab does when its SSH connection or L1 itself goes away, without booting an L1:
the SSH boundary is scripted, L1's QEMU is a real process that lives or has exited."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from orchestrator.errors import HarnessError
from orchestrator.guests.ssh import ConnectionLost, GuestSession
from orchestrator.lab import run as lab_run
from orchestrator.lab.l1 import CONSOLE, QEMU_LOG, Lab, LabLost
from orchestrator.model import Metric, Outcome, TrialRecord
from orchestrator.proc import Completed
from orchestrator.store import reader, rundir
from orchestrator.store.journal import Journal
from orchestrator.suite.loader import LoadedSuite, load_suite

Answer = Callable[[list[str]], str]


class ScriptedSession:
    """Answers commands (argv without the PATH prefix) until told the connection is lost."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.lost_next = 0
        self.commands: list[list[str]] = []
        self.closed = False

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True) -> Completed:
        command = list(argv)[2:]  # drop `env PATH=...`
        self.commands.append(command)
        if self.lost_next:
            self.lost_next -= 1
            raise ConnectionLost(argv, None, reason="lost the guest mid-command")
        return Completed(tuple(argv), 0, self.answer(command), "")

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def l1_alive() -> Iterator[subprocess.Popen[str]]:
    qemu = subprocess.Popen(["sleep", "600"], text=True)
    yield qemu
    qemu.kill()
    qemu.wait()


def dead_l1(workdir: Path) -> subprocess.Popen[str]:
    (workdir / CONSOLE).write_text("[  812.1] Kernel panic - not syncing: Fatal exception\n"
                                   "[  812.2] ---[ end Kernel panic ]---\n")
    (workdir / QEMU_LOG).write_text("")
    qemu = subprocess.Popen(["sh", "-c", "exit 0"], text=True)
    qemu.wait()
    return qemu


def make_lab(session: ScriptedSession, workdir: Path, qemu: subprocess.Popen[str],
             reconnected: list[ScriptedSession]) -> Lab:
    def reconnect() -> GuestSession:
        fresh = ScriptedSession(session.answer)
        reconnected.append(fresh)
        return fresh  # type: ignore[return-value]  # the SSH boundary, scripted

    return Lab(session, workdir, 2222, qemu, reconnect)  # type: ignore[arg-type]


def losing_once(workdir: Path, qemu: subprocess.Popen[str], answer: str
                ) -> tuple[Lab, ScriptedSession, list[ScriptedSession]]:
    """A lab whose next command loses its connection; the sessions made to replace it."""
    session = ScriptedSession(lambda argv: answer)
    session.lost_next = 1
    reconnected: list[ScriptedSession] = []
    return make_lab(session, workdir, qemu, reconnected), session, reconnected


def test_a_lost_connection_to_a_live_l1_is_reconnected_and_a_read_retried(
        tmp_path: Path, l1_alive: subprocess.Popen[str]) -> None:
    lab, session, reconnected = losing_once(tmp_path, l1_alive, "Y\n")
    assert lab.sysfs_read("/sys/module/kvm_amd/parameters/npt") == "Y"
    assert session.closed and len(reconnected) == 1 and id(lab.session) == id(reconnected[0])
    assert reconnected[0].commands == [["cat", "/sys/module/kvm_amd/parameters/npt"]]


def test_a_command_that_is_not_idempotent_is_not_run_twice(
        tmp_path: Path, l1_alive: subprocess.Popen[str]) -> None:
    lab, session, reconnected = losing_once(tmp_path, l1_alive, "")
    with pytest.raises(ConnectionLost):
        lab.run(["modprobe", "kvm_amd", "npt=0"], timeout=60)
    assert len(reconnected) == 1 and reconnected[0].commands == []  # usable, nothing re-run


def test_a_dead_l1_is_reported_with_how_it_died(tmp_path: Path) -> None:
    lab, session, reconnected = losing_once(tmp_path, dead_l1(tmp_path), "")
    with pytest.raises(LabLost) as caught:
        lab.run(["cat", "/proc/uptime"], timeout=60, idempotent=True)
    assert "QEMU exit status 0" in str(caught.value)
    assert "end Kernel panic" in str(caught.value) and reconnected == []
    assert CONSOLE in caught.value.hint


def test_a_live_l1_that_no_longer_answers_is_lost_and_stopped(tmp_path: Path) -> None:
    """Seen under TCG: L1's kernel in a soft lockup for minutes, its QEMU running. SSH cannot
    reach it again; it is then as lost as a dead L1, and stopped so that nothing reuses it."""
    (tmp_path / CONSOLE).write_text("[  268.5] watchdog: BUG: soft lockup - CPU#0 stuck for "
                                    "164s! [perf:301]\n")
    (tmp_path / QEMU_LOG).write_text("")
    # in a session of its own, as proc.background starts L1's QEMU
    qemu = subprocess.Popen(["sleep", "600"], text=True, start_new_session=True)
    session = ScriptedSession(lambda argv: "")
    session.lost_next = 1

    def unreachable() -> GuestSession:
        raise HarnessError("no SSH from the guest within 120s", hint="")

    lab = Lab(session, tmp_path, 2222, qemu, unreachable)  # type: ignore[arg-type]
    try:
        with pytest.raises(LabLost) as caught:
            lab.run(["cat", "/proc/uptime"], timeout=60, idempotent=True)
        assert "stopped answering" in str(caught.value) and "no SSH" in str(caught.value)
        assert "soft lockup" in str(caught.value) and CONSOLE in caught.value.hint
        assert qemu.poll() is not None and not lab.alive()  # stopped
    finally:
        qemu.kill()
        qemu.wait()


def fork_row(trial: int) -> TrialRecord:
    return TrialRecord(cell_id="c1", trial=trial, warmup=False, paging_requested="tdp",
                       paging_mode="tdp", accel="nested-tcg", guest="small", workload="fork",
                       kind="fork-dirty", params={"pages": 1280}, outcome=Outcome.OK,
                       metrics=(Metric("fork_us", 3000.0 + trial, "us"),), started_at=1.7e9)


def test_trials_measured_before_l1_died_are_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner run measured two trials, then L1 died: the run directory still comes home,
    with its tables built from the journal and the manifest saying what happened."""
    share = tmp_path / "share"
    share.mkdir()
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\npaging: [tdp]\nguests: {g: {image: mini}}\n"
                     "workloads: [{name: fork, kind: fork-dirty, params: {pages: 1280}}]\n")
    qemu = subprocess.Popen(["sleep", "600"], text=True)

    def answer(argv: list[str]) -> str:
        if argv[:2] == ["sh", "-c"] and "setsid" in argv[2]:  # the inner run starts...
            run_dir = rundir.new_run_dir(share / "results", "s")
            rundir.RunDir(run_dir).create_manifest({
                "run_id": run_dir.name, "suite_name": "s", "status": "running",
                "host": {"hostname": "l1"}, "param_columns": {"pages": "int"}})
            with Journal(run_dir) as journal:
                journal.append(fork_row(0))
                journal.append(fork_row(1))
            session.lost_next = 10  # ...and L1 panics
            qemu.kill()
            qemu.wait()
            return ""
        return "1764330000.5 Y\n" if argv[:2] == ["sh", "-c"] else "Y\n"

    def staged(workdir: Path, loaded: LoadedSuite, image_cache: Path | None = None) -> None:
        (workdir / "suite.yaml").write_text(loaded.text)  # no image needed for this

    monkeypatch.setattr(lab_run, "stage_share", staged)
    session = ScriptedSession(answer)
    lab = make_lab(session, share, qemu, [])
    (share / CONSOLE).write_text("Kernel panic - not syncing: Fatal exception\n")
    with pytest.raises(LabLost) as caught:
        lab_run.run_in_lab(lab, load_suite(suite), tmp_path / "root", timeout=60)
    kept = next((tmp_path / "root").glob("*-s-*"))
    assert str(kept) in str(caught.value)
    run = reader.load(kept)
    assert sorted(run.trials["value"]) == [3000.0, 3001.0]
    assert run.manifest["status"] == "error" and "Kernel panic" in run.manifest["error"]
    assert run.manifest["lab"]["npt_before"] == "Y" and "lost" in run.manifest["lab"]
    assert (kept / "logs" / f"lab-{CONSOLE}").exists()
