"""`orchestrate compare A B --html PAGE`: the comparison as one self-contained page.

On top what must not be missed: differences between the runs' environments, lost and new cells;
then every tested cell's ratio NEW/BASE with its interval, sorted by effect with regressions
first, as a figure and as a table.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from orchestrator.analysis import compatibility
from orchestrator.analysis.page import Banner, Block, Figure, Heading, Items, Table, Text, html_page

if TYPE_CHECKING:  # compare imports this module when asked for a page
    from orchestrator.analysis.compare import Change

ORDER = {"regression": 0, "lost": 1, "improvement": 2, "changed": 3, "new": 4,
         "unchanged": 5, "too few trials": 6, "no ratio": 7, "no signal": 8}
SHOWN = ["verdict", "paging_mode", "guest", "workload", "params", "metric", "unit",
         "base_median", "new_median", "ratio", "ci_low", "ci_high", "p_value", "p_basis",
         "q_value", "noise"]


def ranked(changes: list[Change]) -> pd.DataFrame:
    """Changes as rows: regressions first, then by the size of the effect."""
    frame = pd.DataFrame([asdict(c) for c in changes])
    if frame.empty:
        return frame
    effect = np.abs(np.log(frame["ratio"].where(frame["ratio"] > 0)))
    return (frame.assign(_order=frame["verdict"].map(ORDER).fillna(9), _effect=effect.fillna(0))
            .sort_values(["_order", "_effect"], ascending=[True, False])
            .drop(columns=["_order", "_effect"]))


def _ratio_figure(tested: pd.DataFrame, out_dir: Path) -> Path | None:
    from orchestrator.analysis.plots import new_axes, save_png  # matplotlib when drawing

    if tested.empty:
        return None
    rows = tested.iloc[::-1]  # the first row on top
    fig, ax = new_axes(8, 0.3 * len(rows) + 1.5)
    y = np.arange(len(rows))
    for verdict, colour in (("regression", "#c85200"), ("improvement", "#1170aa"),
                            ("changed", "#7b848f"), ("unchanged", "#a3acb9")):
        part = (rows["verdict"] == verdict).to_numpy()
        if part.any():
            value = rows["ratio"].to_numpy(float)[part]
            low = rows["ci_low"].fillna(rows["ratio"]).to_numpy(float)[part]
            high = rows["ci_high"].fillna(rows["ratio"]).to_numpy(float)[part]
            ax.errorbar(value, y[part], xerr=np.vstack([value - low, high - value]), fmt="o",
                        capsize=2,
                        color=colour, label=verdict)
    ax.set_yticks(y, [f"{r.workload} {r.params} {r.metric} ({r.paging_mode})"
                      for r in rows.itertuples()], fontsize=7)
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xlabel("NEW / BASE, ratio of medians with its 95% BCa interval")
    ax.legend(fontsize=8)
    return save_png(fig, out_dir / "compare-ratios.png")


def write_page(path: Path, base: str, new: str, changes: list[Change],
               found: list[compatibility.Difference], allowed: list[str]) -> Path:
    frame = ranked(changes)
    blocks: list[Block] = []
    for d in found:
        judged = "the change being judged" if d.key in allowed else "the runs differ"
        blocks.append(Banner(f"{judged}: {d.text}"))
    for verdict in ("lost", "new"):
        part = frame[frame["verdict"] == verdict] if not frame.empty else frame
        if not part.empty:
            blocks.append(Items(tuple(f"{verdict}: {r.paging_mode}/{r.guest} {r.workload} "
                                      f"{r.params} {r.metric}" for r in part.itertuples())))
    tested = frame[frame["verdict"].isin(["regression", "improvement", "changed",
                                          "unchanged"])] if not frame.empty else frame
    with tempfile.TemporaryDirectory() as scratch:  # the PNG is embedded, not kept
        png = _ratio_figure(tested, Path(scratch))
        blocks += [Heading("Every tested cell, regressions first, by effect"),
                   Figure(png) if png else Text("No cell could be tested."),
                   Table(frame[[c for c in SHOWN if c in frame]] if not frame.empty
                         else frame, empty="no cells", digits=4)]
        path.write_text(html_page(f"compare {base} -> {new}", blocks))
    return path
