"""A run from start to end: run directory, manifest, executor, tables, status, exit code.

Fresh runs, `--resume`, `--rerun-failed` and `--replay` all come through here; they differ
only in which directory they write to and which trials they select.

Before it starts (holding the run lock, taken by the caller), a run recovers the runs that died
before it (recovery.py: the host's index, and this results root), then records everything it
changes and starts in its own ledger (ledger.py), from before its manifest says `running`.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.errors import BadInput, ExitCode, HarnessError, OrchestratorError
from orchestrator.host import provenance, stability
from orchestrator.host.host_prep import prepared_host
from orchestrator.model import Outcome
from orchestrator.run import recovery
from orchestrator.run.execute import Executor, Progress, Selection, Tracer, no_tracing
from orchestrator.run.targets import Backend
from orchestrator.settings import Settings, current
from orchestrator.store import ledger, rundir, tables
from orchestrator.store.journal import Journal, latest_attempts
from orchestrator.suite.loader import DEFAULT_BUDGET, Budget, LoadedSuite, parse_suite
from orchestrator.suite.plan import Plan, make_plan

log = logging.getLogger(__name__)

DONE_WITH_ERRORS = "done-with-errors"

BackendFactory = Callable[[LoadedSuite, Path], Backend]
FactsProvider = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class RunOutcome:
    run_dir: Path
    counts: dict[str, int]  # trials per outcome (latest attempts)
    status: str

    @property
    def exit_code(self) -> ExitCode:
        if self.counts.get(Outcome.ERROR.value):
            return ExitCode.HARNESS_BROKE
        if self.counts.get(Outcome.FAILED.value):
            return ExitCode.TRIALS_FAILED
        return ExitCode.OK


@dataclass
class RunRequest:
    loaded: LoadedSuite
    results_root: Path
    backend_factory: BackendFactory
    progress: Progress
    host_facts: FactsProvider
    tracer: Tracer = no_tracing
    argv: tuple[str, ...] = tuple(sys.argv)
    settings: Settings = field(default_factory=current)  # the edge's: state dir, lock, URI


def start_run(req: RunRequest) -> RunOutcome:
    # Resolved once, here: libvirtd, QEMU, perf and trace-cmd open paths from their own working
    # directories, so every path derived from the run directory must be absolute.
    root = req.results_root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    recover_dead_runs(root, req.settings)
    run_dir = rundir.new_run_dir(root, req.loaded.suite.name)
    plan = make_plan(req.loaded.suite)
    with ledger.recording(run_dir, req.settings.state_dir):
        rundir.RunDir(run_dir).create_manifest(_manifest(req, run_dir, plan))
        rundir.update_latest(root, run_dir)
        return _execute(req, run_dir, plan, Selection())


def resume_run(req: RunRequest, run_dir: Path, *, only_failed: bool) -> RunOutcome:
    """Continue a run: skip what is recorded, or (only_failed) re-run what failed or errored."""
    run_dir = run_dir.resolve()
    recover_dead_runs(run_dir.parent, req.settings)  # this very run, too, if it was killed
    plan = make_plan(req.loaded.suite)
    last = latest_attempts(run_dir)
    attempts = {key: rec["attempt"] for key, rec in last.items()}
    if only_failed:
        bad = {k for k, r in last.items() if r["outcome"] in (Outcome.FAILED, Outcome.ERROR)}
        selection = Selection(only=bad, attempts=attempts, recorded=last)
    else:
        selection = Selection(skip=set(last), attempts=attempts, recorded=last)
    resumed = {"at": _now(), "argv": list(req.argv), "only_failed": only_failed}
    with ledger.recording(run_dir, req.settings.state_dir):
        rundir.RunDir(run_dir).update_manifest(
            lambda manifest: manifest.setdefault("resumed", []).append(resumed),
            status="running")
        return _execute(req, run_dir, plan, selection)


def recover_dead_runs(root: Path, settings: Settings | None = None) -> recovery.Survey:
    """Put right what runs killed before this one left (the caller holds the run lock)."""
    return recovery.recover([root], by=f"orchestrate run (pid {os.getpid()})",
                            say=lambda line: log.warning("%s", line), settings=settings)


def suite_of_run(run_dir: Path, budget: Budget = DEFAULT_BUDGET) -> LoadedSuite:
    """The suite exactly as the run used it (stored verbatim), for resume and replay."""
    manifest = rundir.read_manifest(run_dir)
    text = manifest.get("suite_text")
    if not isinstance(text, str):
        raise BadInput(f"{run_dir}: its manifest holds no suite text",
                       hint="this run was written by another tool")
    return parse_suite(text, Path(manifest.get("suite_path", "suite.yaml")), budget=budget)


def _execute(req: RunRequest, run_dir: Path, plan: Plan, selection: Selection) -> RunOutcome:
    status = "error"
    try:
        with (
            Journal(run_dir) as journal,
            _closing(req.progress),
            prepared_host(req.loaded.suite.host_prep) as conditions,
        ):
            _record_conditions(run_dir, conditions)
            backend = req.backend_factory(req.loaded, run_dir)
            Executor(req.loaded.suite, plan, backend, journal, req.progress, selection,
                     req.tracer).run()
        status = finished_status(outcome_counts(run_dir))
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except OrchestratorError:
        raise
    except Exception as exc:  # a bug: keep the traceback with the run, tell the user one line
        saved = rundir.RunDir(run_dir).traceback
        saved.write_text(traceback.format_exc())
        raise HarnessError(f"internal error: {exc!r}", hint=f"traceback in {saved}") from exc
    finally:
        tables_error = _finish(run_dir, status)
    if tables_error:
        raise HarnessError(f"every trial is recorded, but the Parquet tables could not be "
                           f"written: {tables_error}",
                           hint=f"the journal {rundir.RunDir(run_dir).journal} holds every trial; "
                                "`orchestrate results` reads it directly")
    counts = outcome_counts(run_dir)
    return RunOutcome(run_dir, counts, status)


@contextmanager
def _closing(progress: Progress) -> Iterator[None]:
    try:
        yield
    finally:
        progress.close()


def _finish(run_dir: Path, status: str) -> str:
    """Status, then tables, on every exit path: measured trials are never lost, and a run
    whose tables cannot be written (a full disk, a value pyarrow refuses) still says how it
    ended. Returns why the tables failed, or ""."""
    run = rundir.RunDir(run_dir)
    run.update_manifest(status=status, ended_at=_now(), outcomes=outcome_counts(run_dir))
    try:
        tables.finalize_tables(run_dir)
    except Exception as exc:  # noqa: BLE001 - whatever it was, the status above stands
        why = f"{type(exc).__name__}: {exc}"
        log.error("run %s: writing its tables failed (%s); the journal keeps every trial",
                  run_dir.name, why)
        run.update_manifest(tables_error=why)
        return why
    return ""


def _record_conditions(run_dir: Path, conditions: dict[str, Any]) -> None:
    rundir.RunDir(run_dir).update_manifest(host_conditions=conditions)


def finished_status(counts: dict[str, int]) -> str:
    """`done` only when no trial failed or errored: a run is never called done when the
    harness could not measure some of it (the counts say how many)."""
    if counts.get(Outcome.ERROR.value) or counts.get(Outcome.FAILED.value):
        return DONE_WITH_ERRORS
    return "done"


def outcome_counts(run_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rec in latest_attempts(run_dir).values():
        counts[rec["outcome"]] = counts.get(rec["outcome"], 0) + 1
    return counts


def _manifest(req: RunRequest, run_dir: Path, plan: Plan) -> dict[str, Any]:
    loaded = req.loaded
    return {
        "run_id": run_dir.name,
        "suite_name": loaded.suite.name,
        "suite_path": str(loaded.path),
        "suite_hash": loaded.sha256,
        "suite_text": loaded.text,
        "suite": loaded.resolved(),
        "argv": list(req.argv),
        "git_rev": provenance.git_revision(),
        "tools": provenance.tool_versions(),
        "host": req.host_facts(),
        "host_stability": stability.recorded(),  # before any guest of ours adds to the load
        "started_at": _now(),
        "status": "running",
        "plan": plan.counts(),
        "param_columns": param_columns(plan),
    }


def param_columns(plan: Plan) -> dict[str, str]:
    """Each workload parameter's column type; an int/float mix widens to float."""
    kinds: dict[str, str] = {}
    for point in plan.points:
        for name, value in point.params:
            kind = type(value).__name__
            if kinds.get(name) in ("int", "float") and kind in ("int", "float"):
                kind = "float" if "float" in (kinds[name], kind) else "int"
            elif name in kinds and kinds[name] != kind:
                kind = "str"
            kinds[name] = kind
    return kinds


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
