"""Statistics over result tables: per-cell summaries, which way a metric gets worse, mode
ratios, many runs as one frame.

Reads tables only (never guests, libvirt or SSH). Warm-up and non-ok trials never enter a
statistic. Intervals are deterministic (order statistics here, a seeded bootstrap in compare),
so a report is reproducible from its tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.store import reader

BOOTSTRAP = 2000
SEED = 20061128  # fixed: the same tables always give the same intervals
POINT_KEYS = ["paging_mode", "accel", "guest", "workload", "kind"]
METRIC_KEYS = ["metric", "unit"]
NOT_METRICS = ("",)
STATS = ["n", "median", "min", "max", "q1", "q3", "iqr", "ci_low", "ci_high"]
TIME_UNITS = {"ns", "us", "ms", "s"}


def measured(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that count: ok, not warm-up, with a metric."""
    keep = (trials["outcome"] == "ok") & ~trials["warmup"].astype(bool)
    return trials[keep & ~trials["metric"].isin(NOT_METRICS)]


def present_params(trials: pd.DataFrame, names: Iterable[str]) -> list[str]:
    """Those of the parameters `names` (a manifest's param_columns) that the trials have a
    value of: the columns a table of them is keyed by."""
    return [c for c in names if c in trials.columns and trials[c].notna().any()]


def higher_is_worse(unit: str) -> bool | None:
    """Which way a metric gets worse, from its unit: a time (ns, us, ms, s) when it grows, a
    rate or throughput (anything per second: pages/s, ops/s, MiB/s) when it shrinks. None for
    counts, sizes and the like: reported, never called a regression."""
    if unit in TIME_UNITS:
        return True
    if unit.endswith("/s"):
        return False
    return None


def median_ci(values: np.ndarray) -> tuple[float, float]:
    """Distribution-free 95% CI of the median from order statistics (binomial ranks).

    Exact for any distribution, cheap for any n; below 6 trials no such interval reaches 95%,
    so the whole range is given (and flagged by n in the table)."""
    n = len(values)
    if n < 2:
        return (float("nan"), float("nan"))
    ordered = np.sort(values)
    half = 1.96 * np.sqrt(n) / 2
    lo = max(int(np.floor(n / 2 - half)), 0)
    hi = min(int(np.ceil(n / 2 + half)), n - 1)
    return float(ordered[lo]), float(ordered[hi])


def _stats(arr: np.ndarray) -> dict[str, float]:
    lo, hi = median_ci(arr)
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return {"n": len(arr), "median": med, "min": float(arr.min()), "max": float(arr.max()),
            "q1": q1, "q3": q3, "iqr": q3 - q1, "ci_low": lo, "ci_high": hi}


def summary(trials: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """One row per point and metric, of measured trials only: n, median, range, quartiles, a
    95% CI of the median (the STATS columns)."""
    data = measured(trials)
    keys = [k for k in POINT_KEYS + params + METRIC_KEYS if k in data.columns]
    rows = [
        {**dict(zip(keys, key, strict=True)), **_stats(group.to_numpy(dtype=float))}
        for key, group in data.groupby(keys, dropna=False, sort=True)["value"]
    ]
    return pd.DataFrame(rows, columns=[*keys, *STATS])


def mode_ratios(table: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """shadow/tdp and tdp/native medians for the same workload point and metric."""
    keys = ["workload", "kind", *params, "metric", "unit"]
    # a parameter a kind lacks is NaN: key it as "" so those rows still group (only real
    # combinations, never the cartesian product of all parameters)
    keyed = table.astype({p: "object" for p in params}).fillna({p: "" for p in params})
    wide = keyed.groupby([*keys, "paging_mode"], sort=True)["median"].median().unstack()
    out = pd.DataFrame(index=wide.index)
    for num, den in (("shadow", "tdp"), ("tdp", "native"), ("shadow", "native")):
        if num in wide.columns and den in wide.columns:
            out[f"{num}/{den}"] = wide[num] / wide[den]
    return out.dropna(how="all").reset_index()


def load_runs(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One run or many as one DataFrame (notebook API): `load_runs("results/latest")` or
    `load_runs([a, b])`; run_id and host columns, params as columns."""
    many = [paths] if isinstance(paths, str | Path) else paths
    frames = [reader.load(p).trials for p in many]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
