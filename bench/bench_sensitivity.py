"""How small a slowdown does `compare` catch on this host, at a suite's trial counts? (#15)

Given a results directory holding several runs of one suite on this host (for example four or
more back-to-back runs of it), the last two are an A/A pair: compared as they are, every flag
is a false alarm. Then, for each factor and each timed cell in turn, the new run's values of
that one cell are multiplied by the factor (in a copy of its journal) and compared again: the
fraction of cells whose injected slowdown is flagged, and how many other cells were flagged
beside it, are printed per factor. No pass/fail: a figure for the closing note and for users
deciding on trial counts.

Run: .venv/bin/python bench/bench_sensitivity.py RESULTS_DIR [--factors 1.05,1.1,1.2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from orchestrator.analysis import noise
from orchestrator.analysis.compare import compare_tables
from orchestrator.store import reader, rundir

TIMES = ("ns", "us", "ms", "s")


def runs_of(root: Path) -> list[Path]:
    return [Path(r["path"]) for r in reader.list_runs(root)]


def slowed(run: Path, where: Path, cell: str, metric: str, factor: float) -> Path:
    """A copy of `run` in `where` whose `cell`'s `metric` is `factor` times its value in every
    trial (tables dropped: readers build them from the journal). tests/workloads/test_aa.py
    injects its slowdown with this too."""
    copy = where / f"{run.name}-x{factor}-{cell}-{metric}"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.parquet", "captures", "logs"))
    journal = copy / "trials.jsonl"
    out = []
    for line in journal.read_text().splitlines():
        record = json.loads(line)
        if record["cell_id"] == cell:
            record["metrics"] = [[n, v * factor if n == metric else v, u]
                                 for n, v, u in record["metrics"]]
        out.append(json.dumps(record))
    journal.write_text("\n".join(out) + "\n")
    rundir.RunDir(copy).update_manifest(run_id=copy.name)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--factors", default="1.05,1.1,1.2,1.5")
    args = parser.parse_args()
    runs = runs_of(args.results)
    base, new = reader.load(runs[-2]), reader.load(runs[-1])
    params = sorted(set(base.manifest.get("param_columns", {})))
    history = noise.host_history(args.results, base.manifest, {new.manifest["run_id"]})
    aa = compare_tables(base.trials, new.trials, params, 0.05, history)
    timed = [c for c in aa if c.unit in TIMES and c.verdict in ("unchanged", "regression",
                                                                  "improvement")]
    false_alarms = [c for c in aa if c.verdict in ("regression", "improvement", "changed")]
    print(f"{len(runs)} runs of {base.manifest['suite_name']}; history: "
          f"{len(noise.earlier_runs(args.results, base.manifest, {new.manifest['run_id']}))} "
          f"runs; A/A pair {runs[-2].name} -> {runs[-1].name}: {len(false_alarms)} of {len(aa)} "
          f"cell metrics flagged ({len(timed)} timed cells tested)")
    with tempfile.TemporaryDirectory() as scratch:
        for factor in (float(f) for f in args.factors.split(",")):
            caught, others = 0, 0
            for cell in timed:
                copy = slowed(runs[-1], Path(scratch), cell.cell_id, cell.metric, factor)
                judged = compare_tables(base.trials, reader.load(copy, quiet=True).trials,
                                        params, 0.05, history)
                hit = [c for c in judged if c.verdict == "regression"]
                caught += any((c.cell_id, c.metric) == (cell.cell_id, cell.metric) for c in hit)
                others += sum((c.cell_id, c.metric) != (cell.cell_id, cell.metric) for c in hit)
                shutil.rmtree(copy)
            print(f"  x{factor:<5} caught in {caught} of {len(timed)} cells "
                  f"({caught / max(len(timed), 1):.0%}); other cells flagged beside it: {others}")


if __name__ == "__main__":
    main()
