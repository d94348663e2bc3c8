"""Accelerator and paging-mode detection on recorded sysfs shapes (no VMX/SVM here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.host.accel import detect


def tree(tmp_path: Path, params: dict[str, dict[str, str]], dev_kvm: bool = True) -> Path:
    for module, values in params.items():
        (tmp_path / "sys/module" / module / "parameters").mkdir(parents=True)
        for name, value in values.items():
            (tmp_path / "sys/module" / module / "parameters" / name).write_text(value + "\n")
    (tmp_path / "dev").mkdir()
    if dev_kvm:
        (tmp_path / "dev/kvm").write_text("")
    return tmp_path


@pytest.mark.parametrize(("params", "mode"), [
    ({"kvm_intel": {"ept": "Y"}, "kvm": {"tdp_mmu": "Y"}}, "tdp"),
    ({"kvm_intel": {"ept": "N"}, "kvm": {"tdp_mmu": "Y"}}, "shadow"),
    ({"kvm_intel": {"ept": "Y"}, "kvm": {"tdp_mmu": "N"}}, "tdp-legacy"),
    ({"kvm_amd": {"npt": "1"}, "kvm": {"tdp_mmu": "Y"}}, "tdp"),
    ({"kvm_amd": {"npt": "0"}, "kvm": {"tdp_mmu": "Y"}}, "shadow"),
])
def test_kvm_paging_mode_comes_from_sysfs(tmp_path: Path, params: dict[str, dict[str, str]],
                                          mode: str) -> None:
    report = detect(tree(tmp_path, params))
    assert (report.accel, report.paging_mode) == ("kvm", mode)


def test_pvm_only_host_is_tcg_with_the_reason(tmp_path: Path) -> None:
    report = detect(tree(tmp_path, {"kvm_pvm": {}, "kvm": {"tdp_mmu": "N"}}))
    assert report.accel == "tcg" and report.kvm_module == "kvm_pvm"
    assert "kvm_pvm" in report.reasons[0] and "distribution kernels" in report.reasons[0]


def test_no_kvm_at_all(tmp_path: Path) -> None:
    report = detect(tree(tmp_path, {}, dev_kvm=False))
    assert report.accel == "tcg" and report.kvm_module is None
    assert any("no /dev/kvm" in r for r in report.reasons)


def test_this_machine_never_claims_kvm_for_a_pvm_dev_kvm() -> None:
    report = detect()
    if Path("/sys/module/kvm_pvm").is_dir() and not Path("/sys/module/kvm_amd").is_dir():
        assert report.accel == "tcg"
