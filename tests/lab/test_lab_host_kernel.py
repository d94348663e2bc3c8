"""`orchestrate lab run --host-kernel`: the lab host (L1, whose KVM runs the guests: the kernel
a KVM patch changes) booted on another kernel than the installed one, for a baseline beside a
candidate. The real thing: L1 on another Debian kernel release than the installed one (a real
package from apt), a [tdp, shadow] fork-dirty suite under its own kvm_amd (npt=1, then
npt=0), every row saying L1's own kernel, and `compare` naming the difference `host-kernel`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator import results
from orchestrator.cli.entry import main
from orchestrator.guests.images import build_mini, installed_kernel
from tests.guests.test_kernel_sweep import GENERIC

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e, pytest.mark.needs_root,
              pytest.mark.skipif(not shutil.which("apt-get"), reason="needs apt-get")]
ROOT = Path(__file__).resolve().parents[2]
SUITE = """\
name: lab-host-kernel
paging: [tdp, shadow]
guests:
  small: {image: mini, vcpus: 1, memory: 1GiB}
workloads:
  - {name: fork, kind: fork-dirty, params: {pages: 1280}, trials: 2, warmup: 0}
timeouts: {boot: 600s, trial: 180s}
lost_guest_retries: 1
"""


def another_generic_kernel() -> str:
    """A Debian generic kernel other than the installed one: the one test_kernel_sweep.py
    fetches into the shared cache (so CI downloads it once), or another release apt has.
    (Not the installed release's PREEMPT_RT build: its KVM refuses to load without a constant
    TSC, which TCG's -cpu max does not offer; lab run says so from L1's kernel log.)"""
    installed, _ = installed_kernel()
    if GENERIC != installed:
        return GENERIC
    found = subprocess.run(["apt-cache", "search", "--names-only", r"^linux-image-6\.[0-9.]*-[0-9]+-amd64$"],
                           capture_output=True, text=True, check=True, timeout=120).stdout
    return next(line.split()[0].removeprefix("linux-image-") for line in found.splitlines()
                if line.split()[0] != f"linux-image-{installed}")


def test_the_lab_host_boots_the_chosen_kernel_and_every_row_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    build_mini()
    other = another_generic_kernel()
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    code = main(["lab", "run", str(suite), "--results-dir", str(tmp_path / "results"),
                 "--host-kernel", f"linux-image-{other}", "--timeout", "1800"])
    out, err = capsys.readouterr()
    assert code == 0, err
    run = results.load(Path(json.loads(out.strip().splitlines()[-1])["run_dir"]))
    l1_kernel = run.manifest["lab"]["l1_kernel"]
    assert l1_kernel["release"] == other
    assert l1_kernel["source"] == f"package linux-image-{other}"
    assert len(l1_kernel["kernel_id"]) == 12
    assert run.manifest["host"]["kernel_release"] == other  # what L1 itself said (uname -r)
    # its own kvm_amd, reloaded with npt=0 for shadow and npt=1 again at the end
    assert run.manifest["lab"]["npt_after"] == "Y"
    assert {s["npt"] for s in run.manifest["lab"]["npt_samples"]} >= {"Y", "N"}
    ok = run.trials[run.trials["outcome"] == "ok"]
    assert len(ok.drop_duplicates(["cell_id", "trial"])) == 4
    assert set(ok["paging_mode"]) == {"tdp", "shadow"} and set(ok["accel"]) == {"nested-tcg"}
