"""`orchestrate compare BASE NEW`: per cell, did the new run get slower, with statistics?

A change is flagged only when it is both significant (the bootstrap CI of the ratio of medians
excludes 1 and a Mann-Whitney test agrees) and larger than the threshold (default 5%). The
direction of "worse" comes from the unit: times are worse higher, rates worse lower, counts
are reported but never called a regression.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.analysis.stats import BOOTSTRAP, SEED, higher_is_worse, measured
from orchestrator.errors import BadInput, ExitCode
from orchestrator.store import rundir

ALPHA = 0.05
MIN_TRIALS = 3


@dataclass(frozen=True)
class Change:
    cell_id: str
    paging_mode: str
    guest: str
    workload: str
    metric: str
    unit: str
    params: str
    base_median: float
    new_median: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str  # regression | improvement | unchanged | changed (counts) | too few trials


def ratio_ci(base: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    rng = np.random.default_rng(SEED)
    b = np.median(rng.choice(base, size=(BOOTSTRAP, len(base))), axis=1)
    n = np.median(rng.choice(new, size=(BOOTSTRAP, len(new))), axis=1)
    ratios = n / b
    return float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def _verdict(ratio: float, lo: float, hi: float, p: float, unit: str, threshold: float) -> str:
    significant = (lo > 1 or hi < 1) and p < ALPHA and abs(ratio - 1) > threshold
    if not significant:
        return "unchanged"
    worse = higher_is_worse(unit)
    if worse is None:
        return "changed"
    return "regression" if (ratio > 1) == worse else "improvement"


def compare_tables(base: pd.DataFrame, new: pd.DataFrame, params: list[str],
                   threshold: float = 0.05) -> list[Change]:
    b, n = measured(base), measured(new)
    changes = []
    for (cell, metric), new_rows in n.groupby(["cell_id", "metric"]):
        base_rows = b[(b["cell_id"] == cell) & (b["metric"] == metric)]
        if base_rows.empty:
            continue
        changes.append(_change(base_rows, new_rows, params, threshold))
    return changes


def _change(base_rows: pd.DataFrame, new_rows: pd.DataFrame, params: list[str],
            threshold: float) -> Change:
    first = new_rows.iloc[0]
    bv, nv = base_rows["value"].to_numpy(float), new_rows["value"].to_numpy(float)
    bm, nm = float(np.median(bv)), float(np.median(nv))
    ratio = nm / bm if bm else float("nan")
    described = " ".join(f"{p}={first[p]}" for p in params if pd.notna(first.get(p)))
    if min(len(bv), len(nv)) < MIN_TRIALS or not bm:
        verdict, lo, hi, p = "too few trials", float("nan"), float("nan"), float("nan")
    else:
        lo, hi = ratio_ci(bv, nv)
        from scipy.stats import mannwhitneyu  # slow to import: only when comparing

        p = float(mannwhitneyu(bv, nv, alternative="two-sided").pvalue)
        verdict = _verdict(ratio, lo, hi, p, str(first["unit"]), threshold)
    return Change(str(first["cell_id"]), str(first["paging_mode"]), str(first["guest"]),
                  str(first["workload"]), str(first["metric"]), str(first["unit"]), described,
                  bm, nm, ratio, lo, hi, p, verdict)


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("compare", help="flag significant changes between two runs")
    cmd.add_argument("base", help="the baseline run (directory, name or 'latest')")
    cmd.add_argument("new", help="the run to judge")
    cmd.add_argument("--threshold", type=float, default=0.05,
                     help="smallest relative change worth flagging (default 0.05 = 5%%)")
    cmd.add_argument("--json", action="store_true", help="machine-readable output")
    cmd.add_argument("--results-dir", default=None, help="where run names are looked up")
    cmd.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    if not 0 <= args.threshold < 10:
        raise BadInput(f"--threshold {args.threshold} is not a fraction",
                       hint="5%% is --threshold 0.05")
    root = rundir.default_root() if args.results_dir is None else args.results_dir
    base, new = rundir.load(args.base, root), rundir.load(args.new, root)
    params = sorted(set(base.manifest.get("param_columns", {}))
                    | set(new.manifest.get("param_columns", {})))
    changes = compare_tables(base.trials, new.trials, params, args.threshold)
    regressions = [c for c in changes if c.verdict == "regression"]
    if args.json:
        json.dump({"base": base.manifest["run_id"], "new": new.manifest["run_id"],
                   "threshold": args.threshold, "regressions": len(regressions),
                   "unreadable_lines": {"base": base.unreadable, "new": new.unreadable},
                   "changes": [asdict(c) for c in changes]}, sys.stdout, indent=1)
        print()
    else:
        _print(changes, base.manifest["run_id"], new.manifest["run_id"])
    return ExitCode.REGRESSION if regressions else ExitCode.OK


def _print(changes: list[Change], base: str, new: str) -> None:
    print(f"compare {base} -> {new}: {len(changes)} cells")
    for c in changes:
        if c.verdict in ("unchanged",):
            continue
        print(f"  {c.verdict:12} {c.paging_mode}/{c.guest} {c.workload} {c.params} {c.metric}: "
              f"{c.base_median:.4g} -> {c.new_median:.4g} {c.unit} (x{c.ratio:.3f}, 95% CI "
              f"{c.ci_low:.3f}..{c.ci_high:.3f}, p={c.p_value:.3g})")
    flagged = sum(c.verdict == "regression" for c in changes)
    print(f"{flagged} regression(s)")
