"""A whole suite in the nested lab: [tdp, shadow] fork-dirty under real KVM inside L1, the
mode of every row checked against L1's sysfs as sampled from outside, the seeds' qualitative
result, KVM's shadow-MMU tracepoints, and npt restored, also after an interrupted run."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from orchestrator.analysis.report import write_report
from orchestrator.guests.images import build_mini
from orchestrator.lab.l1 import NPT, Lab, LabLost, load_kvm, nested_lab
from orchestrator.lab.run import LabRunOutcome, run_in_lab
from orchestrator.store import reader
from orchestrator.store.journal import read_journal
from orchestrator.suite.loader import load_suite
from tests.report.test_report import ARTIFACTS, opened_in_chromium

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e, pytest.mark.needs_root]
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
  host: ["kvm:kvm_exit", "kvm:kvm_page_fault", "kvmmmu:kvm_mmu_sync_page",
         "kvmmmu:kvm_mmu_unsync_page", "kvmstat:exits", "kvmstat:mmu_unsync"]
  guest: ["exceptions:page_fault_user", "vmstat:pgfault"]
  capture: true
  timeline: true
timeouts: {boot: 600s, trial: 180s}
lost_guest_retries: 1
"""
DIRTY_SUITE = """\
name: lab-dirty-logging
paging: [tdp, shadow]
guests:
  small: {image: mini, vcpus: 1, memory: 1GiB, launcher: qemu}
  ring: {image: mini, vcpus: 1, memory: 1GiB, launcher: qemu, dirty_ring: 4096}
workloads:
  - {name: logging, kind: dirty-log, params: {pages: 65536, phase: 3s}, trials: 1, warmup: 0}
  - {name: migration, kind: migrate, params: {pages: 16384, phase: 2s}, trials: 1, warmup: 0}
trace:
  host: ["kvm:kvm_page_fault", "kvmmmu:kvm_mmu_prepare_zap_page", "kvmstat:mmu_shadow_zapped"]
timeouts: {boot: 600s, trial: 300s}
# an L2 with a dirty ring under nested tdp was lost twice in a row once (CI, 2026-12-01: its
# QEMU ended during query-dirty-rate, then the fresh one stopped answering): two fresh guests
lost_guest_retries: 2
"""
NPT_OF_MODE = {"tdp": "Y", "shadow": "N"}
L1_ATTEMPTS = 4


class LabHost:
    """The module's L1, shared by its tests, and booted again if a test left it dead (so one
    emulated L1 that died fails one test, with its death report, never the next ones)."""

    def __init__(self, stack: ExitStack, factory: pytest.TempPathFactory) -> None:
        self._stack, self._factory = stack, factory
        self._lab: Lab | None = None

    def live(self) -> Lab:
        if self._lab is None or not self._lab.alive():
            if self._lab is not None:
                print(f"the previous L1 died: {self._lab.death_report()}")
            self._lab = self._stack.enter_context(nested_lab(self._factory.mktemp("lab")))
            load_kvm(self._lab, npt=True)  # the lab host's original state
        return self._lab


@pytest.fixture(scope="module")
def lab_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHost]:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    build_mini()
    with ExitStack() as stack:
        yield LabHost(stack, tmp_path_factory)


def run_suite(lab_host: LabHost, text: str, tmp_path: Path, **kwargs: Any
              ) -> tuple[Lab, LabRunOutcome]:
    """run_in_lab, tried again in a fresh L1 if the emulated L1 itself died: its kernel has
    panicked under TCG's SVM emulation (a page-fault storm hitting the stack guard page in an
    L2's vCPU thread, seen once in each of this stop's last two full test runs, both times in
    the dirty-logging run), an emulator crash and not the behaviour under test. How it died is
    printed; the L1_ATTEMPTS-th death fails the test."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    for attempt in range(1, L1_ATTEMPTS):
        lab = lab_host.live()
        try:
            return lab, run_in_lab(lab, load_suite(suite), tmp_path / f"results-{attempt}",
                                   **kwargs)
        except LabLost as lost:
            print(f"L1 died (attempt {attempt}), trying in a fresh one: {lost}")
    lab = lab_host.live()
    return lab, run_in_lab(lab, load_suite(suite), tmp_path / "results-last", **kwargs)


def test_tdp_vs_shadow_suite_in_the_lab(lab_host: LabHost, tmp_path: Path) -> None:
    lab, outcome = run_suite(lab_host, SUITE, tmp_path, timeout=2400)
    assert outcome.run_dir is not None, (lab.workdir / "inner.log").read_text()[-2000:]
    run = reader.load(outcome.run_dir)
    trials = run.trials[~run.trials["warmup"]]
    assert set(trials["accel"]) == {"nested-tcg"}  # never labelled plain kvm
    # Seen twice in about twenty runs: an L2 inside the emulated L1 stopped answering
    # mid-trial (once its QEMU spinning, once the SSH channel closed). The harness then
    # records that trial as an error, boots a fresh guest and runs it again once
    # (lost_guest_retries); a trial lost twice stays an error (exit 3). That is allowed here
    # (in a warm-up trial too), nothing else is, and every point must still have measured
    # trials.
    bad = run.trials[run.trials["outcome"] != "ok"]
    assert set(bad["outcome"]) <= {"error"}
    assert bad["reason"].str.contains("timed out|lost the guest").all(), bad["reason"].tolist()
    assert outcome.exit_code == (3 if len(bad) else 0), bad["reason"].tolist()

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
    assert fork.groupby(["paging_mode", "pages"]).size().to_dict().keys() == {
        ("tdp", 1280), ("tdp", 64000), ("shadow", 1280), ("shadow", 64000)}
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
    # KVM's own counters agree with the tracepoints: exits counted both ways, unsync only
    # under shadow; the guest's /proc/vmstat saw at least the workload's faults
    stat = per_trial["kvmstat:exits"]
    assert (stat > 0).all() and ((stat - per_trial["kvm:kvm_exit"]).abs()
                                 <= 0.05 * stat + 100).all(), per_trial
    assert per_trial["kvmstat:mmu_unsync"].groupby("paging_mode").sum()["tdp"] == 0
    assert (per_trial["vmstat:pgfault"] >= per_trial.index.get_level_values("pages")).all()
    # one full trace-cmd record per point, readable by trace-cmd report
    captures = sorted((outcome.run_dir / "captures").glob("*.dat"))
    assert len(captures) == 4, captures  # written even if that trial timed out
    shown = subprocess.run(["trace-cmd", "report", "-i", str(captures[-1])],
                           capture_output=True, text=True, timeout=300)
    assert "kvm_exit" in shown.stdout, shown.stderr[-500:]
    assert_guest_faults_line_up_with_kvm(outcome.run_dir)
    assert_report_opens_in_chromium(outcome.run_dir, tmp_path)


def assert_report_opens_in_chromium(run_dir: Path, tmp_path: Path) -> None:
    """The report of a real nested-lab [tdp, shadow] run: the nested banner, the workload's
    section with figures, ratios, events and timelines; every image decodes (#16)."""
    page = write_report([run_dir], tmp_path / "report")
    dom = opened_in_chromium(page, tmp_path, ARTIFACTS / "report-lab.png")
    assert "Nested lab: rows with accel=nested-tcg" in dom
    assert "<h2>fork (fork-dirty)</h2>" in dom and "How does fork() latency grow" in dom
    assert "shadow/tdp" in dom and "Timeline: fork" in dom
    assert "Median gap from a guest event to the next host event:" in dom


ADDRESS_RE = r"address[= ]0x([0-9a-f]+)"


def assert_guest_faults_line_up_with_kvm(run_dir: Path) -> None:
    """Host and guest on one timeline. Under shadow paging KVM intercepts the guest's page
    faults: for a page the guest has not mapped yet, the host's kvm_page_fault (whose address
    is then the guest's virtual address) comes first, then the guest's own handler runs
    (page_fault_user). On the merged timeline the last host fault at that address must lie
    between the guest's previous fault and this one: a misaligned clock puts it elsewhere."""
    journal = [r for r in read_journal(run_dir)
               if r["paging_mode"] == "shadow" and r["params"]["pages"] == 64000
               and "timeline" in r["info"]]
    assert journal, "no timeline for the shadow trial at 64,000 pages"
    frame = pd.read_parquet(run_dir / "captures" / journal[-1]["info"]["timeline"])
    frame["address"] = frame["detail"].str.extract(ADDRESS_RE, expand=False)
    guest = frame[frame["event"] == "exceptions:page_fault_user"].dropna(subset=["address"])
    host = frame[frame["event"] == "kvm:kvm_page_fault"].dropna(subset=["address"])
    assert len(guest) >= 64000 and len(host) >= 64000, (len(guest), len(host))
    host_at: dict[int, list[int]] = {}
    for address, tsc in zip(host["address"], host["tsc"], strict=True):
        host_at.setdefault(int(address, 16), []).append(int(tsc))
    previous, in_place, gaps = 0, 0, []
    for address, tsc in zip(guest["address"], guest["tsc"], strict=True):
        before = [t for t in host_at.get(int(address, 16), []) if t <= int(tsc)]
        if before:
            gaps.append(int(tsc) - max(before))
            in_place += previous <= max(before)
        previous = int(tsc)
    assert len(gaps) >= 0.9 * len(guest), (len(gaps), len(guest))
    assert in_place >= 0.9 * len(gaps), (in_place, len(gaps))
    # KVM's part of a fault is a fraction of the time between two faults of the workload:
    # (seen: 56k vs 335k cycles); a clock off by more than ~50k cycles fails here
    spacing = guest[guest["task"] == "fork-dirty"]["tsc"].astype("int64").diff().median()
    assert pd.Series(gaps).median() < 0.3 * spacing, (pd.Series(gaps).describe(), spacing)


def test_interrupted_lab_run_restores_npt(lab_host: LabHost, tmp_path: Path) -> None:
    def shadow_has_begun(share: Path) -> bool:
        for journal in share.glob("results/*/trials.jsonl"):
            rows = [json.loads(line) for line in journal.read_text().splitlines()]
            if any(r["paging_mode"] == "shadow" for r in rows):
                return True
        return False

    lab, outcome = run_suite(lab_host, SUITE, tmp_path, timeout=2400,
                             stop_when=shadow_has_begun)
    assert outcome.exit_code == 130
    assert outcome.run_dir is not None
    run = reader.load(outcome.run_dir)
    assert run.manifest["status"] == "interrupted"
    assert {"tdp", "shadow"} <= set(run.trials["paging_mode"])  # stopped half way
    assert "N" in {s["npt"] for s in outcome.samples}  # it was in shadow mode when stopped
    assert outcome.npt_after == "Y" and lab.sysfs_read(NPT) == "Y"
    left = lab.run(["pgrep", "-x", "qemu-system-x86"], timeout=60, check=False)
    assert left.stdout.strip() == ""  # the L2 guest went with the run


def test_dirty_logging_and_migration_in_the_lab(lab_host: LabHost, tmp_path: Path) -> None:
    lab, outcome = run_suite(lab_host, DIRTY_SUITE, tmp_path, timeout=2400)
    assert outcome.exit_code == 0, (lab.workdir / "inner.log").read_text()[-2000:]
    assert outcome.run_dir is not None
    run = reader.load(outcome.run_dir)
    trials = run.trials
    assert set(trials["outcome"]) == {"ok"} and set(trials["accel"]) == {"nested-tcg"}
    # an L2 lost under the emulated L1 (seen: its QEMU ended mid-trial) is run again in a
    # fresh guest, up to twice; the table keeps the last attempt, the journal every one
    lost = [r["reason"] for r in read_journal(outcome.run_dir) if r["outcome"] != "ok"]
    print("trials lost with their guest and run again:", lost)
    value = trials.pivot_table(index=["paging_mode", "guest", "workload"], columns="metric",
                               values="value").to_dict("index")
    for mode in ("tdp", "shadow"):
        for guest in ("small", "ring"):
            logging = value[(mode, guest, "logging")]
            # write-protection while logging: the guest writes far slower, then recovers
            assert logging["pages_per_s_on"] < logging["pages_per_s_off"], (guest, logging)
            assert logging["pages_per_s_after"] > logging["pages_per_s_on"], (guest, logging)
            migration = value[(mode, guest, "migration")]
            assert migration["total_time_ms"] > 0 and migration["iterations"] >= 1
            assert migration["transferred_mib"] > 0 and migration["downtime_ms"] >= 0
            assert migration["pages_per_s_during"] > 0
    # QEMU says which dirty log it measured with: the ring where the guest has one
    journal = list(read_journal(outcome.run_dir))
    measured = {(r["paging_mode"], r["guest"]): r["info"]["mode"]
                for r in journal if r["workload"] == "logging" and r["outcome"] == "ok"}
    assert measured == {("tdp", "small"): "dirty-bitmap", ("shadow", "small"): "dirty-bitmap",
                        ("tdp", "ring"): "dirty-ring", ("shadow", "ring"): "dirty-ring"}
    assert {g: f["dirty_ring"] for g, f in run.manifest["guests"].items()} == {
        "tdp/small": 0, "tdp/ring": 4096, "shadow/small": 0, "shadow/ring": 4096}
    events = run.events.pivot_table(index=["paging_mode", "guest", "workload"],
                                    columns="event", values="count").to_dict("index")
    for guest in ("small", "ring"):
        assert events[("tdp", guest, "logging")]["kvm:kvm_page_fault"] > 0
        assert events[("shadow", guest, "logging")]["kvm:kvm_page_fault"] > 0
    # throwing shadow pages away is what shadow paging does when the bitmap is cleared
    assert events[("shadow", "small", "logging")]["kvmstat:mmu_shadow_zapped"] > 0
    assert events[("tdp", "small", "logging")]["kvmstat:mmu_shadow_zapped"] == 0
    left = lab.run(["pgrep", "-x", "qemu-system-x86"], timeout=60, check=False)
    assert left.stdout.strip() == ""  # sources and destinations all gone
