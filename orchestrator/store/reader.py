"""Reading runs, for analysis and for pandas users: find them, check them, load their tables.

Read-only: nothing here writes into a run directory. `load` reads the Parquet tables, or builds
the same tables in memory from the journal when they are missing or older than it (a run still
going, or one killed before it wrote them); it never repairs a torn journal nor writes tables.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import BadInput
from orchestrator.store.journal import (
    KEPT_PROBLEMS,
    KIND_NAMES,
    JournalProblem,
    describe_problems,
    is_kind,
    read_journal,
)
from orchestrator.store.rundir import DAMAGED, Manifest, RunDir, read_manifest
from orchestrator.store.tables import PARAM_TYPES, build_tables, stored_problems

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunTables:
    path: Path
    manifest: Manifest
    trials: pd.DataFrame
    events: pd.DataFrame
    unreadable: int = 0  # journal lines skipped as unreadable
    problems: tuple[JournalProblem, ...] = ()  # those lines (at most KEPT_PROBLEMS of them)

    def unreadable_note(self) -> str:
        """'journal: 2 unreadable line(s) skipped: 17 (bad JSON), ...', or '' if none."""
        if not self.unreadable:
            return ""
        return "journal: " + describe_problems(self.unreadable, self.problems)


# the manifest fields readers use, and their JSON types; run_id and suite_name are required
_MANIFEST_FIELDS = {"run_id": "str", "suite_name": "str", "status": "str", "git_rev": "str",
                    "host": "dict", "tools": "dict", "outcomes": "dict", "plan": "dict",
                    "param_columns": "dict"}


def manifest_problem(data: Manifest) -> str:
    """What makes a manifest unusable to readers ('' if nothing)."""
    for key in ("run_id", "suite_name"):
        if key not in data:
            return f"no {key!r} (an old or foreign manifest)"
    for key, kind in _MANIFEST_FIELDS.items():
        if key in data and not is_kind(data[key], kind):
            return f"{key!r} is not {KIND_NAMES[kind]}"
    if not is_kind(data.get("host", {}).get("hostname", ""), "str"):
        return "'host.hostname' is not a string"
    if not all(is_kind(n, "int") for n in data.get("outcomes", {}).values()):
        return "'outcomes' holds a count that is not an integer"
    bad = [k for k, v in data.get("param_columns", {}).items() if v not in PARAM_TYPES]
    return f"'param_columns' has an unknown type for {bad[0]!r}" if bad else ""


def read_run_manifest(run_dir: Path) -> Manifest:
    """The manifest of a run to read, checked: a damaged one is a one-line BadInput."""
    data = read_manifest(run_dir)
    problem = manifest_problem(data)
    if problem:
        raise BadInput(f"{RunDir(run_dir).manifest}: {problem}", hint=DAMAGED)
    return data


def resolve_run(run: str | Path, root: str | Path | None = None) -> Path:
    """A run by path, by directory name under root, or 'latest'."""
    candidates = [Path(run)]
    if root is not None:
        candidates.append(Path(root) / str(run))
    for path in candidates:
        if RunDir(path).is_run():
            return path.resolve()
    raise BadInput(f"{run}: no such run", hint="`orchestrate results` lists the runs")


def load(run: str | Path, root: str | Path | None = None, *, quiet: bool = False
         ) -> RunTables:
    """The run's tables as pandas DataFrames: from Parquet, or built in memory from the
    journal when the Parquet files are missing or older than it. Never writes anything.

    Unreadable journal lines are counted in the result and, unless `quiet`, logged once.
    """
    run_dir = resolve_run(run, root)
    manifest = read_run_manifest(run_dir)
    tables = _from_parquet(run_dir, manifest) if _parquet_fresh(RunDir(run_dir)) else None
    if tables is None:
        trials, events, problems = build_tables(run_dir, manifest)
        tables = RunTables(run_dir, manifest, trials.to_pandas(), events.to_pandas(),
                           len(problems), tuple(problems[:KEPT_PROBLEMS]))
    if tables.unreadable and not quiet:
        log.warning("%s: %s", RunDir(run_dir).journal,
                    describe_problems(tables.unreadable, tables.problems))
    return tables


def _from_parquet(run_dir: Path, manifest: Manifest) -> RunTables | None:
    run = RunDir(run_dir)
    try:
        trials, events = pq.read_table(run.trials), pq.read_table(run.events)
    except (OSError, pa.ArrowException) as exc:
        log.warning("%s: unreadable (%s); reading the journal instead", run.trials, exc)
        return None
    count, problems = stored_problems(trials)
    if count is None:  # tables written before their metadata said: look at the journal
        found: list[JournalProblem] = []
        for _ in read_journal(run_dir, found, manifest.get("param_columns", {})):
            pass
        count, problems = len(found), found[:KEPT_PROBLEMS]
    return RunTables(run_dir, manifest, trials.to_pandas(), events.to_pandas(), count,
                     tuple(problems))


def _parquet_fresh(run: RunDir) -> bool:
    if not run.trials.exists() or not run.events.exists():
        return False
    return not run.journal.exists() or \
        run.trials.stat().st_mtime_ns >= run.journal.stat().st_mtime_ns


@dataclass(frozen=True)
class SkippedRun:
    """A run directory whose manifest readers cannot use."""

    path: Path
    problem: str  # one line, naming the manifest


def list_runs(root: Path, *, hosts: bool = True,
              skipped: list[SkippedRun] | None = None) -> list[dict[str, Any]]:
    """Every readable run under root, oldest first: its manifest plus "path".

    A fleet root collected from several runners (`<root>/<host>/<run_id>/`) is listed too:
    with `hosts`, a directory that is not a run itself is searched one level down, and its
    runs carry the directory's name as "collected_from". A run whose manifest is damaged or
    not ours is skipped with one warning (and added to `skipped`): it never hides the others.
    """
    runs: list[dict[str, Any]] = []
    for child in _subdirs(root):
        if RunDir(child).is_run():
            _add_run(child, None, runs, skipped)
        elif hosts:
            for run in _subdirs(child):
                if RunDir(run).is_run():
                    _add_run(run, child.name, runs, skipped)
    return sorted(runs, key=lambda m: str(m.get("started_at", "")))


def _add_run(path: Path, host: str | None, runs: list[dict[str, Any]],
             skipped: list[SkippedRun] | None) -> None:
    try:
        manifest = read_run_manifest(path.absolute())
    except BadInput as exc:  # the message names the manifest and what is wrong with it
        log.warning("skipped a damaged run: %s", exc.message)
        if skipped is not None:
            skipped.append(SkippedRun(path, exc.message))
        return
    entry = {**manifest, "path": path}
    if host is not None:
        entry["collected_from"] = host
    runs.append(entry)


def _subdirs(path: Path) -> list[Path]:
    """Real subdirectories (never the `latest` symlink), in name order."""
    if not path.is_dir():
        return []
    try:
        children = sorted(path.iterdir())
    except OSError as exc:
        log.warning("skipped %s: %s", path, exc.strerror)
        return []
    return [c for c in children if c.is_dir() and not c.is_symlink()]


def json_ready(value: Any) -> Any:
    """Plain JSON values: NaN and infinities become null, numpy scalars Python ones,
    paths strings (for the --json outputs, which must parse anywhere)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()  # a numpy scalar
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def run_kernels(manifest: Manifest) -> dict[str, str]:
    """The guest kernels a run booted, from its manifest: release (`uname -r`) -> kernel id
    ("" where the run predates kernel ids)."""
    found: dict[str, str] = {}
    guests = manifest.get("guests")
    for facts in (guests.values() if isinstance(guests, dict) else []):
        if isinstance(facts, dict) and facts.get("kernel_release"):
            release = str(facts["kernel_release"])
            found[release] = found.get(release) or str(facts.get("kernel_id") or "")
    return found


def has_kernel(manifest: Manifest, kernel: str) -> bool:
    """Did the run boot `kernel`: a release (`uname -r`) or the start of a kernel id."""
    return any(_kernel_matches(kernel, release, kid)
               for release, kid in run_kernels(manifest).items())


def _kernel_matches(kernel: str, release: str, kernel_id: str) -> bool:
    return kernel == release or (len(kernel) >= 4 and kernel_id.startswith(kernel))


def only_kernel(tables: RunTables, kernel: str) -> RunTables:
    """The run's rows of guests that booted `kernel` (a release, or an id's first 4+ digits),
    events too; BadInput naming the run's kernels if none did."""
    trials = tables.trials
    if "guest_kernel" in trials.columns:
        mask = (trials["guest_kernel"] == kernel) | (
            trials["kernel_id"].astype(str).str.startswith(kernel) & (len(kernel) >= 4))
    else:  # tables written before the kernel columns
        mask = pd.Series(False, index=trials.index)
    if not mask.any():
        known = ", ".join(f"{r} ({k or 'no id'})"
                          for r, k in run_kernels(tables.manifest).items())
        raise BadInput(f"{tables.path.name}: no rows of guest kernel {kernel!r}",
                       hint=f"this run's guest kernels: {known or 'none recorded'}")
    kept = trials[mask]
    cells = set(zip(kept["cell_id"], kept["trial"], strict=True))
    events = tables.events
    if not events.empty:
        events = events[[(c, t) in cells for c, t in zip(events["cell_id"], events["trial"],
                                                         strict=True)]]
    return RunTables(tables.path, tables.manifest, kept.reset_index(drop=True),
                     events.reset_index(drop=True), tables.unreadable, tables.problems)
