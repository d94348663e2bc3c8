"""Report over 1,000,000 synthetic trial rows: wall time and peak memory (goal < 10 s, < 2 GiB).
Run: .venv/bin/python bench/bench_report.py
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.analysis.report import write_report
from orchestrator.store import rundir
from orchestrator.store.tables import EVENT_COLUMNS, FIXED_COLUMNS

ROWS = 1_000_000


def synthetic_run(root: Path) -> Path:
    run_dir = rundir.new_run_dir(root, "big")
    rundir.RunDir(run_dir).create_manifest({
        "run_id": run_dir.name, "suite_name": "big", "host": {"hostname": "h"},
        "param_columns": {"pages": "int", "ptes_per_table": "int"}})
    rng = np.random.default_rng(1)
    modes = np.array(["native", "tdp", "shadow"])
    pages = np.array([1280, 12800, 64000, 128000])
    density = np.array([1, 4, 16, 64, 512])
    n = ROWS
    mode, pg, k = modes[rng.integers(0, 3, n)], pages[rng.integers(0, 4, n)], \
        density[rng.integers(0, 5, n)]
    value = pg / 10 * (1 + (mode == "shadow")) * rng.normal(1, 0.05, n)
    columns = {
        "run_id": [run_dir.name] * n, "host": ["h"] * n, "git_rev": ["x"] * n,
        "suite": ["big"] * n,
        "cell_id": np.char.add(mode.astype(str), (pg * 1000 + k).astype(str)),
        "paging_requested": mode, "paging_mode": mode, "accel": ["kvm"] * n,
        "guest": ["g"] * n, "workload": ["fork"] * n, "kind": ["fork-dirty"] * n,
        "trial": np.arange(n, dtype=np.int32), "warmup": np.zeros(n, bool),
        "attempt": np.ones(n, np.int32), "metric": ["fork_us"] * n, "value": value,
        "unit": ["us"] * n, "outcome": ["ok"] * n, "reason": [""] * n,
        "started_at": np.full(n, np.datetime64("2026-11-23T00:00:00", "us")),
        "duration_s": np.full(n, 0.01), "pages": pg, "ptes_per_table": k,
    }
    schema = pa.schema([*FIXED_COLUMNS.items(), ("pages", pa.int64()),
                        ("ptes_per_table", pa.int64())])
    pq.write_table(pa.table({c: columns[c] for c in schema.names}, schema=schema),
                   run_dir / rundir.TRIALS)
    pq.write_table(pa.table({c: [] for c in EVENT_COLUMNS},
                            schema=pa.schema(list(EVENT_COLUMNS.items()))),
                   run_dir / rundir.EVENTS)
    return run_dir


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = synthetic_run(Path(tmp))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        write_report([run], Path(tmp) / "report")
        elapsed = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"report over {ROWS:,} trial rows: {elapsed:.1f} s (goal < 10 s); peak RSS "
          f"{peak / 1024:.0f} MiB (grew {(peak - before) / 1024:.0f} MiB; goal < 2 GiB)")


if __name__ == "__main__":
    main()
