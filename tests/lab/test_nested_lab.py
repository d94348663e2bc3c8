"""The nested lab for real: L1 under TCG `-cpu max` runs kvm_amd, switches npt, and boots L2
guests under real KVM in both paging modes (minutes: marked slow and e2e)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.guests.images import build_mini
from orchestrator.lab.l1 import NPT, boot_l2, load_kvm, nested_lab

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e, pytest.mark.needs_root]
ROOT = Path(__file__).resolve().parents[2]


def test_l1_switches_npt_and_boots_l2_under_kvm_in_both_modes(tmp_path: Path) -> None:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    image = build_mini()
    with nested_lab(tmp_path / "lab") as lab:
        assert "svm" in lab.run(["grep", "-m1", "-o", "-w", "svm", "/proc/cpuinfo"],
                                timeout=60).stdout
        for npt, expected in ((True, "Y"), (False, "N"), (True, "Y")):
            load_kvm(lab, npt=npt)
            assert lab.sysfs_read(NPT) == expected  # verified from L1's sysfs
            done = boot_l2(lab, image.kernel, image.initrd)
            assert done.returncode == 0, done.stderr[-500:]
            assert "Run /bin/busybox as init process" in done.stdout
            assert "reboot: Power down" in done.stdout
    assert not subprocess.run(["pgrep", "-f", f"path={tmp_path / 'lab'}"],
                              capture_output=True).stdout  # L1 is gone
