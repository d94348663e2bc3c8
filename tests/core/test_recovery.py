"""Crash recovery at the process boundary: a run killed with SIGKILL leaves no workload (its
death signal), a ledger saying what it had started and changed, and the next command
(`doctor`, `run`, `gc`) marks it crashed and puts the host back: stray processes killed (only
the very processes it started), KVM parameters and sysfs values restored, guests destroyed. A
live run is never touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import HarnessError
from orchestrator.host.host_prep import HUGEPAGES_2M, THP, conditions
from orchestrator.run import recovery
from orchestrator.store import ledger, rundir
from tests.core.conftest import cli_env, write_suite
from tests.core.test_host_prep import fake_root
from tests.host.test_paging import FakeModprobe, host, param

pytestmark = pytest.mark.slow  # real runs killed and recovered, seconds each

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "orchestrator.cli"]


@pytest.fixture()
def state_dir(private_state_dir: Path) -> Path:
    """This test's own index of live runs (tests/conftest.py sets ORCH_STATE_DIR; children
    inherit it through the environment)."""
    assert ledger.state_dir() == private_state_dir
    return private_state_dir


def orchestrate(*args: str, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=cli_env(env or {}), cwd=ROOT)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def the_run(root: Path) -> Path | None:
    runs = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()] \
        if root.exists() else []
    return runs[0] if len(runs) == 1 else None


def open_processes(run_dir: Path, name: str) -> list[dict[str, Any]]:
    """The ledger's process entries for `name` that were never marked undone."""
    entries = ledger.read(run_dir)
    done = {e.get("ref") for e in entries if e["kind"] == "undone"}
    return [e for e in entries if e["kind"] == "process" and name in e["argv"]
            and e["seq"] not in done]


def alive(pid: int) -> bool:
    return ledger.start_time(pid) is not None


def start_of(pid: int) -> int:
    start = ledger.start_time(pid)
    assert start is not None
    return start


def status(run_dir: Path) -> str:
    return str(rundir.read_manifest(run_dir)["status"])


def start_hanging_run(suite: Path, root: Path, **extra: str
                      ) -> tuple[subprocess.Popen[str], Path, dict[str, Any]]:
    """`orchestrate run` whose one trial hangs; (the run, its directory, the workload's
    ledger entry) once the workload runs."""
    run = subprocess.Popen([*CLI, "run", str(suite), "--results-dir", str(root)], cwd=ROOT,
                           env=cli_env({"FAKE_BEHAVIOUR": "hang", **extra}), text=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_dir = wait_for("the run directory", lambda: the_run(root))
    workload = wait_for("the workload in the ledger",
                        lambda: open_processes(run_dir, "fork-dirty"))[0]
    return run, run_dir, workload


@pytest.fixture()
def hanging_suite(tmp_path: Path) -> Path:
    return write_suite(tmp_path, pages="[100]", trials=1, timeout="300s")


@pytest.fixture()
def detached() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """`setsid sleep 600`s of the test's own: no death signal, in sessions of their own."""
    made: list[subprocess.Popen[bytes]] = []

    def make() -> subprocess.Popen[bytes]:
        child = subprocess.Popen(["sleep", "600"], start_new_session=True)
        made.append(child)
        wait_for("sleep to start", lambda: ledger.start_time(child.pid))
        return child

    yield make
    for child in made:
        child.kill()
        child.wait()


def test_a_killed_run_leaves_no_workload_and_doctor_recovers_it(
        fake_bin: Path, hanging_suite: Path, tmp_path: Path, state_dir: Path,
        detached: Callable[[], subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "r"
    run, run_dir, workload = start_hanging_run(hanging_suite, root)
    assert alive(workload["pid"]) and (state_dir / run_dir.name).is_symlink()
    run.kill()  # SIGKILL: none of the run's own cleanup runs
    run.wait()
    # the workload got its death signal with the run; the ledger still names it
    wait_for("the workload to die with the run", lambda: not alive(workload["pid"]), 10)
    assert open_processes(run_dir, "fork-dirty") == [workload]
    assert status(run_dir) == "running" and (state_dir / run_dir.name).is_symlink()

    # a child that escaped its death signal, and a PID that another process has now
    stray, bystander = detached(), detached()
    book = ledger.Ledger(run_dir)
    book.append("process", pid=stray.pid, start=start_of(stray.pid),
                argv="sleep 600 (detached)")
    book.append("process", pid=bystander.pid, start=start_of(bystander.pid) - 1,
                argv="an old process whose PID was reused")
    book.close()

    done = orchestrate("doctor")
    assert done.returncode == 0, done.stderr
    said = done.stderr
    assert f"run {run_dir.name} is dead (pid {run.pid} is gone): recovering it" in said
    assert f"killed pid {stray.pid} (sleep 600 (detached))" in said
    assert f"pid {bystander.pid} (an old process whose PID was reused) is another process " \
           "now: left alone" in said
    assert f"1 recorded change(s) had already ended: pid(s) {workload['pid']}" in said
    assert f"run {run_dir.name}: marked crashed in its manifest" in said
    assert stray.wait(timeout=10) == -signal.SIGKILL
    assert bystander.poll() is None  # never touched
    manifest = rundir.read_manifest(run_dir)
    assert manifest["status"] == "crashed" and "orchestrate doctor" in manifest["crashed_by"]
    assert manifest["crash_evidence"] == f"pid {run.pid} is gone" and manifest["crashed_at"]
    assert any("killed pid" in a for a in manifest["recoveries"][0]["actions"])
    assert not (state_dir / run_dir.name).exists()  # nothing is left to undo
    assert "runs in progress: none" in done.stdout

    again = orchestrate("doctor")  # idempotent: nothing more to do, nothing said
    assert again.returncode == 0 and run_dir.name not in again.stderr
    assert len(rundir.read_manifest(run_dir)["recoveries"]) == 1


def test_after_a_power_loss_the_next_run_marks_the_dead_run_crashed(
        fake_bin: Path, hanging_suite: Path, tmp_path: Path, state_dir: Path) -> None:
    """The index lives on a tmpfs and is gone after a power loss, as is everything the run
    left; the next run still finds the run through its results root, by its manifest."""
    root = tmp_path / "r"
    run, run_dir, _ = start_hanging_run(hanging_suite, root)
    run.kill()
    run.wait()
    # the "reboot": a new boot id, an empty index
    lines = (run_dir / ledger.LEDGER).read_text().splitlines()
    first = json.loads(lines[0])
    assert first["kind"] == "run" and first["pid"] == run.pid
    lines[0] = json.dumps({**first, "boot_id": "an-earlier-boot"})
    (run_dir / ledger.LEDGER).write_text("\n".join(lines) + "\n")
    for link in state_dir.iterdir():
        link.unlink()

    (tmp_path / "quick").mkdir()
    quick = write_suite(tmp_path / "quick", pages="[100]", trials=1)
    done = orchestrate("run", str(quick), "--results-dir", str(root))
    assert done.returncode == 0, done.stderr
    assert f"run {run_dir.name} is dead (the host rebooted since it ran)" in done.stderr
    assert "recorded change(s) gone with the reboot" in done.stderr
    assert status(run_dir) == "crashed"
    assert "orchestrate run" in rundir.read_manifest(run_dir)["crashed_by"]
    assert list(state_dir.iterdir()) == []  # the new run ended cleanly and left the index


def test_a_live_run_is_never_touched(fake_bin: Path, hanging_suite: Path, tmp_path: Path,
                                     state_dir: Path) -> None:
    root = tmp_path / "r"
    run, run_dir, workload = start_hanging_run(hanging_suite, root)
    try:
        done = orchestrate("doctor")
        assert done.returncode == 0, done.stderr
        # nothing is dead: doctor only looked, and never competed for the run's lock
        assert "lock" not in done.stderr
        assert f"run {run_dir.name} is alive (pid {run.pid} is running): left alone" \
            in done.stderr
        assert f"runs in progress: {run_dir.name}" in done.stdout
        # and without the lock (as a command that raced for it would): still alone
        survey = recovery.recover([root], by="test", say=lambda line: None)
        assert [s.name for s in survey.alive] == [run_dir.name] and survey.dead == []
        assert alive(workload["pid"]) and run.poll() is None and status(run_dir) == "running"
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert status(run_dir) == "interrupted"  # its own cleanup ran: nobody else's
    assert not alive(workload["pid"]) and list(state_dir.iterdir()) == []


def fake_run_dir(root: Path) -> Path:
    run_dir = rundir.new_run_dir(root, "killed")
    rundir.RunDir(run_dir).create_manifest({
        "run_id": run_dir.name, "suite_name": "killed", "status": "running"})
    return run_dir


HOLD_HOST_PREP = """\
import sys, time
from pathlib import Path
from orchestrator.store import ledger
from orchestrator.host.host_prep import prepared_host
from orchestrator.suite.schema import HostPrep, ThpMode
prep = HostPrep(apply=True, thp=ThpMode.NEVER, hugepages_2m=64, governor="performance")
with ledger.recording(Path(sys.argv[1])), prepared_host(prep, Path(sys.argv[2])):
    print("changed", flush=True)
    time.sleep(600)
"""


def killed_holding(script: str, *args: Path) -> None:
    """Run a script that changes the host inside a run's ledger session, and SIGKILL it once
    it says it has changed it."""
    child = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "changed"
    child.kill()
    child.wait()


def test_host_settings_are_written_back_from_the_ledger(tmp_path: Path) -> None:
    sysfs = fake_root(tmp_path / "host")
    run_dir = fake_run_dir(tmp_path / "r")
    killed_holding(HOLD_HOST_PREP, run_dir, sysfs)
    assert (sysfs / THP).read_text() == "never" and (sysfs / HUGEPAGES_2M).read_text() == "64"
    said: list[str] = []
    survey = recovery.recover([tmp_path / "r"], by="test", say=said.append)
    assert [s.name for s in survey.dead] == [run_dir.name]
    assert (sysfs / THP).read_text() == "madvise" and (sysfs / HUGEPAGES_2M).read_text() == "0"
    assert conditions(sysfs)["governor"] == "schedutil"
    assert any(f"restored {sysfs / THP} to 'madvise'" in line for line in said), said
    assert sum("restored" in line for line in said) == 4  # thp, pool, two governors
    assert status(run_dir) == "crashed"
    # newest first, as the run itself would have: the governors, the pool, then THP
    restored = [line.split("restored ")[1].split(" to ")[0] for line in said if "restored" in line]
    assert restored[-1] == str(sysfs / THP)


HOLD_SHADOW = """\
import sys, time
from pathlib import Path
from orchestrator.store import ledger
from orchestrator.host.paging import paging_mode
from tests.host.test_paging import FakeModprobe
root = Path(sys.argv[2])
with ledger.recording(Path(sys.argv[1])), paging_mode(
        "shadow", root=root, runner=FakeModprobe(root, "kvm_amd")):
    print("changed", flush=True)
    time.sleep(600)
"""


def test_kvm_is_reloaded_with_the_recorded_parameters(tmp_path: Path) -> None:
    sysfs = host(tmp_path / "host", "kvm_amd")
    run_dir = fake_run_dir(tmp_path / "r")
    killed_holding(HOLD_SHADOW, run_dir, sysfs)
    assert param(sysfs, "kvm_amd", "npt") == "N"  # the run died in shadow mode

    # someone else's VM holds /dev/kvm: refused, said, and left for the next command
    fd_dir = sysfs / "proc/4242/fd"
    fd_dir.mkdir(parents=True)
    (sysfs / "proc/4242/comm").write_text("qemu-system-x86\n")
    os.symlink("/dev/kvm", fd_dir / "3")
    modprobe = FakeModprobe(sysfs, "kvm_amd")
    said: list[str] = []
    recovery.recover([tmp_path / "r"], by="test", say=said.append, runner=modprobe)
    assert modprobe.calls == [] and param(sysfs, "kvm_amd", "npt") == "N"
    assert any("FAILED: cannot reload kvm_amd to tdp: /dev/kvm is held by 4242" in line
               for line in said), said
    assert status(run_dir) == "crashed"
    assert (ledger.state_dir() / run_dir.name).is_symlink()  # still to be done

    (fd_dir / "3").unlink()  # that VM ended
    said.clear()
    recovery.recover(by="test", say=said.append, runner=modprobe)  # found through the index
    assert param(sysfs, "kvm_amd", "npt") == "Y" and param(sysfs, "kvm", "tdp_mmu") == "Y"
    assert modprobe.calls == [["modprobe", "-r", "kvm_amd", "kvm"],
                              ["modprobe", "kvm", "tdp_mmu=1"], ["modprobe", "kvm_amd", "npt=1"]]
    assert any("reloaded kvm_amd npt=1 (kvm tdp_mmu=1): paging mode tdp, verified from "
               "sysfs" in line for line in said), said
    assert not (ledger.state_dir() / run_dir.name).exists()
    assert len(rundir.read_manifest(run_dir)["recoveries"]) == 2

    said.clear()
    recovery.recover([tmp_path / "r"], by="test", say=said.append, runner=modprobe)
    assert said == [] and len(modprobe.calls) == 3  # nothing left: nothing done


def test_a_killed_nightly_takes_its_run_down_with_it(
        fake_bin: Path, hanging_suite: Path, tmp_path: Path, state_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrapper is SIGKILLed mid-run: its child run gets SIGTERM (its death signal), so it
    still destroys its guests and restores the host itself, and marks itself interrupted."""
    monkeypatch.setenv("ORCH_NIGHTLY_LOCK", str(tmp_path / "nightly.lock"))
    root = tmp_path / "r"
    wrapper = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.fleet.nightly", str(hanging_suite), "--results-dir",
         str(root)], cwd=ROOT, env=cli_env({"FAKE_BEHAVIOUR": "hang"}),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = wait_for("the run directory", lambda: the_run(root))
    workload = wait_for("the workload", lambda: open_processes(run_dir, "fork-dirty"))[0]
    run = next(e for e in ledger.read(run_dir) if e["kind"] == "run")
    wrapper.kill()
    wrapper.wait()
    wait_for("the run to end", lambda: not ledger.same_process(run["pid"], run["start"]), 60)
    assert not alive(workload["pid"])
    assert status(run_dir) == "interrupted"  # by itself, on SIGTERM
    assert list(state_dir.iterdir()) == []  # and it undid everything it had done


@pytest.mark.slow  # the deadline itself is 6 s
def test_a_run_the_nightly_deadline_had_to_kill_is_recovered_by_the_wrapper(
        fake_bin: Path, tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch,
        ) -> None:
    """A run that does not end on SIGTERM within the grace period is SIGKILLed; the wrapper
    then marks it interrupted and recovers what it left (here: its registration)."""
    monkeypatch.setenv("ORCH_NIGHTLY_LOCK", str(tmp_path / "nightly.lock"))
    suite = write_suite(tmp_path, pages="[100]", trials=1, timeout="300s")
    root = tmp_path / "r"
    # a 1 ms grace: the run is SIGKILLed in the middle of its own cleanup after SIGTERM
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.fleet.nightly", str(suite), "--results-dir", str(root),
         "--deadline", "6s", "--grace", "1ms"], cwd=ROOT, capture_output=True, text=True,
        env=cli_env({"FAKE_BEHAVIOUR": "hang"}), timeout=120)
    assert done.returncode == 130, done.stderr
    assert "sending SIGKILL" in done.stderr, done.stderr
    run_dir = the_run(root)
    assert run_dir is not None
    assert f"recovery: run {run_dir.name} is dead" in done.stderr
    manifest = rundir.read_manifest(run_dir)
    assert manifest["status"] == "interrupted"  # as the wrapper marked it: not overwritten
    assert "orchestrate nightly" in manifest["recoveries"][0]["by"]
    assert list(state_dir.iterdir()) == []


DIE_IN_A_SESSION = """\
import os, sys
from pathlib import Path
from orchestrator.store import ledger
with ledger.recording(Path(sys.argv[1])):
    os._exit(0)  # no cleanup runs, as under SIGKILL: the session stays open
"""


def test_a_ledger_others_could_have_written_is_never_acted_on(
        tmp_path: Path, detached: Callable[[], subprocess.Popen[bytes]]) -> None:
    run_dir = fake_run_dir(tmp_path / "r")
    subprocess.run([sys.executable, "-c", DIE_IN_A_SESSION, str(run_dir)], cwd=ROOT,
                   check=True, timeout=60)
    victim = detached()
    book = ledger.Ledger(run_dir)
    book.append("process", pid=victim.pid, start=start_of(victim.pid), argv="sleep")
    book.close()
    (run_dir / ledger.LEDGER).chmod(0o666)  # anyone could have named this process
    said: list[str] = []
    survey = recovery.recover([tmp_path / "r"], by="test", say=said.append)
    assert survey.dead == [] and victim.poll() is None and status(run_dir) == "running"
    assert said == [f"recovery: run {run_dir.name}: its ledger is writable by others "
                    "(mode 0666): never acted on"]
    (run_dir / ledger.LEDGER).chmod(0o600)
    survey = recovery.recover([tmp_path / "r"], by="test", say=said.append)
    assert [s.name for s in survey.dead] == [run_dir.name]
    assert victim.wait(timeout=10) == -signal.SIGKILL and status(run_dir) == "crashed"


def test_an_index_open_to_others_is_refused(tmp_path: Path, state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    state_dir.chmod(0o777)
    with pytest.raises(HarnessError, match="refusing the run index"):
        ledger.register(tmp_path)
    (state_dir / "planted").symlink_to(tmp_path)
    assert ledger.indexed() == []  # never read either


# ---- with libvirtd: a run's guest --------------------------------------------------------------

GUEST_SUITE = """\
name: recovery-guest
paging: [tdp]
guests:
  mini: {image: mini, vcpus: 1, memory: 768MiB}
workloads:
  - {name: dirty, kind: dirtier, params: {pages: 256, rate: 100, duration: 300s}, trials: 1,
     warmup: 0}
timeouts: {boot: 300s, trial: 400s}
"""


@pytest.fixture()
def libvirt_guests() -> Callable[[], set[str]]:
    subprocess.run(["bash", str(ROOT / "scripts/libvirtd-up")], check=True, timeout=120)
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    from orchestrator.guests.images import build_mini

    build_mini()

    def names() -> set[str]:
        done = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--name"],
                              capture_output=True, text=True, timeout=60, check=True)
        return {n for n in done.stdout.split() if n.startswith("orch-")}

    return names


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.needs_root  # the system libvirtd, root's image cache
def test_gc_leaves_a_live_runs_guest_and_destroys_a_killed_runs(
        tmp_path: Path, state_dir: Path, libvirt_guests: Callable[[], set[str]]) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(GUEST_SUITE)
    root = tmp_path / "r"
    run = subprocess.Popen([*CLI, "run", str(suite), "--results-dir", str(root)], cwd=ROOT,
                           env=cli_env({}), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    try:
        run_dir = wait_for("the run directory", lambda: the_run(root))
        guest = wait_for("the guest", lambda: [e["name"] for e in ledger.read(run_dir)
                                               if e["kind"] == "domain"], 120)[0]
        wait_for("the trial to start", lambda: "mini" in str(
            rundir.read_manifest(run_dir).get("guests", {})), 300)
        assert guest in libvirt_guests()
        for dry in (["--dry-run"], []):
            done = orchestrate("gc", *dry)
            assert done.returncode == 0, done.stderr
            assert f"run {run_dir.name} is alive (pid {run.pid} is running): its guests are " \
                   f"left alone: {guest}" in done.stdout, done.stdout
            assert guest not in done.stdout.split("guest(s)")[-1]  # not among those destroyed
            assert guest in libvirt_guests() and run.poll() is None
        run.kill()  # the guest keeps running: libvirtd owns it
        run.wait()
        assert guest in libvirt_guests()
        done = orchestrate("gc")
        assert done.returncode == 0, done.stderr
        assert f"run {run_dir.name} is dead (pid {run.pid} is gone): recovering it" \
            in done.stderr
        assert f"run {run_dir.name}: destroyed guest {guest}" in done.stderr
        assert guest not in libvirt_guests()
        assert status(run_dir) == "crashed"
        assert "orchestrate gc" in rundir.read_manifest(run_dir)["crashed_by"]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        orchestrate("gc")  # never leave a guest behind, whatever failed above
