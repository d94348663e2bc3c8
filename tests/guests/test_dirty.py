"""Dirty logging and live migration with real QEMU (TCG here; under KVM in tests/lab)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.errors import HarnessError
from orchestrator.guests import qemu_direct
from orchestrator.guests.guest import GuestTarget, booted_guest
from orchestrator.guests.images import Image
from orchestrator.guests.qemu_direct import RunningQemu, migrate_locally
from orchestrator.guests.spec import pick_free_port
from orchestrator.guests.ssh import new_run_key
from orchestrator.model import Outcome
from orchestrator.run.targets import NativeTarget
from orchestrator.store import reader
from orchestrator.workloads.dirty import Interval, parse_intervals, phase_rate, run_trial
from tests.guests.conftest import spec_for

SUITE = """\
name: dirty-test
paging: [native, tdp]
guests:
  mini: {image: mini, vcpus: 1, memory: 768MiB}
workloads:
  - {name: log, kind: dirty-log, params: {pages: 4096, phase: 2s}, trials: 1, warmup: 0}
  - {name: mig, kind: migrate, params: {pages: 4096, phase: 2s, bandwidth_mib_s: 64},
     trials: 1, warmup: 0}
timeouts: {boot: 180s, trial: 240s}
"""


def test_intervals_are_placed_on_the_host_clock() -> None:
    text = "\n".join([
        '{"type":"interval","t_s":0.25,"wall_us":10250000,"pages":1000,"pages_per_s":4000}',
        "noise",
        '{"type":"interval","t_s":0.5,"wall_us":10500000,"pages":500,"pages_per_s":2000}',
        '{"type":"trial"}',
    ])
    got = parse_intervals(text, offset=10.0)  # the guest's clock runs 10 s ahead
    assert got == [Interval(0.0, 0.25, 1000), Interval(0.25, 0.5, 500)]


def test_phase_rate_keeps_only_whole_intervals_away_from_switches() -> None:
    steps = [Interval(t / 4, t / 4 + 0.25, 100 if t < 8 else 50) for t in range(16)]
    assert phase_rate(steps, 0.0, 2.0) == pytest.approx(400)  # margins trimmed, 400 pages/s
    assert phase_rate(steps, 2.0, 4.0) == pytest.approx(200)
    assert phase_rate(steps, 1.0, 1.2) is None  # nothing wholly inside: no number, not zero


class LibvirtLikeDomain:
    """A guest domain whose launcher offers no same-host migration (as libvirt's)."""

    name = "g"
    console_log = Path("/nonexistent/console.log")

    def is_alive(self) -> bool:
        return True

    def console_tail(self, lines: int = 15) -> str:
        return ""

    def qemu_pid(self) -> int | None:
        return None

    def qmp(self, command: str, **arguments: object) -> object:
        raise AssertionError(f"a skipped trial asked QEMU for {command}")


PARAMS = {"pages": 16, "rate": 0, "phase": 1.0, "downtime_ms": 300, "bandwidth_mib_s": 64}


def test_host_driven_kinds_skip_where_the_host_cannot_drive_them(tmp_path: Path) -> None:
    """Decided by what the target and its domain offer, not by which launcher made them."""
    native = NativeTarget(str(tmp_path))
    for kind in ("dirty-log", "migrate"):
        skipped = run_trial(kind, native, PARAMS, 10)
        assert skipped.outcome is Outcome.SKIPPED and "needs a guest" in skipped.reason
    session = object()  # never used: both trials end before the guest is asked anything
    libvirt_guest = GuestTarget("g", "tdp", "kvm", session, LibvirtLikeDomain())  # type: ignore[arg-type]
    migrate = run_trial("migrate", libvirt_guest, PARAMS, 10)
    assert migrate.outcome is Outcome.SKIPPED and "launcher: qemu" in migrate.reason
    tcg_guest = GuestTarget("g", "tcg", "tcg", session, LibvirtLikeDomain())  # type: ignore[arg-type]
    dirty_log = run_trial("dirty-log", tcg_guest, PARAMS, 10)
    assert dirty_log.outcome is Outcome.SKIPPED and "needs KVM" in dirty_log.reason


@pytest.mark.integration
def test_suite_with_dirty_logging_and_a_migration(mini_image: Image, tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(suite),
                           "--results-dir", str(tmp_path / "r")], capture_output=True,
                          text=True, timeout=900,
                          env={**os.environ, "ORCH_GUEST_LAUNCHER": "qemu"})
    assert done.returncode == 0, done.stderr[-3000:]
    run = reader.load(tmp_path / "r" / "latest")
    native = run.trials[run.trials["paging_mode"] == "native"]
    assert set(native["outcome"]) == {"skipped"}  # nothing to log or migrate natively
    guest = run.trials[run.trials["paging_mode"] == "tcg"]
    logging = guest[guest["workload"] == "log"]
    assert set(logging["outcome"]) == {"skipped"}  # measured under KVM: tests/lab
    assert "needs KVM" in logging["reason"].iloc[0]
    migration = guest[guest["workload"] == "mig"]
    assert set(migration["outcome"]) == {"ok"}, migration["reason"].tolist()
    value = migration.set_index("metric")["value"]
    for metric in ("pages_per_s_before", "pages_per_s_during", "pages_per_s_after"):
        assert value[metric] > 0, metric
    assert value["total_time_ms"] > 0 and value["downtime_ms"] >= 0
    assert value["transferred_mib"] > 0 and value["iterations"] >= 1
    left = subprocess.run(["pgrep", "-f", "--", f"-name orch-{run.path.name[-6:]}"],
                          capture_output=True, text=True)
    assert not left.stdout  # source, destination: no QEMU outlives the run


def _target(domain: RunningQemu, session: object) -> GuestTarget:
    # labelled kvm: under TCG a dirty-log trial is skipped before it asks QEMU anything
    return GuestTarget("mini", "tdp", "kvm", session, domain)  # type: ignore[arg-type]


@pytest.mark.integration
def test_migration_failing_half_way_leaves_the_guest_running(mini_image: Image,
                                                             tmp_path: Path) -> None:
    key, public = new_run_key(tmp_path)
    with booted_guest(spec_for(mini_image, tmp_path), mini_image, key=key, public_key=public,
                      uri="unused", boot_timeout=180, launcher="qemu") as (domain, session):
        assert isinstance(domain, RunningQemu)
        source = domain.process.pid

        def kill_destination() -> None:
            while not domain._others:
                time.sleep(0.05)
            time.sleep(1.0)  # the migration is under way (1 MiB/s: it cannot finish)
            os.kill(domain._others[0].pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_destination)
        killer.start()
        result = migrate_locally(domain, timeout=120, downtime_ms=300, bandwidth_mib_s=1)
        killer.join()
        assert result.status == "failed", result.stats
        assert domain.process.pid == source and domain.is_alive()
        assert domain._others == []  # the dead destination is not kept
        assert session.run(["uname", "-r"], timeout=60).returncode == 0  # still answering
        assert domain.qmp("query-status")["status"] == "running"


@pytest.mark.integration
def test_dirty_rate_on_a_guest_that_has_exited(mini_image: Image, tmp_path: Path) -> None:
    key, public = new_run_key(tmp_path)
    with booted_guest(spec_for(mini_image, tmp_path), mini_image, key=key, public_key=public,
                      uri="unused", boot_timeout=180, launcher="qemu") as (domain, session):
        assert isinstance(domain, RunningQemu)
        os.kill(domain.process.pid, signal.SIGKILL)
        domain.process.wait()
        with pytest.raises(HarnessError, match="is not running: no QMP calc-dirty-rate"):
            domain.qmp("calc-dirty-rate", **{"calc-time": 1})
        parsed = run_trial("dirty-log", _target(domain, session), {"pages": 10, "rate": 0,
                                                                     "phase": 1.0}, 30)
        assert parsed.outcome is Outcome.ERROR and "\n" not in parsed.reason


@pytest.mark.integration
def test_a_destination_that_cannot_start_is_started_again(
        mini_image: Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Free ports are picked by bind-and-close, so another process can take one before QEMU
    binds it. Here one is taken on purpose: the first destination's SSH forward fails and
    that QEMU exits; a second destination on fresh ports receives the guest."""
    key, public = new_run_key(tmp_path)
    with socket.socket() as taken, booted_guest(
            spec_for(mini_image, tmp_path), mini_image, key=key, public_key=public,
            uri="unused", boot_timeout=180, launcher="qemu") as (domain, session):
        assert isinstance(domain, RunningQemu)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        picks = iter([pick_free_port(), taken.getsockname()[1]])
        monkeypatch.setattr(qemu_direct, "pick_free_port",
                            lambda: next(picks, None) or pick_free_port())
        source = domain.process
        with caplog.at_level(logging.WARNING, logger="orchestrator.guests.qemu_direct"):
            result = migrate_locally(domain, timeout=120, downtime_ms=300, bandwidth_mib_s=256)
        assert result.status == "completed", result.stats
        (warning,) = [r.getMessage() for r in caplog.records  # not qemu.qmp's own log lines
                      if r.levelno >= logging.WARNING and r.name == qemu_direct.log.name]
        assert "destination (start 1)" in warning and "exited with status 1" in warning
        assert "host forwarding" in warning, warning
        assert domain.process is not source and domain.is_alive()
        assert domain._others == [source] and source.poll() is not None
        assert domain.spec.ssh_port != taken.getsockname()[1]
        assert domain.qmp("query-status")["status"] == "running"
