"""Host preparation: applied when asked, recorded always, undone on every exit path."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import HarnessError
from orchestrator.host_prep import HUGEPAGES_2M, THP, conditions, prepared_host, selected
from orchestrator.suite import HostPrep, ThpMode


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
