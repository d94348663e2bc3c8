"""The example suite runs natively through `orchestrate run` with the real binaries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestrator.store import reader

ROOT = Path(__file__).resolve().parents[2]


def test_native_smoke_suite_produces_the_tables(bin_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", str(ROOT / "suites/native-smoke.yaml"),
         "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run = reader.load(tmp_path / "latest")
    trials = run.trials
    assert set(trials["kind"]) == {"fork-dirty", "mprotect", "hugepage", "fault", "dirtier",
                                   "noop", "stress-ng"}
    ok = trials[trials["outcome"] == "ok"]
    fork = ok[(ok["metric"] == "fork_us") & ~ok["warmup"]]
    medians = fork.groupby(["pages", "ptes_per_table"])["value"].median()
    assert medians[(128000, 512)] > medians[(1280, 512)]
    # a hugetlb point either measured or was skipped with the pool state as its reason
    huge = trials[trials["backing"] == "hugetlb-2m"]
    assert set(huge["outcome"]) <= {"ok", "skipped"}
    assert huge.loc[huge["outcome"] == "skipped", "reason"].str.contains("pool").all()
    assert set(trials["accel"]) == {"native"} and set(trials["paging_mode"]) == {"native"}
