"""Where a run's wall time went (issue #21), from what every run records: each trial's start
and host-side duration, the run's start and end, and each guest's measured empty trial.

- workload: every attempt's duration (warm-ups included) less its guest's exec cost, the
  median empty trial (`true`) measured at boot (manifest guests[MODE/GUEST].empty_trial_s;
  a run from before #21 has none, and then its whole trials count as workload and the line
  says exec was not measured, rather than 0).
- exec: that cost times the trials run in the guest: SSH, the guest-side kill wrapper and
  process creation, what a big sweep of short trials pays per trial (~2 ms against a loopback
  sshd since #21, 50-85 ms before).
- setup: the gap before the first trial of each guest in each paging mode (the mode switch,
  if the mode changed, and the guest's boot): the one boot per guest and mode and the one
  switch per mode a suite cannot avoid.
- other: the rest (gaps between trials, guests booted again mid-point, planning, host
  checks, writing the tables).

efficiency = (workload + setup) / wall. A resumed run's wall time includes the time it was
stopped, so its efficiency is a lower bound.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray


def time_budget(trials: pd.DataFrame, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """{"wall_s", "workload_s", "exec_s", "trials", "trial_median_s", "setup_s", "other_s",
    "efficiency"}, or None for a run without trials or a start in its manifest."""
    begun = _epoch(manifest.get("started_at"))
    if trials.empty or begun is None:
        return None
    rows = trials.drop_duplicates(["cell_id", "trial", "attempt"]).sort_values("started_at")
    starts = rows["started_at"].map(lambda t: t.timestamp()).to_numpy(dtype=float)
    durations = rows["duration_s"].to_numpy(dtype=float)
    ends = starts + durations
    last = float(ends.max())
    wall = max((_epoch(manifest.get("ended_at")) or last) - begun, last - begun)
    costs = _exec_costs(rows, manifest.get("guests", {}))
    exec_cost = np.minimum(durations, np.nan_to_num(costs))
    setup = _setup(rows, starts, ends, begun)
    workload = float(durations.sum() - exec_cost.sum())
    return {"wall_s": wall, "workload_s": workload, "exec_s": float(exec_cost.sum()),
            "exec_unmeasured": int(np.isnan(costs).sum()),
            "trials": len(rows), "trial_median_s": float(np.median(durations)),
            "setup_s": setup, "other_s": max(0.0, wall - float(durations.sum()) - setup),
            "efficiency": (workload + setup) / wall if wall > 0 else None}


def _exec_costs(rows: pd.DataFrame, guests: dict[str, Any]) -> NDArray[Any]:
    """Each trial's exec cost: its guest's empty trial; NaN for a guest trial whose guest had
    none measured (a run from before #21: unknown, not free); 0 for a native trial, which
    runs as a local process without SSH."""
    cost = {key: float(facts["empty_trial_s"]) for key, facts in guests.items()
            if isinstance(facts, dict) and facts.get("empty_trial_s") is not None}
    keys = rows["paging_mode"].astype(str) + "/" + rows["guest"].astype(str)
    native = (rows["paging_mode"].astype(str) == "native").to_numpy()
    looked_up = keys.map(lambda k: cost.get(k, np.nan)).to_numpy(dtype=float)
    return np.where(native, 0.0, looked_up)


def _setup(rows: pd.DataFrame, starts: NDArray[Any], ends: NDArray[Any], begun: float) -> float:
    """The gaps before each guest's first trial in each mode."""
    groups = list(zip(rows["paging_requested"], rows["guest"], strict=True))
    setup = 0.0
    for i, group in enumerate(groups):
        if i == 0 or group != groups[i - 1]:
            setup += max(0.0, float(starts[i]) - (float(ends[i - 1]) if i else begun))
    return setup


def budget_line(budget: dict[str, Any]) -> str:
    """One line for `orchestrate results`: the efficiency first, then where the time went."""
    wall = budget["wall_s"]

    def part(seconds: float) -> str:
        share = f" ({seconds / wall:.0%})" if wall > 0 else ""
        return f"{_duration(seconds)}{share}"

    efficiency = budget["efficiency"]
    said = "n/a" if efficiency is None else f"{efficiency:.0%}"
    return (f"efficiency {said} of {_duration(wall)} wall: workload {part(budget['workload_s'])}"
            f", first boots and mode switches {part(budget['setup_s'])}; per-trial exec "
            f"{_exec_said(budget, part)} ({budget['trials']} trials, median trial "
            f"{budget['trial_median_s'] * 1e3:.1f} ms); other {part(budget['other_s'])}")


def _exec_said(budget: dict[str, Any], part: Callable[[float], str]) -> str:
    unmeasured = int(budget.get("exec_unmeasured", 0))
    if not unmeasured:
        return part(budget["exec_s"])
    if unmeasured == budget["trials"]:
        return "not measured (no guest recorded an empty trial; counted as workload)"
    return (f"{part(budget['exec_s'])}, not measured for {unmeasured} guest trials "
            "(counted as workload)")


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
