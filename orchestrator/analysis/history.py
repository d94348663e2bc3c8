"""`orchestrate history SUITE`: the change points of a suite over its runs, newest first.

Change points come from analysis/changepoints.py (Apache Otava's E-Divisive with a t-test over
each (host, cell, metric) series of run medians, calibrated on the recorded A/A series): not a
threshold between two runs. Each has its run range (the last run before it, the first after),
its magnitude (the ratio of the medians of the host-adjusted run medians after/before, with a
bootstrap interval; the measured medians before and after beside it), its p-value, how many
runs confirm it, and its triage status (analysis/triage.py).
A platform change (the host's kernel, QEMU or accelerator) cuts a series and is listed too.

`--json` prints one JSON object on stdout, a stable shape (keys may be added, never removed;
NaN is null; /3: "ratio" is net of the host's load, "measured_ratio" is what /2 called "ratio"):

    {"schema": "orchestrate.history/3", "suite", "results_dir", "metric", "threshold",
     "runs": [{"run_id", "path", "host", "status", "started_at", "unreadable_lines"}],
     "change_points": [ChangePoint.as_json(): {"key", "host", "cell_id", "metric", "unit",
                       "params", "last_before", "at_run", "before", "after", "ratio",
                       "ratio_interval", "measured_ratio", "contradicted", "pvalue",
                       "runs_after", "confirmed", "regression", "status", "triage",
                       "alert"}],  (newest first)
     "platform_changes": [{"host", "last_before", "at_run", "before", "after"}],
     "alerts": N}

An alert is a confirmed change point the worse way for its unit (a time up, a rate down)
that nobody has acknowledged or marked invalid and that the measured medians do not contradict
(moved the other way by more than 5 %); the exit code is then 4.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.analysis import changepoints, triage
from orchestrator.analysis.changepoints import ChangePoint, PlatformChange
from orchestrator.analysis.stats import higher_is_worse
from orchestrator.analysis.summary import print_json
from orchestrator.errors import BadInput, ExitCode
from orchestrator.store import reader

SCHEMA = "orchestrate.history/3"


@dataclass(frozen=True)
class Step:
    """The old persistent-step record, still the type analysis/plots.py's `trend_plot` draws
    (its owner may drop both; history itself now reports ChangePoints)."""

    cell_id: str
    metric: str
    unit: str
    at_run: str
    before: float
    after: float

    @property
    def ratio(self) -> float:
        return self.after / self.before


def is_regression(step: Step) -> bool:
    """A step the worse way for its unit, as ChangePoint.regression decides (one rule:
    stats.higher_is_worse; tests/report/test_stats.py checks compare agrees)."""
    worse = higher_is_worse(step.unit)
    return worse is not None and (step.ratio > 1) == worse


@dataclass(frozen=True)
class History:
    runs: list[reader.RunTables]
    change_points: list[ChangePoint]  # newest first, triage applied
    platform_changes: list[PlatformChange]

    @property
    def alerts(self) -> list[ChangePoint]:
        return [c for c in self.change_points if c.alerts]


def suite_runs(root: Path, suite: str) -> list[reader.RunTables]:
    """Every readable run of the suite under root (a fleet's host directories included),
    oldest first (a run with a damaged manifest is skipped with a warning; unreadable journal
    lines are warned about)."""
    listed = [r for r in reader.list_runs(root) if r.get("suite_name") == suite]
    if not listed:
        raise BadInput(f"no runs of suite {suite!r} under {root.resolve()}",
                       hint="`orchestrate results` lists the runs; --results-dir DIR or "
                            "$ORCH_RESULTS says where they are")
    listed.sort(key=lambda r: (str(r.get("started_at", "")), r["path"].name))
    return [reader.load(r["path"]) for r in listed]


def history(root: Path, suite: str, metric: str | None = None,
            threshold: float = changepoints.MIN_MAGNITUDE) -> History:
    """The suite's change points under root, with the triage recorded there applied."""
    runs = suite_runs(root, suite)
    if metric:
        runs = [replace(t, trials=t.trials[t.trials["metric"] == metric]) for t in runs]
    found, platforms = changepoints.change_points(runs, min_magnitude=threshold)
    return History(runs, triage.apply(triage.load(root), found), platforms)


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("history", help="change points across runs of a suite, newest first")
    cmd.add_argument("suite", help="the suite name")
    cmd.add_argument("--results-dir", type=Path, default=None)
    cmd.add_argument("--metric", default=None, help="only this metric (e.g. fork_us)")
    changepoints.add_threshold_option(cmd)
    cmd.add_argument("--plot", type=Path, default=None,
                     help="write the trend of every cell (change points as ranges) as a PNG")
    cmd.add_argument("--json", action="store_true",
                     help="runs and change points as one JSON object "
                          "(shape: orchestrator/analysis/history.py)")
    cmd.set_defaults(func=cmd_history)


def cmd_history(args: argparse.Namespace) -> int:
    if not 0 <= args.threshold < 1:
        raise BadInput(f"--threshold {args.threshold}: a fraction in [0, 1)",
                       hint="e.g. --threshold 0.05 for 5%")
    root = args.results_dir or args.settings.results
    found = history(root, args.suite, args.metric, args.threshold)
    if args.json:
        print_json(history_json(args, root, found))
    else:
        print_history(found)
    if args.plot:
        from orchestrator.analysis.trend import trend_plot  # matplotlib only when drawing

        trend_plot(changepoints.run_values(found.runs), found.change_points,
                   found.platform_changes, args.plot)
    return ExitCode.REGRESSION if found.alerts else ExitCode.OK


def describe(cp: ChangePoint) -> str:
    """One line: when, which cell (by its parameters), how much, how sure, its status."""
    cell = " ".join(f"{k}={v}" for k, v in cp.params.items() if v is not None)
    kind = "regression" if cp.regression else "improvement"
    state = cp.state(f"unconfirmed: {cp.runs_after} of {changepoints.CONFIRM_RUNS} runs after")
    return (f"{cp.last_before} -> {cp.at_run} [{cp.host}] {cell}: {cp.metric} "
            f"{cp.magnitude()} {kind}, {state}, {cp.status}  key {cp.key}")


def print_history(found: History) -> None:
    for cp in found.change_points:
        print(describe(cp))
    for pc in found.platform_changes:
        print(f"{pc.last_before} -> {pc.at_run} [{pc.host}] platform changed: {pc.before} -> "
              f"{pc.after} (series are cut there)")
    print(f"{len(found.change_points)} change point(s), {len(found.alerts)} alert(s) over "
          f"{len(found.runs)} runs")


def history_json(args: argparse.Namespace, root: Path, found: History) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "suite": args.suite, "results_dir": str(root.resolve()),
        "metric": args.metric, "threshold": args.threshold,
        "runs": [{"run_id": t.manifest["run_id"], "path": str(t.path),
                  "host": (t.manifest.get("host") or {}).get("hostname"),
                  "status": t.manifest.get("status"), "started_at": t.manifest.get("started_at"),
                  "unreadable_lines": t.unreadable} for t in found.runs],
        "change_points": [cp.as_json() for cp in found.change_points],
        "platform_changes": [vars(pc) for pc in found.platform_changes],
        "alerts": len(found.alerts),
    }
