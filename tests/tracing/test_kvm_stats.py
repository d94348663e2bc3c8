"""KVM's per-VM debugfs counters as per-trial deltas (a recorded tree layout; the real one is
read in the nested lab e2e, tests/lab)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.tracing import kvm_stats
from orchestrator.tracing.event_globs import expand_globs


def _vm(root: Path, name: str, **counters: int) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    for counter, value in counters.items():
        (directory / counter).write_text(f"{value}\n")
    return directory


def test_deltas_of_one_qemu_process(tmp_path: Path) -> None:
    vm = _vm(tmp_path, "1234-11", exits=100, pf_fixed=7, mmu_unsync=0)
    _vm(tmp_path, "999-12", exits=5)  # another VM: not ours
    names = expand_globs(["kvmstat:exits", "kvmstat:mmu_*", "kvmstat:nope"],
                             kvm_stats.available(1234, tmp_path))
    assert names == ["kvmstat:exits", "kvmstat:mmu_unsync", "kvmstat:nope"]
    before = kvm_stats.snapshot(1234, names, tmp_path)
    (vm / "exits").write_text("175\n")
    (vm / "mmu_unsync").write_text("3\n")
    got = {e.event: (e.count, e.available) for e in
           kvm_stats.deltas(before, kvm_stats.snapshot(1234, names, tmp_path))}
    assert got == {"kvmstat:exits": (75.0, True), "kvmstat:mmu_unsync": (3.0, True),
                   "kvmstat:nope": (None, False)}  # unknown: unavailable, never 0


def test_a_vm_gone_mid_trial_is_unavailable(tmp_path: Path) -> None:
    vm = _vm(tmp_path, "42-10", exits=1)
    before = kvm_stats.snapshot(42, ["kvmstat:exits"], tmp_path)
    (vm / "exits").unlink()
    vm.rmdir()
    (event,) = kvm_stats.deltas(before, kvm_stats.snapshot(42, ["kvmstat:exits"], tmp_path))
    assert event.count is None and not event.available



@pytest.mark.needs_root
def test_debugfs_closed_to_a_non_root_user_makes_counters_unavailable(tmp_path: Path) -> None:
    """debugfs is root's only (0700): a run as another user gets unavailable counters, not
    a PermissionError. Here as the user nobody (the effective uid, given back after)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody for a moment")
    debug = tmp_path / "debug"
    _vm(debug / "kvm", "42-10", exits=1)
    debug.chmod(0o700)
    tmp_path.chmod(0o755)
    os.seteuid(65534)
    try:
        before = kvm_stats.snapshot(42, ["kvmstat:exits"], debug / "kvm")
        found = kvm_stats.available(42, debug / "kvm")
    finally:
        os.seteuid(0)
    assert before == {"kvmstat:exits": None} and found == set()
