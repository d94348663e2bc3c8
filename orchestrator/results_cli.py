"""`orchestrate results`: list runs, summarise one, export it as CSV."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator import results
from orchestrator.errors import ExitCode

KEY_COLUMNS = ["paging_mode", "accel", "guest", "workload", "metric", "unit"]


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("results", help="list runs, or summarise one run")
    cmd.add_argument("run", nargs="?", help="a run directory, its name, or 'latest'")
    cmd.add_argument("--results-dir", type=Path, default=None,
                     help="the results root (default: ./results or $ORCH_RESULTS)")
    cmd.add_argument("--csv", type=Path, metavar="DIR",
                     help="write trials.csv and events.csv of the run into DIR")
    cmd.set_defaults(func=cmd_results)


def cmd_results(args: argparse.Namespace) -> int:
    root = args.results_dir or results.default_root()
    if args.run is None:
        print_runs(results.list_runs(root))
        return ExitCode.OK
    tables = results.load(args.run, root)
    if args.csv is not None:
        args.csv.mkdir(parents=True, exist_ok=True)
        tables.trials.to_csv(args.csv / "trials.csv", index=False)
        tables.events.to_csv(args.csv / "events.csv", index=False)
        print(f"wrote {args.csv / 'trials.csv'} and {args.csv / 'events.csv'}")
        return ExitCode.OK
    print_summary(tables)
    return ExitCode.OK


def print_runs(runs: list[dict[str, Any]]) -> None:
    if not runs:
        print("no runs yet")
        return
    print(f"{'run':45} {'host':12} {'status':11} outcomes")
    for run in runs:
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(run.get("outcomes", {}).items()))
        host = run.get("host", {}).get("hostname", "?")
        name = run["run_id"]
        if "collected_from" in run:  # a fleet root: the name `orchestrate results` resolves
            name = f"{run['collected_from']}/{run['path'].name}"
            if run["collected_from"] != host:
                host = f"{run['collected_from']} ({host})"
        print(f"{name:45} {host:12} {run.get('status', '?'):11} {outcomes}")


def summary_table(trials: pd.DataFrame, param_columns: list[str]) -> pd.DataFrame:
    """Median and spread per point and metric, measured (non-warm-up, ok) trials only."""
    ok = trials[(trials["outcome"] == "ok") & ~trials["warmup"] & (trials["metric"] != "")]
    keys = KEY_COLUMNS[:4] + [c for c in param_columns if ok[c].notna().any()] + KEY_COLUMNS[4:]
    grouped = ok.groupby(keys, dropna=False, sort=True)["value"]
    return grouped.agg(n="count", median="median", min="min", max="max").reset_index()


def print_summary(tables: results.RunTables) -> None:
    manifest, trials = tables.manifest, tables.trials
    print(f"run {manifest['run_id']}  suite {manifest['suite_name']}  "
          f"status {manifest.get('status')}  git {manifest.get('git_rev', '?')[:12]}")
    print(f"host {manifest.get('host', {}).get('hostname')}  "
          f"started {manifest.get('started_at')}  ended {manifest.get('ended_at')}")
    outcomes = trials.drop_duplicates(["cell_id", "trial"])["outcome"].value_counts()
    print("trials: " + ", ".join(f"{n} {k}" for k, n in outcomes.items()))
    problems = trials[trials["outcome"] != "ok"].drop_duplicates(["cell_id", "reason"])
    for _, row in problems.head(10).iterrows():
        print(f"  {row['outcome']}: {row['paging_mode']}/{row['guest']} {row['workload']}: "
              f"{row['reason']}")
    table = summary_table(trials, list(manifest.get("param_columns", {})))
    if not table.empty:
        with pd.option_context("display.max_rows", 200, "display.width", 160):
            print(table.to_string(index=False))
    if not tables.events.empty:
        events = tables.events.groupby(["paging_mode", "side", "event"])["count"].median()
        print("\nevents per trial (median):")
        print(events.to_string())
