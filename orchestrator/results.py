"""Reading results from Python: the public face of `orchestrator.store.reader`.

    from orchestrator import results
    run = results.load("results/latest")        # RunTables(path, manifest, trials, events)
    run.trials.query("metric == 'fork_us' and not warmup and outcome == 'ok'")

Only the reading side is here, and it never changes a run directory; the writing side (the
journal, the tables) belongs to a run and lives in `orchestrator.store`.
"""

from orchestrator.model import Outcome
from orchestrator.store.journal import JournalProblem, describe_problems
from orchestrator.store.reader import RunTables, SkippedRun, list_runs, load, resolve_run
from orchestrator.store.rundir import (
    EVENTS,
    JOURNAL,
    MANIFEST,
    TRIALS,
    default_root,
    read_manifest,
)

__all__ = [
    "EVENTS", "JOURNAL", "MANIFEST", "TRIALS", "JournalProblem", "Outcome", "RunTables",
    "SkippedRun", "default_root", "describe_problems", "list_runs", "load", "read_manifest",
    "resolve_run",
]
