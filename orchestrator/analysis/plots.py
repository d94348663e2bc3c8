"""Figures from summary tables (matplotlib, Agg): only what was measured is drawn.

For each workload metric with a swept numeric parameter: median (with its 95% interval) against
that parameter, one line per paging mode, guest and setting of every other swept parameter
(never a median over a parameter that was swept: each point is one measured cell), log-log when
it spans a decade (the 2006 fork table's shape). `range_pages: 0` ("the whole region") is drawn
at the region's real size. Points of the plan that have no measurement are listed under the
figure with the reason their trials gave. Against `ptes_per_table` the break-even is marked
where two modes' curves of the same setting cross (linear interpolation between neighbouring
points): below it one mode is cheaper, above it the other, which is the seed thread's question.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

plt.style.use("tableau-colorblind10")  # told apart by readers with any colour vision
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from orchestrator.analysis.history import Step  # noqa: E402
from orchestrator.analysis.stats import crossings, shown  # noqa: E402

SKIP_METRICS = ("rusage_",)


def _x_param(rows: pd.DataFrame, params: list[str]) -> str | None:
    for param in params:
        values = rows[param].dropna()
        if values.nunique() > 1 and pd.api.types.is_numeric_dtype(values):
            return param
    return None


def new_axes(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure in this module's backend and palette, for drawers elsewhere in analysis."""
    fig, ax = plt.subplots(figsize=(width, height))
    return fig, ax


def save_png(fig: Figure, png: Path) -> Path:
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return png


def _save(fig: Figure, out_dir: Path, stem: str) -> Path:
    png = out_dir / f"{stem}.png"
    fig.savefig(png, dpi=110, bbox_inches="tight")
    fig.savefig(out_dir / f"{stem}.svg", bbox_inches="tight")
    plt.close(fig)
    return png


def metric_plots(table: pd.DataFrame, params: list[str], out_dir: Path,
                 unmeasured: pd.DataFrame | None = None) -> list[Path]:
    """One figure per workload metric. `unmeasured`: one row per planned point with no
    measurement (workload, paging_mode, guest, params, reason), named under its figures."""
    made = []
    for (workload, metric, unit), rows in table.groupby(["workload", "metric", "unit"]):
        if str(metric).startswith(SKIP_METRICS):
            continue
        missing = _missing_note(unmeasured, str(workload), params)
        x = _x_param(rows, params)
        if x is not None:
            made.append(_line_plot(rows, x, params, str(workload), str(metric), str(unit),
                                   out_dir, missing))
            continue
        swept = _swept(rows, params)
        if swept:
            made.append(_bar_plot(rows, swept, str(workload), str(metric), str(unit), out_dir,
                                  missing))
    return made


def _swept(rows: pd.DataFrame, params: list[str]) -> list[str]:
    """Parameters that take more than one value among these rows."""
    return [p for p in params if p in rows and rows[p].dropna().nunique() > 1]


def _setting(row: pd.Series, names: list[str]) -> str:
    return " ".join(f"{n}={shown(row[n])}" for n in names if pd.notna(row[n]))


def _missing_note(unmeasured: pd.DataFrame | None, workload: str, params: list[str]) -> str:
    if unmeasured is None or unmeasured.empty:
        return ""
    rows = unmeasured[unmeasured["workload"] == workload]
    lines = [f"{r['paging_requested']}/{r['guest']} {_setting(r, [p for p in params if p in r])}"
             f": {r['reason'] or r['outcomes']}" for _, r in rows.iterrows()]
    if len(lines) > 6:
        lines = [*lines[:6], f"... and {len(lines) - 6} more (see the report's list)"]
    return "not measured: " + "; ".join(lines) if lines else ""


def _note(fig: Figure, text: str) -> None:
    if text:
        fig.text(0.01, -0.02, text, fontsize=7, va="top", wrap=True)


def _intervals(rows: pd.DataFrame) -> NDArray[Any]:
    """Error bar lengths below and above each median (none where there is no interval)."""
    med = rows["median"].to_numpy(float)
    low = rows["ci_low"].fillna(rows["median"]).to_numpy(float)
    high = rows["ci_high"].fillna(rows["median"]).to_numpy(float)
    return np.vstack([med - low, high - med])


def _bar_plot(rows: pd.DataFrame, swept: list[str], workload: str, metric: str, unit: str,
              out_dir: Path, missing: str) -> Path:
    """One bar per measured cell: its swept values, one colour per paging mode and guest;
    e.g. ns/page one PTE per fault vs populate, anonymous and file-backed."""
    labelled = rows.assign(point=rows.apply(lambda r: _setting(r, swept), axis=1))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * labelled["point"].nunique() + 2), 4.2))
    _grouped_bars(ax, labelled, "point")
    ax.set_ylabel(f"{metric} ({unit}), median with 95% interval")
    ax.set_title(f"{workload}: {metric} by {'+'.join(swept)}")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _note(fig, missing)
    return _save(fig, out_dir, f"{workload}-{metric}-by-{'+'.join(swept)}")


def _grouped_bars(ax: Axes, rows: pd.DataFrame, category: str) -> None:
    """One group of bars per value of `category`, one bar per paging mode and guest, each
    with its interval."""
    rows = rows.assign(series=rows["paging_mode"] + " (" + rows["guest"] + ")")
    groups = list(dict.fromkeys(rows[category]))
    series = list(dict.fromkeys(rows["series"]))
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        part = rows[rows["series"] == name].set_index(category).reindex(groups)
        ax.bar(np.arange(len(groups)) + i * width, part["median"].to_numpy(float), width,
               yerr=_intervals(part), capsize=2, label=name)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=20, ha="right",
                  fontsize=8)


def x_values(rows: pd.DataFrame, x: str) -> NDArray[Any]:
    """The x of each row; `range_pages: 0` means the whole region, drawn at its size."""
    xs: NDArray[Any] = rows[x].to_numpy(float)
    if x == "range_pages" and "pages" in rows:
        xs = np.where(xs == 0, rows["pages"].to_numpy(float), xs)
    return xs


def _line_plot(rows: pd.DataFrame, x: str, params: list[str], workload: str, metric: str,
               unit: str, out_dir: Path, missing: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    curves: dict[str, dict[str, tuple[NDArray[Any], NDArray[Any]]]] = {}  # per setting of others
    others = [p for p in _swept(rows, params) if p != x]
    for _, line in rows.groupby(["paging_mode", "guest", *others], dropna=False, sort=True):
        line = line.assign(_x=x_values(line, x)).sort_values("_x")
        first = line.iloc[0]
        label = f"{first['paging_mode']} ({first['guest']})"
        label += f" {_setting(first, others)}" if others else ""
        xs, ys = line["_x"].to_numpy(float), line["median"].to_numpy(float)
        ax.errorbar(xs, ys, yerr=_intervals(line), marker="o", capsize=3, label=label.strip())
        curves.setdefault(_setting(first, others), {})[label] = (xs, ys)
    xs_all = x_values(rows, x)
    # log axes for a decade or more; not when 0 is a value (a count that stayed 0: linear y)
    if xs_all.min() > 0 and xs_all.max() / xs_all.min() >= 10:
        ax.set_xscale("log")
        if (rows["median"] > 0).all():
            ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels collide
    if x == "ptes_per_table":
        for same_setting in curves.values():
            _mark_break_even(ax, same_setting)
    ax.set_xlabel(x + (" (0 = the whole region, drawn at its size)" if x == "range_pages"
                       else ""))
    ax.set_ylabel(f"{metric} ({unit}), median with 95% interval")
    ax.set_title(f"{workload}: {metric} vs {x}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _note(fig, missing)
    return _save(fig, out_dir, f"{workload}-{metric}-vs-{x}")


def _mark_break_even(ax: Axes, curves: dict[str, tuple[NDArray[Any], NDArray[Any]]]) -> None:
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


def ratio_plot(ratios: pd.DataFrame, params: list[str], out_dir: Path,
               stem: str = "mode-ratios") -> Path | None:
    """Each ratio of medians (shadow/tdp, tdp/native, ...) per point, with its interval."""
    data = ratios[~ratios["metric"].str.startswith(SKIP_METRICS)] if not ratios.empty \
        else ratios
    if data.empty:
        return None
    labels = [f"{r['workload']} {r['metric']} {_setting(r, [p for p in params if p in r])} "
              f"({r['guest']})" for _, r in data.iterrows()]
    kinds = list(dict.fromkeys(data["ratio"]))
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(labels) + 1.5))
    for name in kinds:
        part = data["ratio"] == name
        y = np.flatnonzero(part.to_numpy())
        values = data.loc[part, "value"].to_numpy(float)
        low = data.loc[part, "ci_low"].fillna(data.loc[part, "value"]).to_numpy(float)
        high = data.loc[part, "ci_high"].fillna(data.loc[part, "value"]).to_numpy(float)
        ax.errorbar(values, y, xerr=np.vstack([values - low, high - values]), fmt="o", capsize=2,
                    label=name)
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=7)
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xlabel("ratio of medians, 95% BCa bootstrap interval")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, stem)


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


def trend_plot(trials: pd.DataFrame, params: list[str], found: list[Step], out: Path) -> Path:
    """One panel per metric: each cell's median per run against the run's start (dates on x,
    the unit on y), cells named by their parameters, each cell's noise band (median +-1.4826
    MAD of its run medians), and every step drawn as the range from the last run before it to
    the run where it began."""
    data = trials.assign(when=pd.to_datetime(trials["started_at"], unit="s", utc=True))
    metrics = list(dict.fromkeys(zip(data["metric"], data["unit"], strict=True)))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 3.2 * len(metrics)), squeeze=False)
    for ax, (metric, unit) in zip(axes[:, 0], metrics, strict=True):
        rows = data[data["metric"] == metric]
        for _, cell_rows in rows.groupby("cell_id", sort=False):
            _trend_line(ax, cell_rows, params)
        for step in (s for s in found if s.metric == metric):
            _step_range(ax, rows, step)
        ax.set_ylabel(f"{metric} ({unit}),\nmedian per run")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("run start (UTC)")
    fig.autofmt_xdate()
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def _trend_line(ax: Axes, rows: pd.DataFrame, params: list[str]) -> None:
    per_run = rows.groupby("run_id", sort=False).agg(when=("when", "min"),
                                                     value=("value", "median"))
    per_run = per_run.sort_values("when")
    first = rows.iloc[0]
    label = f"{first['paging_mode']}/{first['guest']} {first['workload']} " \
            f"{_setting(first, [p for p in params if p in rows])}"
    line = ax.plot(per_run["when"], per_run["value"], marker="o", label=label.strip())[0]
    values = per_run["value"].to_numpy(float)
    center = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - center)))
    if len(values) >= 3 and spread > 0:
        ax.axhspan(center - spread, center + spread, color=line.get_color(), alpha=0.12)


def _step_range(ax: Axes, rows: pd.DataFrame, step: Step) -> None:
    starts = rows.groupby("run_id")["when"].min().sort_values()
    order = list(starts.index)
    if step.at_run not in order:
        return
    at = order.index(step.at_run)
    begin = starts.iloc[at - 1] if at > 0 else starts.iloc[at]
    ax.axvspan(begin, starts.iloc[at], color="grey", alpha=0.3)
    ax.annotate(f"step x{step.ratio:.2f} from {step.at_run}", (starts.iloc[at], step.after),
                fontsize=7)


def timeline_plot(timeline: pd.DataFrame, title: str, out_dir: Path, stem: str) -> Path:
    """One trial's host and guest events on one TSC axis, a row per (side, event): guest
    rows above host rows, so a guest page fault sits above the exits it caused."""
    data = timeline.dropna(subset=["tsc"])
    start = int(data["tsc"].min())
    rows = sorted(dict.fromkeys(zip(data["side"], data["event"], strict=True)),
                  key=lambda r: (r[0] != "host", r[1]))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
    ticks = [(data.loc[(data["side"] == side) & (data["event"] == event), "tsc"]
              .astype("int64") - start).to_numpy(float) / 1e6 for side, event in rows]
    ax.eventplot(ticks, lineoffsets=[float(i) for i in range(len(rows))], linelengths=0.8,
                 linewidths=0.6)
    ax.set_yticks(np.arange(len(rows)), [f"{side}: {event}" for side, event in rows],
                  fontsize=7)
    ax.set_xlabel("TSC ticks since the trial's first event (millions)")
    ax.set_title(title, fontsize=9)
    return _save(fig, out_dir, stem)


def unswept_plots(table: pd.DataFrame, params: list[str], out_dir: Path) -> list[Path]:
    """For a workload with nothing swept (dirty-log, migrate): its metrics of one unit side by
    side, one bar per paging mode and guest with its interval: dirty logging's throughput
    before, during and after logging (a phase plot); a migration's total, downtime, setup."""
    made = []
    for (workload, unit), rows in table.groupby(["workload", "unit"]):
        if unit in ("count", "") or _swept(rows, params) or rows["metric"].nunique() < 2:
            continue
        metrics = list(dict.fromkeys(rows["metric"]))
        fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(metrics) + 2), 4.2))
        _grouped_bars(ax, rows, "metric")
        ax.set_ylabel(f"{unit}, median with 95% interval")
        ax.set_title(f"{workload}: {', '.join(metrics)}")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        made.append(_save(fig, out_dir, f"{workload}-{str(unit).replace('/', '-per-')}-phases"))
    return made


def reference_plot(curves: list[tuple[str, int, bool, NDArray[Any], NDArray[Any]]], axis: str,
                   title: str, out_dir: Path, stem: str) -> Path:
    """Published and measured curves, each divided by its own first value: shapes only, since
    their platform's absolute times say nothing of ours. Theirs dashed, ours solid, a series
    and the mode of ours that plays it in one colour."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, index, theirs, xs, ys in curves:
        ax.plot(xs, ys, linestyle="--" if theirs else "-", marker="s" if theirs else "o",
                color=f"C{index}", label=label)
    xs_all = np.concatenate([xs for _, _, _, xs, _ in curves])
    if xs_all.min() > 0 and xs_all.max() / xs_all.min() >= 10:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(axis)
    ax.set_ylabel(f"value / value at {axis}={curves[0][3][0]:g}")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, stem)
