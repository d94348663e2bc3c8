"""Event counting: expansion, perf's CSV, and real counts around real workloads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import proc
from orchestrator.store import reader
from orchestrator.tracing.event_globs import expand_globs
from orchestrator.tracing.perf import (
    DEFAULT_GUEST,
    DEFAULT_HOST,
    TraceWindow,
    parse_perf_csv,
    with_defaults,
)

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {"kvm:kvm_exit", "kvmmmu:kvm_mmu_sync_page", "kvmmmu:kvm_mmu_unsync_page",
         "page-faults", "exceptions:page_fault_user"}


def test_globs_defaults_and_unknown_names() -> None:
    assert expand_globs(["kvmmmu:*"], KNOWN) == ["kvmmmu:kvm_mmu_sync_page",
                                                 "kvmmmu:kvm_mmu_unsync_page"]
    assert expand_globs(["nosuch:*", "kvm:kvm_exit", "kvm:kvm_exit"], KNOWN) == [
        "nosuch:*", "kvm:kvm_exit"]
    assert with_defaults(["default"], "guest", "fork-dirty") == list(DEFAULT_GUEST)
    assert with_defaults(["default", "x:y"], "host", "fork-dirty") == [*DEFAULT_HOST, "x:y"]
    assert with_defaults(["default"], "guest", "migrate") == []  # no guest process to count


def test_perf_csv_is_split_from_the_workloads_stderr() -> None:
    stderr = ("fault: warning: something\n"
              "1034,,page-faults,4334345,100.00,,\n"
              "<not supported>,,exceptions:page_fault_user,0,100.00,,\n")
    counts, rest = parse_perf_csv(stderr, ["page-faults", "exceptions:page_fault_user"])
    assert counts == {"page-faults": 1034.0, "exceptions:page_fault_user": None}
    assert rest == "fault: warning: something"


def test_window_reports_unknown_as_unavailable_never_zero() -> None:
    window = TraceWindow(["page-faults", "nosuch:ev"], {"page-faults"})
    assert window.wrap(["w"]) == ["perf", "stat", "-x,", "--no-big-num", "-e", "page-faults",
                                  "--", "w"]
    done = window.collect(proc.Completed(("w",), 0, "out", "7,,page-faults,1,100.00,,\n"))
    assert done.stderr == "" and done.stdout == "out"
    assert [(e.event, e.count, e.available) for e in window.counts] == [
        ("page-faults", 7.0, True), ("nosuch:ev", None, False)]


def run_suite(tmp_path: Path, paging: str, extra: str = "") -> reader.RunTables:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    suite = tmp_path / "s.yaml"
    suite.write_text(f"""\
name: trace-test
paging: {paging}
guests: {{mini: {{image: mini, memory: 768MiB}}}}
workloads:
  - {{name: fault, kind: fault, params: {{pages: 20000}}, trials: 2, warmup: 0}}
trace: {{host: ["kvm:kvm_exit", "nosuch:event"],
        guest: [default, "nosuch:ev", "vmstat:pgfault", "vmstat:thp_*", "vmstat:no_such"]}}
timeouts: {{boot: 120s, trial: 60s}}
{extra}""")
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(suite),
                           "--results-dir", str(tmp_path / "r")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return reader.load(tmp_path / "r" / "latest")


def assert_page_faults_match(events: object, mode: str) -> None:
    import pandas as pd

    assert isinstance(events, pd.DataFrame)
    faults = events[(events["paging_mode"] == mode) & (events["event"] == "page-faults")]
    assert len(faults) == 2
    # 20,000 pages touched, plus the process's own start-up faults
    assert faults["count"].between(20_000, 20_000 * 1.05).all()
    missing = events[(events["paging_mode"] == mode) & (events["event"] == "nosuch:ev")]
    assert (~missing["available"]).all() and missing["count"].isna().all()
    # /proc/vmstat deltas (system-wide, so at least the workload's faults), its globs, and
    # an unknown counter unavailable; perf's page-faults above stayed unperturbed by them
    mine = events[events["paging_mode"] == mode]
    pgfault = mine[mine["event"] == "vmstat:pgfault"]
    assert len(pgfault) == 2 and pgfault["count"].ge(20_000).all()
    assert "vmstat:thp_fault_alloc" in set(mine["event"])
    unknown = mine[mine["event"] == "vmstat:no_such"]
    assert len(unknown) == 2 and not unknown["available"].any()


def test_native_page_faults_match_pages_touched(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "[native]")
    assert_page_faults_match(run.events, "native")
    assert set(run.events["side"]) == {"guest"}  # no VM: nothing on the host side


@pytest.mark.integration
def test_guest_and_host_events_and_no_tracer_left(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "[tdp]")
    assert_page_faults_match(run.events, "tcg")
    host = run.events[run.events["side"] == "host"]
    exits = host[host["event"] == "kvm:kvm_exit"]
    assert len(exits) == 2 and exits["available"].all()  # counted (0 under TCG: no KVM used)
    assert not host[host["event"] == "nosuch:event"]["available"].any()
    left = subprocess.run(["pgrep", "-f", "perf stat -x, --no-big-num -e kvm"],
                          capture_output=True, text=True)
    assert left.stdout == ""


@pytest.mark.integration
def test_a_tracer_that_dies_mid_trial_marks_the_trial_and_the_run_goes_on(
        tmp_path: Path) -> None:
    import threading
    import time

    stop = threading.Event()

    def kill_host_perf() -> None:  # kill only tracers attached to a QEMU process (-p)
        while not stop.is_set():
            subprocess.run(["pkill", "-f", "perf stat -x, --no-big-num -e kvm:kvm_exit -p"],
                           capture_output=True)
            time.sleep(0.3)

    killer = threading.Thread(target=kill_host_perf)
    killer.start()
    try:
        run = run_suite(tmp_path, "[tdp]")
    finally:
        stop.set()
        killer.join()
    trials = run.trials[run.trials["metric"] == "touch_us"]
    assert len(trials) == 2 and set(trials["outcome"]) == {"ok"}  # timings kept, run went on
    # killed after it started counting, or before it could: both are said, never hidden
    assert trials["reason"].str.contains(
        "host tracer (?:died mid-trial|never started counting)").all()
    exits = run.events[run.events["event"] == "kvm:kvm_exit"]
    assert (~exits["available"]).all() and exits["count"].isna().all()


def test_default_event_sets_follow_the_workload_kind() -> None:
    from orchestrator.tracing.perf import with_defaults

    huge = with_defaults(["default", "sched:sched_switch"], "guest", "hugepage")
    assert huge[:len(DEFAULT_GUEST)] == list(DEFAULT_GUEST)
    assert "vmstat:thp_fault_alloc" in huge and huge[-1] == "sched:sched_switch"
    assert with_defaults(["default"], "guest", "dirty-log") == []  # no guest process to wrap
    assert "kvmstat:mmu_shadow_zapped" in with_defaults(["default"], "host", "dirty-log")
    assert with_defaults(["kvm:kvm_exit"], "host", "fork-dirty") == ["kvm:kvm_exit"]
