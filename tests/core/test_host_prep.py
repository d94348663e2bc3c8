"""Host preparation: applied when asked, recorded always, undone on every exit path, and
written in the run's ledger first (for recovery after a crash)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import HarnessError
from orchestrator.host.host_prep import (
    HUGEPAGES_2M,
    THP,
    conditions,
    prepared_host,
    selected,
    write_back,
)
from orchestrator.store import ledger
from orchestrator.suite.schema import HostPrep, ThpMode


def fake_root(tmp_path: Path) -> Path:
    for rel, text in [(THP, "always [madvise] never\n"), (HUGEPAGES_2M, "0\n"),
                      ("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "schedutil\n"),
                      ("sys/devices/system/cpu/cpu1/cpufreq/scaling_governor", "schedutil\n")]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_applied_then_restored(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    prep = HostPrep(apply=True, thp=ThpMode.NEVER, hugepages_2m=64, governor="performance")
    with prepared_host(prep, root) as seen:
        assert (root / THP).read_text() == "never"
        assert (root / HUGEPAGES_2M).read_text() == "64"
        assert seen["governor"] == "performance"
    assert (root / THP).read_text() == "madvise"
    assert (root / HUGEPAGES_2M).read_text() == "0"
    assert conditions(root)["governor"] == "schedutil"


def test_restored_after_an_exception_and_ctrl_c(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), prepared_host(HostPrep(apply=True, hugepages_2m=8), root):
            assert (root / HUGEPAGES_2M).read_text() == "8"
            raise exc
        assert (root / HUGEPAGES_2M).read_text() == "0"


def test_recorded_but_not_applied_by_default(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    with prepared_host(HostPrep(thp=ThpMode.NEVER), root) as seen:
        assert seen["thp"] == "madvise" and (root / THP).read_text().startswith("always")


def test_missing_control_is_a_clear_error_and_earlier_changes_are_undone(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    (root / HUGEPAGES_2M).unlink()
    prep = HostPrep(apply=True, thp=ThpMode.NEVER, hugepages_2m=4)
    with pytest.raises(HarnessError, match="no hugepages_2m control"), prepared_host(prep, root):
        pass
    assert selected((root / THP).read_text()) == "madvise"


def test_real_host_hugepage_pool_round_trip() -> None:
    real = Path("/proc/sys/vm/nr_hugepages")
    before = real.read_text().strip()
    with prepared_host(HostPrep(apply=True, hugepages_2m=int(before) + 2)) as seen:
        assert int(seen["hugepages_2m"]) >= int(before)  # the kernel may grant fewer
    assert real.read_text().strip() == before


def test_each_value_is_in_the_ledger_before_it_is_written_and_undone_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ledger.STATE_ENV, str(tmp_path / "state"))
    root = fake_root(tmp_path / "host")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    prep = HostPrep(apply=True, thp=ThpMode.NEVER, hugepages_2m=8)
    with ledger.recording(run_dir), prepared_host(prep, root):
        recorded = [(e["path"], e["old"], e["new"]) for e in ledger.read(run_dir)
                    if e["kind"] == "sysfs"]
    assert recorded == [(str(root / THP), "madvise", "never"),
                        (str(root / HUGEPAGES_2M), "0", "8")]
    entries = ledger.read(run_dir)
    undone = {e["ref"] for e in entries if e["kind"] == "undone"}
    assert {e["seq"] for e in entries if e["kind"] == "sysfs"} <= undone
    assert entries[-1]["kind"] == "end" and entries[-1]["left"] == []


def test_a_value_that_cannot_be_written_leaves_nothing_to_recover(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ledger.STATE_ENV, str(tmp_path / "state"))
    root = fake_root(tmp_path / "host")
    (root / HUGEPAGES_2M).unlink()
    (root / HUGEPAGES_2M).symlink_to("/proc/version")  # readable; writing it fails, even as root
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(HarnessError, match="cannot set"), ledger.recording(run_dir), \
            prepared_host(HostPrep(apply=True, hugepages_2m=8), root):
        pass
    assert ledger.read(run_dir)[-1]["left"] == []


def test_write_back_puts_a_recorded_value_back(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    (root / THP).write_text("never")
    write_back(root / THP, "madvise")
    write_back(root / THP, "madvise")  # idempotent
    assert selected((root / THP).read_text()) == "madvise"
    with pytest.raises(HarnessError, match="could not restore"):
        write_back(root / "sys/nope/x", "1")
