"""Statistics over result tables: per-cell summaries, which way a metric gets worse, mode
ratios, many runs as one frame.

Reads tables only (never guests, libvirt or SSH). Warm-up and non-ok trials never enter a
statistic. Intervals are deterministic (`intervals`: exact order statistics for a median, a
seeded bootstrap for a ratio), so a report is reproducible from its tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from orchestrator.analysis.intervals import median_interval, ratio_interval
from orchestrator.store import reader

POINT_KEYS = ["paging_mode", "accel", "guest", "workload", "kind"]
METRIC_KEYS = ["metric", "unit"]
NOT_METRICS = ("",)
# ci_low..ci_high: the median's exact order-statistic interval; ci_level: the coverage it
# reaches (0.95 or more from 6 trials on; below that min..max and less, as computed)
STATS = ["n", "median", "min", "max", "q1", "q3", "iqr", "ci_low", "ci_high", "ci_level"]
TIME_UNITS = {"ns", "us", "ms", "s"}


def shown(value: object) -> object:
    """A parameter as people write it: 12.0 -> 12 (an integer column is widened to float when
    another kind lacks the parameter)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


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


def _stats(arr: NDArray[Any]) -> dict[str, float]:
    interval = median_interval(arr)
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return {"n": len(arr), "median": med, "min": float(arr.min()), "max": float(arr.max()),
            "q1": q1, "q3": q3, "iqr": q3 - q1, "ci_low": interval.low,
            "ci_high": interval.high, "ci_level": interval.level}


def summary(trials: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """One row per point and metric, of measured trials only: n, median, range, quartiles, the
    median's exact interval and the level it reaches (the STATS columns)."""
    data = measured(trials)
    keys = [k for k in POINT_KEYS + params + METRIC_KEYS if k in data.columns]
    rows = [
        {**dict(zip(keys, key, strict=True)), **_stats(group.to_numpy(dtype=float))}
        for key, group in data.groupby(keys, dropna=False, sort=True)["value"]
    ]
    return pd.DataFrame(rows, columns=[*keys, *STATS])


RATIO_COLUMNS = ["guest", "ratio", "value", "ci_low", "ci_high", "n_num", "n_den"]


def crossings(x: NDArray[Any], a: NDArray[Any], b: NDArray[Any]) -> list[float]:
    """x where curve a - b changes sign, by linear interpolation."""
    diff = a - b
    points = []
    for i in range(len(x) - 1):
        if diff[i] == 0:
            points.append(float(x[i]))
        elif diff[i] * diff[i + 1] < 0:
            points.append(float(x[i] + (x[i + 1] - x[i]) * diff[i] / (diff[i] - diff[i + 1])))
    return points


def _mode_pairs(modes: set[str]) -> list[tuple[str, str]]:
    """shadow/tdp, and every virtualized mode over native (tcg/native says what it is)."""
    pairs = [("shadow", "tdp")] if {"shadow", "tdp"} <= modes else []
    if "native" in modes:
        pairs += [(m, "native") for m in sorted(modes - {"native"})]
    return pairs


def mode_ratios(trials: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """Per workload point and metric: the ratio of medians of two verified paging modes, with
    its 95% BCa bootstrap interval, one row per guest (native rows pair with every guest)."""
    data = measured(trials)
    keys = [k for k in ["workload", "kind", *params, "metric", "unit"] if k in data.columns]
    rows = []
    for key, point in data.groupby(keys, dropna=False, sort=True):
        values = {(str(m), str(g)): v["value"].to_numpy(float)
                  for (m, g), v in point.groupby(["paging_mode", "guest"])}
        where = dict(zip(keys, key, strict=True))
        rows += [{**where, **row} for row in _ratios(values)]
    return pd.DataFrame(rows, columns=[*keys, *RATIO_COLUMNS])


def _ratios(values: Mapping[tuple[str, str], NDArray[Any]]) -> list[dict[str, object]]:
    """The RATIO_COLUMNS rows of one point: each pair of modes, per guest."""
    rows: list[dict[str, object]] = []
    for num, den in _mode_pairs({m for m, _ in values}):
        for (mode, guest), top in values.items():
            bottom = next((v for (m, g), v in values.items()
                           if m == den and (den == "native" or g == guest)), None)
            if mode != num or bottom is None or not np.median(bottom):
                continue
            interval = ratio_interval(top, bottom)
            rows.append({"guest": guest, "ratio": f"{num}/{den}",
                         "value": float(np.median(top) / np.median(bottom)),
                         "ci_low": interval.low, "ci_high": interval.high,
                         "n_num": len(top), "n_den": len(bottom)})
    return rows


def unmeasured(trials: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """Planned points with no measured trial: where, and why (the first reason their trials
    gave, and their outcomes), so a figure or table can say so instead of leaving a gap."""
    keys = [k for k in ["workload", "paging_requested", "guest", *params] if k in trials]
    columns = [*keys, "outcomes", "reason"]
    if trials.empty:
        return pd.DataFrame(columns=columns)
    ok = set(measured(trials)["cell_id"])
    rows = []
    for _, cell in trials[~trials["cell_id"].isin(ok)].groupby("cell_id", sort=True):
        first = cell.iloc[0]
        reasons = [r for r in cell["reason"].fillna("") if r]
        outcomes = ", ".join(f"{n} {o}" for o, n in cell.drop_duplicates(["trial"])
                             ["outcome"].value_counts().sort_index().items())
        rows.append({**{k: first[k] for k in keys}, "outcomes": outcomes,
                     "reason": reasons[0] if reasons else ""})
    return pd.DataFrame(rows, columns=columns)


# per-unit costs that explain scaling: (kind, metric) -> (derived metric, unit, how)
def _per_dirty_page(rows: pd.DataFrame) -> pd.Series:
    return rows["value"] * 1000 / rows["pages"]


def _per_pt_page(rows: pd.DataFrame) -> pd.Series:
    per_table = rows["ptes_per_table"].fillna(512) if "ptes_per_table" in rows else 512
    per_pt_page: pd.Series = rows["value"] / np.ceil(rows["pages"] / per_table)
    return per_pt_page


PER_UNIT = [("fork-dirty", "fork_us", "fork_ns_per_dirty_page", "ns", _per_dirty_page),
            ("fork-dirty", "fork_us", "fork_us_per_pt_page", "us", _per_pt_page)]


def per_unit(trials: pd.DataFrame) -> pd.DataFrame:
    """Derived per-trial rows: fork_us per dirty page and per page-table page (the seed's
    scaling question is whether the cost per page or per PTE page stays flat)."""
    made = []
    for kind, metric, name, unit, how in PER_UNIT:
        rows = trials[(trials["kind"] == kind) & (trials["metric"] == metric)]
        if not rows.empty and "pages" in rows:
            made.append(rows.assign(metric=name, unit=unit, value=how(rows)))
    return pd.concat(made, ignore_index=True) if made else trials.iloc[0:0]


def event_table(trials: pd.DataFrame, events: pd.DataFrame, params: list[str]) -> pd.DataFrame:
    """Events per measured trial as summary rows (metric = side.event, unit events/trial),
    keyed like the timings, so they can be drawn against the same swept axis."""
    counted = events[events["available"].astype(bool) & events["count"].notna()]
    if counted.empty:
        return pd.DataFrame()
    join = ["cell_id", "trial", "attempt"]
    keys = [*join, *(k for k in ["kind", "accel", "outcome", "warmup", *params]
                     if k in trials and k not in counted)]
    ran = trials.drop_duplicates(join)[keys]
    rows = counted.merge(ran, on=join).assign(
        metric=lambda f: f["side"] + "." + f["event"].str.replace(":", ".", regex=False),
        unit="events/trial", value=lambda f: f["count"].astype(float))
    return summary(rows, params)


def load_runs(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One run or many as one DataFrame (notebook API): `load_runs("results/latest")` or
    `load_runs([a, b])`; run_id and host columns, params as columns."""
    many = [paths] if isinstance(paths, str | Path) else paths
    frames = [reader.load(p).trials for p in many]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
