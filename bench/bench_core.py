"""Benchmarks of the orchestrator's core (figures printed, no pass/fail thresholds).

Goals from the issue: planning a 100,000-cell suite < 1 s; appending a trial record < 1 ms
median; memory flat as trials grow (the journal streams; nothing is held per trial).
Run: .venv/bin/python bench/bench_core.py
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
import tracemalloc
from array import array
from pathlib import Path

from orchestrator.model import Metric, Outcome, TrialRecord
from orchestrator.store import rundir
from orchestrator.store.journal import Journal
from orchestrator.store.tables import finalize_tables
from orchestrator.suite.plan import make_plan
from orchestrator.suite.schema import Suite


def big_suite(cells: int) -> Suite:
    # native (1 group) + 3 virtual modes x 5 guests = 16 groups x 500 points x trials
    pages = list(range(1000, 1000 + 50))
    density = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    trials = -(-cells // (16 * len(pages) * len(density)))
    return Suite.model_validate({
        "name": "big", "paging": ["native", "tdp", "shadow", "tdp-legacy"],
        "guests": {f"g{i}": {} for i in range(5)},
        "workloads": [{"name": "f", "kind": "fork-dirty", "trials": trials, "warmup": 0,
                       "params": {"pages": pages, "ptes_per_table": density}}],
    })


def bench_plan() -> None:
    suite = big_suite(100_000)
    start = time.perf_counter()
    plan = make_plan(suite)
    cells = sum(1 for _ in plan.cells())
    elapsed = time.perf_counter() - start
    assert cells == plan.counts()["trials"]
    print(f"plan: {cells:,} cells in {elapsed:.3f} s (goal < 1 s)")


def record(i: int) -> TrialRecord:
    return TrialRecord(cell_id="0123456789abcdef", trial=i, warmup=False,
                       paging_requested="tdp", paging_mode="tdp", accel="kvm", guest="g",
                       workload="fork", kind="fork-dirty",
                       params={"pages": 128000, "ptes_per_table": 512, "cow": False},
                       outcome=Outcome.OK, metrics=(Metric("fork_us", 812.3, "us"),
                                                    Metric("fork_wait_us", 990.1, "us")),
                       started_at=time.time(), duration_s=0.01)


def bench_append(tmp: Path) -> None:
    run_dir = rundir.new_run_dir(tmp, "bench")
    count = 50_000
    samples = array("d", bytes(8 * count))  # preallocated: the bench itself must not grow
    tracemalloc.start()
    checkpoints: list[int] = []
    with Journal(run_dir) as journal:
        for i in range(count):
            rec = record(i)
            start = time.perf_counter()
            journal.append(rec)
            samples[i] = time.perf_counter() - start
            if i % 10_000 == 9_999:
                checkpoints.append(tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    median_us = statistics.median(samples) * 1e6
    p99_us = sorted(samples)[int(len(samples) * 0.99)] * 1e6
    print(f"append: median {median_us:.1f} us, p99 {p99_us:.1f} us per trial (goal < 1 ms)")
    growth = [f"{c / 1024:.0f}" for c in checkpoints]
    print(f"append: traced Python memory after 10k, 20k .. 50k trials (KiB): {', '.join(growth)}"
          " (flat = streamed)")
    with Journal(run_dir, fsync=True) as journal:
        synced = []
        for i in range(200):
            start = time.perf_counter()
            journal.append(record(i))
            synced.append(time.perf_counter() - start)
    print(f"append with fsync: median {statistics.median(synced) * 1e6:.0f} us")
    _bench_finalize(run_dir)


def _bench_finalize(run_dir: Path) -> None:
    rundir.RunDir(run_dir).create_manifest({
        "run_id": run_dir.name, "suite_name": "bench", "host": {"hostname": "h"},
        "param_columns": {"pages": "int", "ptes_per_table": "int", "cow": "bool"}})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    finalize_tables(run_dir)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"finalize: 50,200 trials -> Parquet in {elapsed:.2f} s, "
          f"peak RSS grew {(after - before) / 1024:.0f} MiB")


def main() -> None:
    bench_plan()
    with tempfile.TemporaryDirectory() as tmp:
        bench_append(Path(tmp))


if __name__ == "__main__":
    main()
