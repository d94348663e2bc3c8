"""A whole suite in the nested lab: [tdp, shadow] fork-dirty under real KVM inside L1, the
mode of every row checked against L1's sysfs as sampled from outside, the seeds' qualitative
result, KVM's shadow-MMU tracepoints, and npt restored, also after an interrupted run."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from orchestrator import results
from orchestrator.images import build_mini
from orchestrator.lab import NPT, Lab, load_kvm, nested_lab
from orchestrator.lab_run import run_in_lab
from orchestrator.suite_file import load_suite

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]

SUITE = """\
name: lab-fork-dirty
paging: [tdp, shadow]
guests:
  small: {image: mini, vcpus: 1, memory: 1GiB}
workloads:
  - name: fork
    kind: fork-dirty
    params: {pages: [1280, 64000]}
    trials: 3
    warmup: 1
trace:
  host: ["kvm:kvm_exit", "kvmmmu:kvm_mmu_sync_page", "kvmmmu:kvm_mmu_unsync_page"]
  guest: ["exceptions:page_fault_user"]
timeouts: {boot: 600s, trial: 600s}
"""
NPT_OF_MODE = {"tdp": "Y", "shadow": "N"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    build_mini()
    with nested_lab(tmp_path_factory.mktemp("lab")) as lab:
        load_kvm(lab, npt=True)  # the lab host's original state
        yield lab


@pytest.fixture()
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE)
    return path


def test_tdp_vs_shadow_suite_in_the_lab(lab: Lab, suite: Path, tmp_path: Path) -> None:
    outcome = run_in_lab(lab, load_suite(suite), tmp_path / "results", timeout=2400)
    assert outcome.exit_code == 0, (lab.workdir / "inner.log").read_text()[-2000:]
    assert outcome.run_dir is not None
    run = results.load(outcome.run_dir)
    trials = run.trials[~run.trials["warmup"]]
    assert set(trials["accel"]) == {"nested-tcg"}  # never labelled plain kvm
    assert set(trials["outcome"]) == {"ok"}

    # every sysfs sample taken while a mode's trials ran says that mode
    for mode, rows in trials.groupby("paging_mode"):
        start = rows["started_at"].min().timestamp()
        end = (rows["started_at"] + pd.to_timedelta(rows["duration_s"], unit="s")).max()
        during = [s["npt"] for s in outcome.samples if start <= s["t"] <= end.timestamp()]
        assert during and set(during) == {NPT_OF_MODE[str(mode)]}, (mode, during)
    assert outcome.npt_before == outcome.npt_after == "Y"
    assert lab.sysfs_read(NPT) == "Y"
    assert run.manifest["lab"]["npt_after"] == "Y"

    fork = trials[trials["metric"] == "fork_us"]
    median = fork.groupby(["paging_mode", "pages"])["value"].median()
    assert median[("shadow", 64000)] > median[("tdp", 64000)], median

    events = run.events.merge(trials[trials["metric"] == "fork_us"][
        ["cell_id", "trial", "attempt", "pages"]], on=["cell_id", "trial", "attempt"])
    assert events["available"].all()
    per_trial = events.pivot_table(index=["paging_mode", "pages", "trial"],
                                   columns="event", values="count")
    sync = per_trial["kvmmmu:kvm_mmu_sync_page"].groupby("paging_mode").sum()
    unsync = per_trial["kvmmmu:kvm_mmu_unsync_page"].groupby("paging_mode").sum()
    assert sync["shadow"] > 0 and unsync["shadow"] > 0
    assert sync["tdp"] == 0 and unsync["tdp"] == 0
    exits = per_trial["kvm:kvm_exit"].groupby(["paging_mode", "pages"]).median()
    assert exits[("shadow", 64000)] > exits[("tdp", 64000)], exits
    # the guest's user page faults: one per page dirtied, plus the program's own few hundred
    faults = per_trial["exceptions:page_fault_user"].reset_index()
    excess = faults["exceptions:page_fault_user"] - faults["pages"]
    assert ((excess >= 0) & (excess <= 0.02 * faults["pages"] + 300)).all(), faults


def test_interrupted_lab_run_restores_npt(lab: Lab, suite: Path, tmp_path: Path) -> None:
    def shadow_has_begun(share: Path) -> bool:
        for journal in share.glob("results/*/trials.jsonl"):
            rows = [json.loads(line) for line in journal.read_text().splitlines()]
            if any(r["paging_mode"] == "shadow" for r in rows):
                return True
        return False

    outcome = run_in_lab(lab, load_suite(suite), tmp_path / "results", timeout=2400,
                         stop_when=shadow_has_begun)
    assert outcome.exit_code == 130
    assert outcome.run_dir is not None
    run = results.load(outcome.run_dir)
    assert run.manifest["status"] == "interrupted"
    assert {"tdp", "shadow"} <= set(run.trials["paging_mode"])  # stopped half way
    assert "N" in {s["npt"] for s in outcome.samples}  # it was in shadow mode when stopped
    assert outcome.npt_after == "Y" and lab.sysfs_read(NPT) == "Y"
    left = lab.run(["pgrep", "-f", "qemu-system"], timeout=60, check=False)
    assert left.stdout.strip() == ""  # the L2 guest went with the run
