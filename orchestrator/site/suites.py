"""The fleet per suite: its runs, their run values, the change points (analysis/changepoints.py,
triage applied), where a host's environment changed, and each host's state last night.

Never pooled: every series is one host's runs of one cell and metric; the host factor and the
detector work per host and platform, as `orchestrate history` does.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from orchestrator.analysis import changepoints, triage
from orchestrator.analysis.changepoints import ChangePoint
from orchestrator.site.facts import is_good
from orchestrator.site.state import State, digest

STATUSES = ("ok", "regression", "broke", "missing")


@dataclass(frozen=True)
class EnvChange:
    """A host's environment changed between two of its runs of a suite (a trend marker)."""

    host: str
    last_before: str
    at_run: str
    night: str
    what: str


@dataclass
class Suite:
    name: str
    runs: list[dict[str, Any]]  # facts, oldest first
    values: pd.DataFrame  # run_values rows with "order" (in runs) and "night"
    points: list[ChangePoint] = field(default_factory=list)  # triage applied, newest first
    env_changes: list[EnvChange] = field(default_factory=list)

    @property
    def hosts(self) -> list[str]:
        return sorted({r["host"] for r in self.runs})

    def runs_of(self, host: str) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["host"] == host]

    def open_regressions(self, host: str | None = None) -> list[ChangePoint]:
        return [c for c in self.points if c.open_regression and (host is None or c.host == host)]


def night(facts: dict[str, Any]) -> str:
    return str(facts["started"] or "")[:10] or "?"


def suites(facts: list[dict[str, Any]], state: State, decisions: dict[str, dict[str, Any]],
           min_magnitude: float, jobs: int = 1) -> list[Suite]:
    """Every suite of the facts, its change points from the state when its runs are unchanged
    (else detected, a suite a process)."""
    by_suite: dict[str, list[dict[str, Any]]] = {}
    for f in facts:
        by_suite.setdefault(f["suite"], []).append(f)
    made = []
    for name, runs in sorted(by_suite.items()):
        runs.sort(key=lambda r: (str(r["started"] or ""), r["run_id"]))
        made.append(Suite(name, runs, _values(runs), env_changes=env_changes(runs)))
    keys = {s.name: digest([[r["run_id"], state.runs.get(r["path"], {}).get("fp")]
                            for r in s.runs]
                           + [min_magnitude, changepoints.DETECTOR_VERSION]) for s in made}
    stale = [s for s in made if state.detections.get(s.name, {}).get("digest") != keys[s.name]]
    for suite, found in zip(stale, _detect(stale, min_magnitude, jobs), strict=True):
        state.detections[suite.name] = {"digest": keys[suite.name],
                                        "points": [c.as_json() for c in found]}
    for suite in made:
        found = [_point(p) for p in state.detections[suite.name]["points"]]
        suite.points = triage.apply(decisions, found)
    return made


def _values(runs: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{**v, "host": r["host"], "order": i, "night": night(r)}
            for i, r in enumerate(runs) for v in r["values"]]
    frame = pd.DataFrame.from_records(rows)
    for column in ("median", "low", "high"):
        if column in frame:
            frame[column] = frame[column].astype(float)
    return frame


def _detect(stale: list[Suite], min_magnitude: float, jobs: int) -> list[list[ChangePoint]]:
    """Raw change points (before triage) of each suite: Otava over its run values."""
    frames = [s.values for s in stale]
    if len(frames) > 1 and jobs > 1:
        with ProcessPoolExecutor(min(jobs, len(frames))) as pool:
            return list(pool.map(_points_of, frames, [min_magnitude] * len(frames)))
    return [_points_of(f, min_magnitude) for f in frames]


def _points_of(values: pd.DataFrame, min_magnitude: float) -> list[ChangePoint]:
    return changepoints.change_points_of(values, min_magnitude)[0] if not values.empty else []


def _point(data: dict[str, Any]) -> ChangePoint:
    low, high = data["ratio_interval"]
    return ChangePoint(data["host"], data["cell_id"], data["metric"], data["unit"],
                       data["params"], data["last_before"], data["at_run"],
                       _num(data["before"]), _num(data["after"]), _num(low), _num(high),
                       _num(data["pvalue"]), int(data["runs_after"]),
                       change=_num(data.get("ratio")))


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def env_changes(runs: list[dict[str, Any]]) -> list[EnvChange]:
    """Per host, where consecutive runs' environments differ (what changed, old -> new)."""
    last: dict[str, dict[str, Any]] = {}
    found = []
    for run in runs:
        before = last.get(run["host"])
        if before is not None and run["env"] and before["env"]:
            changed = [f"{k}: {before['env'].get(k)} -> {v}" for k, v in run["env"].items()
                       if before["env"].get(k) != v]
            if changed:
                found.append(EnvChange(run["host"], before["run_id"], run["run_id"],
                                       night(run), "; ".join(changed)))
        if run["env"]:
            last[run["host"]] = run
    return found


def latest_night(all_suites: list[Suite]) -> str:
    return max((night(r) for s in all_suites for r in s.runs), default="?")


def status(suite: Suite, host: str, last_night: str) -> dict[str, Any]:
    """The host x suite cell of the index: its last run's night and what it says."""
    runs = [r for r in suite.runs_of(host) if r["status"] != "running"]  # not over yet
    if not runs:
        return {"status": "missing", "night": None, "run_id": None, "open": 0, "alerts": 0}
    last = runs[-1]
    open_points = suite.open_regressions(host)
    if night(last) < last_night:
        state = "missing"
    elif not is_good(last["status"], last["outcomes"]):
        state = "broke"
    else:
        state = "regression" if open_points else "ok"
    return {"status": state, "night": night(last), "run_id": last["run_id"],
            "run_status": last["status"], "open": len(open_points),
            "alerts": sum(c.alerts for c in open_points)}


def headline(suite: Suite) -> tuple[str, str] | None:
    """The suite's headline series, (params JSON, metric): the cell and metric most hosts
    measured (then the first by its parameters). One cell, never an average over cells."""
    if suite.values.empty:
        return None
    per = suite.values.drop_duplicates(["host", "params", "metric"])
    counts = per.groupby(["params", "metric"]).size().reset_index(name="n")
    counts = counts.sort_values(["n", "params", "metric"], ascending=[False, True, True])
    first = counts.iloc[0]
    return str(first["params"]), str(first["metric"])


def cell_name(params: str) -> str:
    return " ".join(f"{k}={v}" for k, v in json.loads(params).items() if v is not None)
