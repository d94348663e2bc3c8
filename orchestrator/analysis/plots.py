"""Figures from summary tables (matplotlib, Agg): only what the data has is drawn.

For each workload metric with a swept numeric parameter: median (with its bootstrap CI) against
that parameter, one line per paging mode and guest, log-log when it spans a decade (the 2006
fork table's shape). Against `ptes_per_table` the break-even is marked where two modes' curves
cross (linear interpolation between neighbouring points): below it one mode is cheaper, above
it the other, which is the seed thread's question.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

SKIP_METRICS = ("rusage_",)


def _x_param(rows: pd.DataFrame, params: list[str]) -> str | None:
    for param in params:
        values = rows[param].dropna()
        if values.nunique() > 1 and pd.api.types.is_numeric_dtype(values):
            return param
    return None


def _save(fig: Figure, out_dir: Path, stem: str) -> Path:
    png = out_dir / f"{stem}.png"
    fig.savefig(png, dpi=110, bbox_inches="tight")
    fig.savefig(out_dir / f"{stem}.svg", bbox_inches="tight")
    plt.close(fig)
    return png


def crossings(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> list[float]:
    """x where curve a - b changes sign, by linear interpolation."""
    diff = a - b
    points = []
    for i in range(len(x) - 1):
        if diff[i] == 0:
            points.append(float(x[i]))
        elif diff[i] * diff[i + 1] < 0:
            points.append(float(x[i] + (x[i + 1] - x[i]) * diff[i] / (diff[i] - diff[i + 1])))
    return points


def metric_plots(table: pd.DataFrame, params: list[str], out_dir: Path) -> list[Path]:
    made = []
    for (workload, metric, unit), rows in table.groupby(["workload", "metric", "unit"]):
        if str(metric).startswith(SKIP_METRICS):
            continue
        x = _x_param(rows, params)
        if x is not None:
            made.append(_line_plot(rows, x, str(workload), str(metric), str(unit), out_dir))
            continue
        swept = _category_params(rows, params)
        if swept:
            made.append(_bar_plot(rows, swept, str(workload), str(metric), str(unit), out_dir))
    return made


def _category_params(rows: pd.DataFrame, params: list[str]) -> list[str]:
    """Swept non-numeric parameters (populate, backing, order...): compared as bars."""
    return [p for p in params if rows[p].dropna().nunique() > 1
            and not pd.api.types.is_numeric_dtype(rows[p].dropna())]


def _bar_plot(rows: pd.DataFrame, swept: list[str], workload: str, metric: str, unit: str,
              out_dir: Path) -> Path:
    """Median per combination of the swept values, one bar per paging mode; e.g. ns/page
    one PTE per fault vs populate, for anonymous and file-backed memory."""
    labels = rows[swept].astype(str).agg(" ".join, axis=1)
    medians = rows.assign(point=labels).groupby(["point", "paging_mode"])["median"].median()
    table = medians.unstack()
    x = "+".join(swept)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    table.plot.bar(ax=ax, rot=20)
    ax.set_ylabel(f"{metric} ({unit}), median")
    ax.set_title(f"{workload}: {metric} by {x}")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, out_dir, f"{workload}-{metric}-by-{x}")


def _line_plot(rows: pd.DataFrame, x: str, workload: str, metric: str, unit: str,
               out_dir: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for (mode, guest), line in rows.groupby(["paging_mode", "guest"]):
        line = line.groupby(x, as_index=False)[["median", "ci_low", "ci_high"]].median()
        xs, ys = line[x].to_numpy(float), line["median"].to_numpy(float)
        label = f"{mode} ({guest})"
        ax.errorbar(xs, ys, yerr=[ys - line["ci_low"].fillna(line["median"]).to_numpy(float),
                                  line["ci_high"].fillna(line["median"]).to_numpy(float) - ys],
                    marker="o", capsize=3, label=label)
        curves[label] = (xs, ys)
    xs_all = rows[x].to_numpy(float)
    # log axes for a decade or more; not when 0 is a value (mprotect's "whole region")
    if xs_all.min() > 0 and xs_all.max() / xs_all.min() >= 10:
        ax.set_xscale("log")
        ax.set_yscale("log")
    if x == "ptes_per_table":
        _mark_break_even(ax, curves)
    ax.set_xlabel(x)
    ax.set_ylabel(f"{metric} ({unit}), median with 95% CI")
    ax.set_title(f"{workload}: {metric} vs {x}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, f"{workload}-{metric}-vs-{x}")


def _mark_break_even(ax: Axes, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    labels = list(curves)
    for i, first in enumerate(labels):
        for second in labels[i + 1:]:
            xa, ya = curves[first]
            xb, yb = curves[second]
            if len(xa) == len(xb) and np.array_equal(xa, xb):
                for point in crossings(xa, ya, yb):
                    ax.axvline(point, linestyle="--", color="grey")
                    ax.annotate(f"break-even {point:.1f}", (point, ax.get_ylim()[1]),
                                fontsize=8, rotation=90, va="top")


def ratio_plot(ratios: pd.DataFrame, out_dir: Path) -> Path | None:
    cols = [c for c in ratios.columns if "/" in c]
    if ratios.empty or not cols:
        return None
    data = ratios[~ratios["metric"].str.startswith(SKIP_METRICS)]
    if data.empty:
        return None
    labels = [" ".join(str(v) for v in row) for row in
              data.drop(columns=cols + ["unit"]).to_numpy()]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.5))
    y = np.arange(len(labels))
    for i, col in enumerate(cols):
        ax.barh(y + i * 0.8 / len(cols), data[col], height=0.8 / len(cols), label=col)
    ax.set_yticks(y, labels, fontsize=7)
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xlabel("ratio of medians")
    ax.legend()
    return _save(fig, out_dir, "mode-ratios")


def events_plot(events: pd.DataFrame, out_dir: Path) -> Path | None:
    available = events[events["available"]]
    if available.empty:
        return None
    table = available.groupby(["event", "paging_mode"])["count"].median().unstack()
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(table) + 1.5))
    table.plot.barh(ax=ax)
    ax.set_xlabel("events per trial (median)")
    ax.set_xscale("symlog")
    return _save(fig, out_dir, "events-per-mode")


def trend_plot(trials: pd.DataFrame, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    runs = trials.groupby(["cell_id", "metric", "run_id"], sort=False)["value"].median()
    for key, series in runs.groupby(level=[0, 1], sort=False):
        cell, metric = cast(tuple[str, str], key)
        ax.plot(range(len(series)), series.to_numpy(), marker="o", label=f"{metric} {cell[:6]}")
    ax.set_xlabel("run (oldest first)")
    ax.set_ylabel("median")
    ax.legend(fontsize=7)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
