"""Synthetic runs written through the real results store (journal -> Parquet)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.model import Metric, Outcome, TrialRecord
from orchestrator.store import rundir
from orchestrator.store.journal import Journal
from orchestrator.store.tables import finalize_tables

CELLS = {"c-small": 1280, "c-large": 128000}


def make_run(root: Path, name: str, values: Callable[[str, int], float], *, trials: int = 12,
             mode: str = "tdp", started: float | None = None, suite: str = "nightly",
             failing: frozenset[str] = frozenset(), counter: float = 3.0,
             manifest: dict[str, Any] | None = None, accel: str = "kvm") -> Path:
    """A run of CELLS; the cells named in `failing` error out before reporting a metric."""
    run_dir = rundir.new_run_dir(root, suite)
    rundir.RunDir(run_dir).create_manifest({
        "run_id": f"{name}-{run_dir.name}", "suite_name": suite, "git_rev": "abc",
        "status": "done", "started_at": str(started or time.time()),
        "host": {"hostname": "lab1"}, "param_columns": {"pages": "int"}, **(manifest or {})})
    with Journal(run_dir) as journal:
        for cell, pages in CELLS.items():
            for trial in range(trials):
                metrics = (Metric("fork_us", values(cell, trial), "us"),
                           Metric("rusage_minflt", counter, "count"))
                journal.append(TrialRecord(
                    cell_id=f"{mode}-{cell}", trial=trial, warmup=False, paging_requested=mode,
                    paging_mode=mode, accel=accel, guest="g", workload="fork",
                    kind="fork-dirty", params={"pages": pages},
                    outcome=Outcome.ERROR if cell in failing else Outcome.OK,
                    reason="guest lost" if cell in failing else "",
                    metrics=() if cell in failing else metrics,
                    started_at=(started or time.time()) + trial))
    finalize_tables(run_dir)
    return run_dir


def noisy(seed: int, scale: float = 1.0, sigma: float = 0.03,
          slow_cell: str | None = None, factor: float = 1.0) -> Callable[[str, int], float]:
    rng = np.random.default_rng(seed)
    draws = {c: rng.normal(1.0, sigma, 100) for c in CELLS}

    def value(cell: str, trial: int) -> float:
        base = {"c-small": 800.0, "c-large": 37000.0}[cell] * scale * draws[cell][trial]
        return float(base * (factor if cell == slow_cell else 1.0))

    return value
