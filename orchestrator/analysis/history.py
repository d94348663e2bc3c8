"""History of one suite across nightly runs: a trend per cell, and steps that persist.

A step is called only if it is significant (Mann-Whitney on the trials before vs after),
larger than the threshold and than the host's own night-to-night noise (the median absolute
deviation of nightly medians before the step, learned per host), held by at least
`MIN_AFTER` nights, and separates the ranges: after trimming the most extreme night on each
side, every night after lies beyond every night before (LKP's range separation). A one-night
spike fails the last two conditions.

`--json` prints one JSON object on stdout, a stable shape (keys may be added, never removed;
NaN is null):

    {"schema": "orchestrate.history/1", "suite", "results_dir", "metric", "threshold",
     "runs": [{"run_id", "path", "status", "started_at", "unreadable_lines"}],  (oldest first)
     "steps": [{"cell_id", "metric", "unit", "at_run", "before", "after", "ratio",
                "regression"}],
     "regressions": N}

A step is a "regression" when it went the worse way for its unit (stats.higher_is_worse: a
time up, a rate down; counts never); the exit code is then 4.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from orchestrator.analysis.stats import higher_is_worse, measured, present_params
from orchestrator.analysis.summary import print_json
from orchestrator.errors import BadInput, ExitCode
from orchestrator.store import reader, rundir

MIN_BEFORE, MIN_AFTER = 3, 3
ALPHA = 0.01
SCHEMA = "orchestrate.history/1"


@dataclass(frozen=True)
class Step:
    cell_id: str
    metric: str
    unit: str
    at_run: str
    before: float
    after: float

    @property
    def ratio(self) -> float:
        return self.after / self.before


def nightly(trials: pd.DataFrame) -> pd.Series:
    """Per cell, metric (with its unit) and run: the trials' values, in run order."""
    data = measured(trials).sort_values("started_at")
    return data.groupby(["cell_id", "metric", "unit", "run_id"], sort=False)["value"].apply(list)


def find_step(runs: list[str], values: list[list[float]], threshold: float) -> int | None:
    """The index of the first night of a persistent step, or None."""
    medians = [float(np.median(v)) for v in values]
    best: tuple[float, int] | None = None
    for k in range(MIN_BEFORE, len(runs) - MIN_AFTER + 1):
        score = _step_score(medians[:k], medians[k:], values[:k], values[k:], threshold)
        if score is not None and (best is None or score < best[0]):
            best = (score, k)
    return None if best is None else best[1]


def _step_score(before: list[float], after: list[float], vb: list[list[float]],
                va: list[list[float]], threshold: float) -> float | None:
    b, a = float(np.median(before)), float(np.median(after))
    noise = float(np.median(np.abs(np.array(before) - b))) * 1.4826
    if abs(a - b) <= max(threshold * abs(b), 3 * noise):
        return None
    trim_b, trim_a = sorted(before)[1:-1] or before, sorted(after)[1:-1] or after
    separated = min(trim_a) > max(trim_b) if a > b else max(trim_a) < min(trim_b)
    if not separated:
        return None
    from scipy.stats import mannwhitneyu  # slow to import: only when a test is needed

    p = float(mannwhitneyu(sum(vb, []), sum(va, []), alternative="two-sided").pvalue)
    return p if p < ALPHA else None


def steps(trials: pd.DataFrame, threshold: float = 0.05) -> list[Step]:
    found = []
    series = nightly(trials)
    for key, per_run in series.groupby(level=[0, 1, 2], sort=False):
        cell, metric, unit = cast(tuple[str, str, str], key)
        runs = [str(index[3]) for index in per_run.index]
        k = find_step(runs, list(per_run.to_numpy()), threshold)
        if k is not None:
            meds = [float(np.median(v)) for v in per_run.to_numpy()]
            found.append(Step(str(cell), str(metric), str(unit), runs[k],
                              float(np.median(meds[:k])), float(np.median(meds[k:]))))
    return found


def suite_runs(root: Path, suite: str) -> list[reader.RunTables]:
    """Every readable run of the suite under root, oldest first (a run with a damaged
    manifest is skipped with a warning; unreadable journal lines are warned about)."""
    paths = [r["path"] for r in reader.list_runs(root) if r.get("suite_name") == suite]
    if not paths:
        raise BadInput(f"no runs of suite {suite!r} under {root.resolve()}",
                       hint="`orchestrate results` lists the runs; --results-dir DIR or "
                            "$ORCH_RESULTS says where they are")
    return [reader.load(p) for p in paths]


def suite_history(root: Path, suite: str) -> pd.DataFrame:
    return pd.concat([t.trials for t in suite_runs(root, suite)], ignore_index=True)


def is_regression(step: Step) -> bool:
    """A step the worse way for its unit (a time up, a rate down); a count's step is
    reported, never called a regression."""
    worse = higher_is_worse(step.unit)
    return worse is not None and (step.ratio > 1) == worse


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("history", help="trend and persistent steps across runs of a suite")
    cmd.add_argument("suite", help="the suite name")
    cmd.add_argument("--results-dir", type=Path, default=None)
    cmd.add_argument("--metric", default=None, help="only this metric (e.g. fork_us)")
    cmd.add_argument("--threshold", type=float, default=0.05)
    cmd.add_argument("--plot", type=Path, default=None, help="write the trend as a PNG")
    cmd.add_argument("--json", action="store_true",
                     help="runs and steps as one JSON object "
                          "(shape: orchestrator/analysis/history.py)")
    cmd.set_defaults(func=cmd_history)


def cmd_history(args: argparse.Namespace) -> int:
    root = args.results_dir or rundir.default_root()
    runs = suite_runs(root, args.suite)
    trials = pd.concat([t.trials for t in runs], ignore_index=True)
    if args.metric:
        trials = trials[trials["metric"] == args.metric]
    found = steps(trials, args.threshold)
    if args.json:
        print_json(history_json(args, root, runs, found))
    else:
        for step in found:
            print(f"step at {step.at_run}: {step.metric} cell {step.cell_id} "
                  f"{step.before:.4g} -> {step.after:.4g} (x{step.ratio:.3f})")
        print(f"{len(found)} persistent step(s) over {trials['run_id'].nunique()} runs")
    if args.plot:
        from orchestrator.analysis.plots import trend_plot  # matplotlib only when drawing

        params = present_params(trials, sorted({p for t in runs
                                                for p in t.manifest.get("param_columns", {})}))
        trend_plot(trials, params, found, args.plot)
    return ExitCode.REGRESSION if any(is_regression(s) for s in found) else ExitCode.OK


def history_json(args: argparse.Namespace, root: Path, runs: list[reader.RunTables],
                 found: list[Step]) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "suite": args.suite, "results_dir": str(root.resolve()),
        "metric": args.metric, "threshold": args.threshold,
        "runs": [{"run_id": t.manifest["run_id"], "path": str(t.path),
                  "status": t.manifest.get("status"), "started_at": t.manifest.get("started_at"),
                  "unreadable_lines": t.unreadable} for t in runs],
        "steps": [{**asdict(s), "ratio": s.ratio, "regression": is_regression(s)}
                  for s in found],
        "regressions": sum(is_regression(s) for s in found),
    }
