"""A host's own run-to-run noise per cell, from earlier runs of the same suite on it.

A change smaller than what this host does between two runs of an unchanged suite is not a
finding, however small its p-value: trials within a run agree more closely than runs do (page
cache, memory layout, a neighbour's load), so the run, not the trial, is the unit here. For
each cell, the medians of up to `MAX_RUNS` earlier runs of the suite on the same host are its
history: on their logarithms, a Student t prediction for the next run's median gives a p-value
for the new run's median (is it a run this host would produce anyway?) and a 99% prediction
interval whose relative half-width `compare` shows as the host's run-to-run noise. With few
runs both are wide, as they should be; fewer than `MIN_RUNS` runs say nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from orchestrator.analysis.stats import measured
from orchestrator.errors import OrchestratorError
from orchestrator.store import reader

log = logging.getLogger(__name__)

MIN_RUNS = 3
MAX_RUNS = 20
LEVEL = 0.99
FINISHED = ("done", "done-with-errors")


@dataclass(frozen=True)
class History:
    """One cell's medians in earlier runs (at least MIN_RUNS, all positive)."""

    medians: tuple[float, ...]

    def _scale(self) -> tuple[float, float, int]:
        logs = np.log(np.asarray(self.medians))
        n = len(logs)
        return float(logs.mean()), float(np.std(logs, ddof=1) * np.sqrt(1 + 1 / n)), n

    def halfwidth(self, level: float = LEVEL) -> float:
        """How far (a fraction) a next run's median may lie from the history's geometric mean
        with probability `level` when nothing changed: t(level, n-1) s sqrt(1 + 1/n)."""
        _, scale, n = self._scale()
        return float(np.expm1(stats.t.ppf(0.5 + level / 2, n - 1) * scale))

    def p_value(self, median: float) -> float:
        """Two-sided: how unusual `median` is for a run of this host (1 when it is typical)."""
        mean, scale, n = self._scale()
        if median <= 0:
            return float("nan")
        if scale == 0:
            return 1.0 if np.log(median) == mean else 0.0
        return float(2 * stats.t.sf(abs(np.log(median) - mean) / scale, n - 1))


def _host(manifest: dict[str, Any]) -> Any:
    host = manifest.get("host")
    return host.get("hostname") if isinstance(host, dict) else None


def earlier_runs(root: Path, base: dict[str, Any], exclude: set[str]) -> list[Path]:
    """Finished runs of base's suite on base's host, started no later than base, newest last."""
    runs = [r for r in reader.list_runs(root)
            if r.get("suite_name") == base.get("suite_name") and _host(r) == _host(base)
            and r.get("status") in FINISHED and r.get("run_id") not in exclude
            and str(r.get("started_at", "")) <= str(base.get("started_at", ""))]
    return [Path(r["path"]) for r in runs[-MAX_RUNS:]]


def host_history(root: Path, base: dict[str, Any],
                 exclude: set[str]) -> dict[tuple[str, str], History]:
    """(cell_id, metric) -> its History, for cells measured (with a positive median) in at
    least MIN_RUNS earlier runs of base's suite on base's host."""
    medians = []
    for path in earlier_runs(root, base, exclude):
        try:
            trials = reader.load(path, quiet=True).trials
        except OrchestratorError as exc:  # a damaged earlier run only narrows the history
            log.warning("noise: skipped %s: %s", path.name, exc.one_line())
            continue
        per_run = measured(trials).groupby(["cell_id", "metric"])["value"].median()
        medians.append(per_run.rename(path.name))
    if len(medians) < MIN_RUNS:
        return {}
    table = pd.concat(medians, axis=1)
    histories = {}
    for key, row in table.iterrows():
        cell_metric: tuple[str, str] = (str(key[0]), str(key[1]))  # type: ignore[index]
        values = row.dropna().to_numpy(float)
        if len(values) >= MIN_RUNS and np.all(values > 0):
            histories[cell_metric] = History(tuple(float(v) for v in values))
    return histories
