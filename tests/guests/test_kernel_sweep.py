"""A real run sweeping two Debian kernel packages for a `mini` guest: the generic 6.1.0-47 and
its PREEMPT_RT build, fetched with apt-get, each booted (under TCG here) and measured, every
row saying which kernel it ran on, and the report drawing them side by side.

Guests are QEMU processes started directly (`launcher: qemu`): children of the run that die
with it, so this test needs no libvirtd and touches no other session's guests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from orchestrator import results
from orchestrator.cli.entry import main

ROOT = Path(__file__).resolve().parents[2]
GENERIC, RT = "6.1.0-47-amd64", "6.1.0-47-rt-amd64"
SUITE = f"""name: kernel-sweep
paging: [tdp]
guests:
  small:
    image: mini
    memory: 1GiB
    launcher: qemu
    kernel: [linux-image-{GENERIC}, linux-image-{RT}]
workloads:
  - name: fork
    kind: fork-dirty
    trials: 3
    params: {{pages: [1280, 12800]}}
"""

pytestmark = [
    pytest.mark.slow, pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("apt-get") or not shutil.which("qemu-system-x86_64"),
                       reason="needs apt-get and QEMU"),
]


def test_two_debian_kernels_side_by_side(tmp_path: Path) -> None:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "results")]) == 0
    run = next((tmp_path / "results").glob("*-kernel-sweep-*"))
    trials = results.load(run).trials
    ok = trials[trials["outcome"] == "ok"]
    assert len(ok.drop_duplicates(["cell_id", "trial"])) == 16

    by_guest = ok.groupby("guest")[["guest_kernel", "kernel_id", "kernel_config"]].nunique()
    assert (by_guest == 1).all().all()  # one kernel per guest, on every row
    booted = ok.drop_duplicates("guest").set_index("guest")
    assert booted.loc[f"small-{GENERIC}", "guest_kernel"] == GENERIC
    assert booted.loc[f"small-{RT}", "guest_kernel"] == RT
    assert booted["kernel_id"].nunique() == 2 and booted["kernel_config"].nunique() == 2
    assert set(ok["accel"]) == {"tcg"} or set(ok["accel"]) == {"kvm"}

    manifest = json.loads((run / "manifest.json").read_text())
    for release in (GENERIC, RT):
        chosen = manifest["kernels"][f"small-{release}"]
        assert chosen["requested"] == f"linux-image-{release}"
        assert chosen["release"] == release and chosen["config_hash"]
        assert chosen["kernel_id"] == booted.loc[f"small-{release}", "kernel_id"]
    boots = {key.split("/", 1)[1]: facts for key, facts in manifest["guests"].items()}
    assert all(facts["boot_to_ssh_s"] > 0 for facts in boots.values())
    assert "console=ttyS0" in str(booted.loc[f"small-{RT}", "kernel_cmdline"])

    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert {f"small-{GENERIC}", f"small-{RT}"} <= set(summary["guest"])
    page = (out / "report.md").read_text()
    assert f"small-{GENERIC}" in page and f"small-{RT}" in page
