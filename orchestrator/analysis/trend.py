"""`history --plot`: a trend panel per cell and metric, its change points drawn as ranges.

Each panel shows one series (a host's runs of one cell and metric): every run's median with its
exact 95 % interval, in run order; a change point is the grey range from the last run before it
to the first run after it, labelled with its ratio and status; a platform change (kernel, QEMU,
accelerator) is a dashed line, since the series is cut there.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from orchestrator.analysis.changepoints import ChangePoint, PlatformChange  # noqa: E402

COLUMNS = 2


def trend_plot(values: pd.DataFrame, found: list[ChangePoint], platforms: list[PlatformChange],
               out: Path) -> Path:
    """values: changepoints.run_values() of the runs (one row per run, cell and metric)."""
    series = list(values.groupby(["host", "cell_id", "metric", "unit"], sort=False))
    rows = max(1, -(-len(series) // COLUMNS))
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(6 * COLUMNS, 2.8 * rows), squeeze=False)
    for ax, ((host, cell, metric, unit), data) in zip(axes.flat, series, strict=False):
        _panel(ax, data.sort_values("order"), [
            c for c in found if (c.host, c.cell_id, c.metric) == (host, cell, metric)],
            [p for p in platforms if p.host == host])
        ax.set_ylabel(f"{metric} ({unit})", fontsize=8)
    for ax in list(axes.flat)[len(series):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _panel(ax: Axes, data: pd.DataFrame, found: list[ChangePoint],
           platforms: list[PlatformChange]) -> None:
    runs = list(data["run_id"])
    x = range(len(runs))
    mid = data["median"].to_numpy(float)
    err = [mid - data["low"].to_numpy(float), data["high"].to_numpy(float) - mid]
    ax.errorbar(x, mid, yerr=err, fmt="o-", markersize=3, linewidth=1, capsize=2)
    first = data.iloc[0]
    cell = " ".join(f"{k}={v}" for k, v in json.loads(first["params"]).items())
    ax.set_title(f"{first['host']}: {cell}", fontsize=7)
    for cp in found:
        if cp.at_run in runs and cp.last_before in runs:
            begin, end = runs.index(cp.last_before), runs.index(cp.at_run)
            ax.axvspan(begin, end, color="grey", alpha=0.3)
            ax.annotate(f"x{cp.ratio:.2f} {cp.status}", (end, cp.after), fontsize=7)
    for pc in platforms:
        if pc.at_run in runs:
            ax.axvline(runs.index(pc.at_run) - 0.5, linestyle="--", color="black", linewidth=1)
    ax.set_xlabel("run (oldest first)", fontsize=8)
    ax.grid(True, alpha=0.3)
