"""`orchestrate results`: list runs, summarise one, export it as CSV.

A run's status comes first: anything but `done` is said plainly on the summary's first line,
with the counts. Lines of the journal that could not be read are counted and listed by line
number; a run whose manifest is damaged is skipped from the list with one warning.

`--json` prints one JSON object on stdout; its shape is stable (new keys may be added, none
removed or changed; NaN is null):

the run list:
    {"schema": "orchestrate.results.runs/1", "results_dir": ABS_PATH,
     "runs": [{"name", "run_id", "path", "suite", "status", "host", "collected_from",
               "started_at", "ended_at", "git_rev", "outcomes": {OUTCOME: N},
               "planned_trials"}],                               (oldest first)
     "skipped": [{"path", "problem"}]}                           (damaged manifests)

one run:
    {"schema": "orchestrate.results.run/1", "run_id", "path", "suite", "status",
     "finished": bool, "host", "git_rev", "started_at", "ended_at",
     "trials": {"recorded": N, "planned": N|null, "outcomes": {OUTCOME: N}},
     "not_ok": [{"outcome", "cell_id", "paging_mode", "guest", "workload", "reason"}],
     "journal": {"unreadable": N, "lines": [{"line": N, "problem": TEXT}]},  (first 1000)
     "summary": [{"paging_mode", "accel", "guest", "workload", "params": {NAME: VALUE},
                  "metric", "unit", "n", "median", "min", "max"}],
     "events": [{"paging_mode", "side", "event", "median"}],
     "time": {"wall_s", "trials_s", "trials", "trial_median_s", "setup_s", "other_s",
              "efficiency"} | null}              (analysis/efficiency.py)

"trials" counts the attempt that counts of every trial, warm-ups included; "summary" only
measured trials (ok, not warm-ups).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.analysis import stats
from orchestrator.analysis.efficiency import budget_line, time_budget
from orchestrator.errors import ExitCode
from orchestrator.store import reader

KEY_COLUMNS = ["paging_mode", "accel", "guest", "workload", "metric", "unit"]
SHOWN_STATS = ["n", "median", "min", "max"]
OUTCOME_ORDER = ["ok", "failed", "error", "skipped"]
FINISHED = {"done", "done-with-errors", "ok"}  # "ok": older runs said so for done
# what a status other than `done` means, said on the summary's first line
STATUS_NOTES = {
    "done-with-errors": "FINISHED WITH ERRORS: some trials failed or could not be measured",
    "interrupted": "NOT FINISHED: stopped by Ctrl-C, SIGTERM or a deadline",
    "crashed": "NOT FINISHED: the orchestrator crashed",
    "error": "NOT FINISHED: the harness broke",
    "running": "NOT FINISHED: still running, or killed before it could record its end",
}
LIST_SCHEMA = "orchestrate.results.runs/1"
RUN_SCHEMA = "orchestrate.results.run/1"


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("results", help="list runs, or summarise one run")
    cmd.add_argument("run", nargs="?", help="a run directory, its name, or 'latest'")
    cmd.add_argument("--results-dir", type=Path, default=None,
                     help="the results root (default: ./results or $ORCH_RESULTS)")
    out = cmd.add_mutually_exclusive_group()
    out.add_argument("--csv", type=Path, metavar="DIR",
                     help="write trials.csv and events.csv of the run into DIR")
    out.add_argument("--json", action="store_true",
                     help="the run list, or the run's summary, as one JSON object "
                          "(shapes: orchestrator/analysis/summary.py)")
    cmd.add_argument("--kernel", metavar="RELEASE_OR_ID", default=None,
                     help="only rows of guests that booted this kernel: its `uname -r`, or "
                          "the first 4+ digits of its kernel id (the run list: runs that "
                          "booted it)")
    cmd.set_defaults(func=cmd_results)


def cmd_results(args: argparse.Namespace) -> int:
    root = args.results_dir or args.settings.results
    kernel = getattr(args, "kernel", None)
    if args.run is None:
        return list_command(root, as_json=args.json, kernel=kernel)
    if args.csv is not None:
        tables = reader.load(args.run, root)  # unreadable journal lines: warned on stderr
        tables = reader.only_kernel(tables, kernel) if kernel else tables
        args.csv.mkdir(parents=True, exist_ok=True)
        tables.trials.to_csv(args.csv / "trials.csv", index=False)
        tables.events.to_csv(args.csv / "events.csv", index=False)
        print(f"wrote {args.csv / 'trials.csv'} and {args.csv / 'events.csv'}")
        return ExitCode.OK
    if args.json:
        tables = reader.load(args.run, root)
        print_json(run_json(reader.only_kernel(tables, kernel) if kernel else tables))
        return ExitCode.OK
    tables = reader.load(args.run, root, quiet=True)  # print_summary prints them itself
    if kernel:
        tables = reader.only_kernel(tables, kernel)
        print(f"only the rows of guests that booted kernel {kernel} (--kernel); the counts "
              "below are theirs")
    print_summary(tables)
    return ExitCode.OK


def list_command(root: Path, *, as_json: bool, kernel: str | None = None) -> int:
    skipped: list[reader.SkippedRun] = []
    runs = reader.list_runs(root, skipped=skipped)  # one warning per skipped run
    if kernel:
        runs = [run for run in runs if reader.has_kernel(run, kernel)]
    if as_json:
        print_json(runs_json(root, runs, skipped))
    elif runs:
        print_runs(runs)
    else:
        print(no_runs_message(root, skipped))
    return ExitCode.OK


def no_runs_message(root: Path, skipped: list[reader.SkippedRun]) -> str:
    where = root.resolve()
    if not where.is_dir():
        found = f"no runs: {where} does not exist"
    elif skipped:
        found = f"no readable runs under {where} ({len(skipped)} skipped, see above)"
    else:
        found = f"no runs under {where}"
    return (f"{found} (hint: --results-dir DIR or $ORCH_RESULTS says where runs are; "
            "`orchestrate run` makes one)")


def print_json(data: dict[str, Any]) -> None:
    json.dump(reader.json_ready(data), sys.stdout, indent=1, allow_nan=False)
    print()


# ---- the run list --------------------------------------------------------------------------


def _name_and_host(run: dict[str, Any]) -> tuple[str, str]:
    host = str(run.get("host", {}).get("hostname", "?"))
    name = str(run["run_id"])
    if "collected_from" in run:  # a fleet root: the name `orchestrate results` resolves
        name = f"{run['collected_from']}/{run['path'].name}"
        if run["collected_from"] != host:
            host = f"{run['collected_from']} ({host})"
    return name, host


def print_runs(runs: list[dict[str, Any]]) -> None:
    print(f"{'run':45} {'host':12} {'status':16} outcomes")
    for run in runs:
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(run.get("outcomes", {}).items()))
        name, host = _name_and_host(run)
        print(f"{name:45} {host:12} {run.get('status', '?'):16} {outcomes}")


def runs_json(root: Path, runs: list[dict[str, Any]],
              skipped: list[reader.SkippedRun]) -> dict[str, Any]:
    listed = []
    for run in runs:
        name, _ = _name_and_host(run)
        listed.append({
            "name": name, "run_id": run["run_id"], "path": str(run["path"].resolve()),
            "suite": run["suite_name"], "status": run.get("status"),
            "host": run.get("host", {}).get("hostname"),
            "collected_from": run.get("collected_from"), "started_at": run.get("started_at"),
            "ended_at": run.get("ended_at"), "git_rev": run.get("git_rev"),
            "outcomes": run.get("outcomes", {}),
            "planned_trials": run.get("plan", {}).get("trials"),
        })
    return {"schema": LIST_SCHEMA, "results_dir": str(root.resolve()), "runs": listed,
            "skipped": [{"path": str(s.path.resolve()), "problem": s.problem}
                        for s in skipped]}


# ---- one run -------------------------------------------------------------------------------


def outcome_counts(trials: pd.DataFrame) -> dict[str, int]:
    """Trials (not rows) per outcome, in a fixed order."""
    counts = trials.drop_duplicates(["cell_id", "trial"])["outcome"].value_counts()
    known = [o for o in OUTCOME_ORDER if o in counts.index]
    return {str(o): int(counts[o]) for o in known + sorted(set(counts.index) - set(known))}


def status_line(manifest: dict[str, Any], counts: dict[str, int]) -> str:
    """The summary's first line: the status, what it means if not `done`, and the counts."""
    status = str(manifest.get("status", "unknown"))
    recorded = sum(counts.values())
    planned = manifest.get("plan", {}).get("trials")
    of = f"{recorded} of {planned} planned trials" if planned else f"{recorded} trials"
    listed = ", ".join(f"{n} {k}" for k, n in counts.items()) or "none"
    note = STATUS_NOTES.get(status, "" if status in FINISHED else "UNKNOWN STATUS")
    return f"status: {status}" + (f" - {note}" if note else "") + f"; {of} recorded: {listed}"


def status_hint(tables: reader.RunTables) -> str:
    status = tables.manifest.get("status")
    if status == "done-with-errors":
        return f"  re-run what failed: orchestrate run --rerun-failed {tables.path}"
    if status in FINISHED:
        return ""
    error = tables.manifest.get("error")
    because = f"  why: {error}\n" if error else ""
    return f"{because}  continue it: orchestrate run --resume {tables.path}"


def summary_table(trials: pd.DataFrame, manifest: dict[str, Any]) -> tuple[pd.DataFrame,
                                                                          list[str]]:
    """(median and range per point and metric, of measured trials only; the parameters it is
    keyed by): stats.summary, in the columns this verb has always shown."""
    params = stats.present_params(stats.measured(trials), manifest.get("param_columns", {}))
    table = stats.summary(trials, params)
    return table[[*KEY_COLUMNS[:4], *params, *KEY_COLUMNS[4:], *SHOWN_STATS]], params


def _not_ok(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["outcome"] != "ok"].drop_duplicates(["cell_id", "reason"])


def print_summary(tables: reader.RunTables) -> None:
    manifest, trials = tables.manifest, tables.trials
    print(status_line(manifest, outcome_counts(trials)))
    hint = status_hint(tables)
    if hint:
        print(hint)
    if tables.unreadable:
        print(tables.unreadable_note())
    print(f"run {manifest['run_id']}  suite {manifest['suite_name']}  "
          f"git {manifest.get('git_rev', '?')[:12]}")
    print(f"host {manifest.get('host', {}).get('hostname')}  "
          f"started {manifest.get('started_at')}  ended {manifest.get('ended_at')}")
    budget = time_budget(trials, manifest)
    if budget is not None:
        print(budget_line(budget))
    for _, row in _not_ok(trials).head(10).iterrows():
        print(f"  {row['outcome']}: {row['paging_mode']}/{row['guest']} {row['workload']}: "
              f"{row['reason']}")
    table, _ = summary_table(trials, manifest)
    if not table.empty:
        with pd.option_context("display.max_rows", 200, "display.width", 160):
            print(table.to_string(index=False))
    if not tables.events.empty:
        events = tables.events.groupby(["paging_mode", "side", "event"])["count"].median()
        print("\nevents per trial (median):")
        print(events.to_string())


def run_json(tables: reader.RunTables) -> dict[str, Any]:
    manifest, trials = tables.manifest, tables.trials
    counts = outcome_counts(trials)
    return {
        "schema": RUN_SCHEMA, "run_id": manifest["run_id"], "path": str(tables.path),
        "suite": manifest["suite_name"], "status": manifest.get("status"),
        "finished": manifest.get("status") in FINISHED,
        "host": manifest.get("host", {}).get("hostname"), "git_rev": manifest.get("git_rev"),
        "started_at": manifest.get("started_at"), "ended_at": manifest.get("ended_at"),
        "trials": {"recorded": sum(counts.values()),
                   "planned": manifest.get("plan", {}).get("trials"), "outcomes": counts},
        "not_ok": _not_ok(trials)[["outcome", "cell_id", "paging_mode", "guest", "workload",
                                   "reason"]].to_dict("records"),
        "journal": {"unreadable": tables.unreadable,
                    "lines": [{"line": p.line, "problem": p.what} for p in tables.problems]},
        "summary": _summary_json(trials, manifest),
        "events": _events_json(tables.events),
        "time": time_budget(trials, manifest),
    }


def _summary_json(trials: pd.DataFrame, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    table, params = summary_table(trials, manifest)
    rows = []
    for row in table.to_dict("records"):
        values = {p: row.pop(p) for p in params}
        rows.append({**{k: row[k] for k in KEY_COLUMNS[:4]}, "params": values,
                     **{k: row[k] for k in [*KEY_COLUMNS[4:], *SHOWN_STATS]}})
    return rows


def _events_json(events: pd.DataFrame) -> list[dict[str, Any]]:
    if events.empty:
        return []
    medians = events.groupby(["paging_mode", "side", "event"])["count"].median().reset_index()
    return [{"paging_mode": row["paging_mode"], "side": row["side"], "event": row["event"],
             "median": row["count"]} for row in medians.to_dict("records")]
