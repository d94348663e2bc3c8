"""What a paging-mode switch costs, and the wall time of the nested e2e (figures printed, no
thresholds). In the nested lab: L1 boot to SSH, kvm_amd reload npt=1 <-> npt=0 (each verified
from sysfs), and one whole `[tdp, shadow]` fork-dirty suite run inside L1.
Absolute times are TCG's (L1 is emulated); on a bare-metal host a reload takes well under a
second. Run: .venv/bin/python bench/bench_modes.py [ROUNDS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.guests.images import build_mini
from orchestrator.lab.l1 import NPT, load_kvm, nested_lab
from orchestrator.lab.run import run_in_lab
from orchestrator.suite.loader import load_suite

ROOT = Path(__file__).resolve().parents[1]
SUITE = """\
name: bench-modes
paging: [tdp, shadow]
guests:
  small: {image: mini, vcpus: 1, memory: 1GiB}
workloads:
  - {name: fork, kind: fork-dirty, params: {pages: [1280, 64000]}, trials: 3, warmup: 1}
timeouts: {boot: 600s, trial: 600s}
"""


def main(rounds: int) -> None:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True)
    build_mini()
    with tempfile.TemporaryDirectory(dir=ROOT / "results") as tmp:
        start = time.monotonic()
        with nested_lab(Path(tmp) / "lab") as lab:
            booted = time.monotonic() - start
            switches = []
            for npt in [True, False] * rounds:
                t0 = time.monotonic()
                load_kvm(lab, npt=npt)
                assert lab.sysfs_read(NPT) == ("Y" if npt else "N")
                switches.append(time.monotonic() - t0)
            load_kvm(lab, npt=True)
            (Path(tmp) / "suite.yaml").write_text(SUITE)
            t0 = time.monotonic()
            outcome = run_in_lab(lab, load_suite(Path(tmp) / "suite.yaml"), Path(tmp) / "r")
            suite_s = time.monotonic() - t0
        total = time.monotonic() - start
    print(f"L1 boot to SSH: {booted:.1f} s")
    print(f"kvm_amd reload + sysfs check, {len(switches)} switches: median "
          f"{statistics.median(switches):.2f} s (min {min(switches):.2f}, max "
          f"{max(switches):.2f})")
    print(f"[tdp, shadow] fork-dirty suite inside L1 (16 trials, 2 guest boots, 2 switches): "
          f"{suite_s:.0f} s, exit {outcome.exit_code}; whole nested e2e {total:.0f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
