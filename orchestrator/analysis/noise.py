"""A host's own run-to-run noise per cell, from earlier runs of the same suite on it.

A change smaller than what this host does between two runs of an unchanged suite is not a
finding, however small its p-value. The noise of a cell is the robust relative spread of its
per-run medians (1.4826 x the median absolute deviation, over the median), from at most
`MAX_RUNS` earlier runs of the suite on the same host; fewer than `MIN_RUNS` say nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.analysis.stats import measured
from orchestrator.errors import OrchestratorError
from orchestrator.store import reader

log = logging.getLogger(__name__)

MIN_RUNS = 3
MAX_RUNS = 20
FINISHED = ("done", "done-with-errors")


def relative_spread(medians: np.ndarray) -> float:
    """1.4826 x MAD / median: a robust relative standard deviation (NaN when undefined)."""
    center = float(np.median(medians))
    if len(medians) < MIN_RUNS or center == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(medians - center)) / abs(center))


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


def host_noise(root: Path, base: dict[str, Any], exclude: set[str]) -> dict[tuple[str, str], float]:
    """(cell_id, metric) -> relative run-to-run noise, for cells seen in MIN_RUNS runs."""
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
    spreads = {}
    for key, row in table.iterrows():
        cell_metric: tuple[str, str] = (str(key[0]), str(key[1]))  # type: ignore[index]
        if row.notna().sum() >= MIN_RUNS:
            spreads[cell_metric] = relative_spread(row.dropna().to_numpy(float))
    return spreads
