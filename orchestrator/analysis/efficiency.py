"""Where a run's wall time went (issue #21), from what every run records: each trial's start
and host-side duration, and the run's start and end in its manifest.

- trials: the sum of every attempt's duration (warm-ups included): sending the command,
  the workload, its tracing window, the answer. A trial's exec cost is inside it, which is
  why its median is shown beside the sum (an empty trial costs ~2 ms since #21, ~50-85 ms
  before).
- setup: the gap before the first trial of each guest in each paging mode (the mode
  switch, if the mode changed, and the guest's boot): the one boot per guest and mode and
  the one switch per mode a suite cannot avoid.
- other: the rest (gaps between trials, guests booted again mid-point, planning, host
  checks, writing the tables).

efficiency = (trials + setup) / wall. A resumed run's wall time includes the time it was
stopped, so its efficiency is a lower bound.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd


def time_budget(trials: pd.DataFrame, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """{"wall_s", "trials_s", "trials", "trial_median_s", "setup_s", "other_s",
    "efficiency"}, or None for a run without timed trials or a start in its manifest."""
    begun = _epoch(manifest.get("started_at"))
    if trials.empty or begun is None:
        return None
    rows = trials.drop_duplicates(["cell_id", "trial", "attempt"]).sort_values("started_at")
    starts = rows["started_at"].map(lambda t: t.timestamp()).to_numpy(dtype=float)
    durations = rows["duration_s"].to_numpy(dtype=float)
    ends = starts + durations
    last = float(ends.max())
    wall = max((_epoch(manifest.get("ended_at")) or last) - begun, last - begun)
    groups = list(zip(rows["paging_requested"], rows["guest"], strict=True))
    setup = 0.0
    for i, group in enumerate(groups):
        if i == 0 or group != groups[i - 1]:  # a guest's first trial in its mode
            setup += max(0.0, starts[i] - (float(ends[i - 1]) if i else begun))
    spent = float(durations.sum())
    return {"wall_s": wall, "trials_s": spent, "trials": len(rows),
            "trial_median_s": float(pd.Series(durations).median()), "setup_s": setup,
            "other_s": max(0.0, wall - spent - setup),
            "efficiency": (spent + setup) / wall if wall > 0 else None}


def budget_line(budget: dict[str, Any]) -> str:
    """One line for `orchestrate results`: the efficiency first, then where the time went."""
    wall = budget["wall_s"]

    def part(seconds: float) -> str:
        share = f" ({seconds / wall:.0%})" if wall > 0 else ""
        return f"{_duration(seconds)}{share}"

    efficiency = budget["efficiency"]
    said = "n/a" if efficiency is None else f"{efficiency:.0%}"
    return (f"efficiency {said} of {_duration(wall)} wall: trials {part(budget['trials_s'])}, "
            f"{budget['trials']} at a median {budget['trial_median_s'] * 1e3:.1f} ms; "
            f"first boots and mode switches {part(budget['setup_s'])}; "
            f"other {part(budget['other_s'])}")


def _epoch(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
