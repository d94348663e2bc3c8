"""The tidy tables of a run, built from its journal: trials.parquet and events.parquet.

One row per (trial, metric) and one per (trial, event), for the attempt of each trial that
counts (its last). The writer of a run streams them to Parquet in batches when the run ends,
so memory stays flat however many trials a run has; readers that find them missing or older
than the journal build the same tables in memory (`build_tables`), writing nothing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.store.journal import (
    KEPT_PROBLEMS,
    JournalProblem,
    describe_problems,
    latest_attempts,
    read_journal,
)
from orchestrator.store.rundir import Manifest, RunDir, read_manifest

BATCH = 20_000
_PROBLEMS_KEY = b"orchestrator.journal_problems"

log = logging.getLogger(__name__)

# Columns every trial row has; workload parameters become further columns of their own.
FIXED_COLUMNS: dict[str, pa.DataType] = {
    "run_id": pa.string(), "host": pa.string(), "git_rev": pa.string(), "suite": pa.string(),
    "cell_id": pa.string(), "paging_requested": pa.string(), "paging_mode": pa.string(),
    "accel": pa.string(), "guest": pa.string(), "workload": pa.string(), "kind": pa.string(),
    "trial": pa.int32(), "warmup": pa.bool_(), "attempt": pa.int32(), "metric": pa.string(),
    "value": pa.float64(), "unit": pa.string(), "outcome": pa.string(), "reason": pa.string(),
    "started_at": pa.timestamp("us", tz="UTC"), "duration_s": pa.float64(),
    # the guest's kernel, from the manifest (kernel_columns): "" for native rows
    "guest_kernel": pa.string(), "kernel_id": pa.string(), "kernel_config": pa.string(),
    "kernel_cmdline": pa.string(),
}
KERNEL_COLUMNS = ("guest_kernel", "kernel_id", "kernel_config", "kernel_cmdline")
EVENT_COLUMNS: dict[str, pa.DataType] = {
    "run_id": pa.string(), "cell_id": pa.string(), "trial": pa.int32(), "attempt": pa.int32(),
    "paging_mode": pa.string(), "guest": pa.string(), "workload": pa.string(),
    "side": pa.string(), "event": pa.string(), "count": pa.float64(), "available": pa.bool_(),
}
# the kinds a manifest's param_columns may name, and their column types
PARAM_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string(),
}


def _param_types(manifest: Manifest) -> dict[str, pa.DataType]:
    return {name: PARAM_TYPES[kind] for name, kind in manifest.get("param_columns", {}).items()}


def finalize_tables(run_dir: Path) -> list[JournalProblem]:
    """Journal -> trials.parquet and events.parquet, streamed in batches (for the writer of a
    run: readers use `reader.load`, which never writes). Returns the journal's unreadable
    lines, which are also logged and kept in the tables' metadata."""
    run = RunDir(run_dir)
    problems: list[JournalProblem] = []
    plan = _plan_tables(run_dir, read_manifest(run_dir), problems)
    trials_tmp, events_tmp = _staging(run.trials), _staging(run.events)
    with (
        pq.ParquetWriter(trials_tmp, plan.trial_schema) as trials_out,
        pq.ParquetWriter(events_tmp, plan.event_schema) as events_out,
    ):
        for trials, events in _table_batches(run_dir, plan):
            trials_out.write_table(trials)
            events_out.write_table(events)
    os.replace(trials_tmp, run.trials)
    os.replace(events_tmp, run.events)
    if problems:
        log.warning("%s: %s", run.journal, describe_problems(len(problems), problems))
    return problems


def build_tables(run_dir: Path, manifest: Manifest
                 ) -> tuple[pa.Table, pa.Table, list[JournalProblem]]:
    """The same tables as finalize_tables writes, in memory (nothing on disk changes)."""
    problems: list[JournalProblem] = []
    plan = _plan_tables(run_dir, manifest, problems)
    trials, events = [plan.trial_schema.empty_table()], [plan.event_schema.empty_table()]
    for trial_batch, event_batch in _table_batches(run_dir, plan):
        trials.append(trial_batch)
        events.append(event_batch)
    return pa.concat_tables(trials), pa.concat_tables(events), problems


def stored_problems(table: pa.Table) -> tuple[int | None, list[JournalProblem]]:
    """The journal's unreadable lines as finalize_tables kept them in a table's metadata
    (None: tables written before their metadata said)."""
    try:
        stored = json.loads((table.schema.metadata or {})[_PROBLEMS_KEY])
        return int(stored["count"]), [JournalProblem(int(n), str(w)) for n, w in stored["lines"]]
    except (KeyError, TypeError, ValueError):
        return None, []


def _staging(path: Path) -> Path:
    """Where a table is written before it replaces the old one in a single rename."""
    return path.with_name(f".{path.name}.tmp")


@dataclass(frozen=True)
class _Tables:
    """What turning a journal into tables needs, from a first pass over it."""

    trial_schema: pa.Schema
    event_schema: pa.Schema
    params: dict[str, pa.DataType]
    kinds: dict[str, str]
    base: dict[str, Any]
    keep: dict[tuple[str, int], int]  # (cell, trial) -> the attempt that counts
    kernels: dict[tuple[str, str], dict[str, str]]  # (paging_mode, guest) -> kernel columns


def _plan_tables(run_dir: Path, manifest: Manifest, problems: list[JournalProblem]) -> _Tables:
    kinds = dict(manifest.get("param_columns", {}))
    keep = {k: r["attempt"] for k, r in latest_attempts(run_dir, problems, kinds).items()}
    params = _param_types(manifest)
    meta = {_PROBLEMS_KEY: _problems_metadata(problems)}
    return _Tables(pa.schema([*FIXED_COLUMNS.items(), *params.items()], metadata=meta),
                   pa.schema(list(EVENT_COLUMNS.items()), metadata=meta), params, kinds,
                   _run_constants(manifest), keep, kernel_columns(manifest))


def _table_batches(run_dir: Path, plan: _Tables) -> Iterator[tuple[pa.Table, pa.Table]]:
    """(trials, events) tables of the counting attempts, a batch of records at a time."""
    for batch in _batches(_current(run_dir, plan), BATCH):
        yield (_trial_table(batch, plan, plan.trial_schema, plan.params),
               _event_table(batch, plan.base, plan.event_schema))


def _problems_metadata(problems: list[JournalProblem]) -> bytes:
    kept = [[p.line, p.what] for p in problems[:KEPT_PROBLEMS]]
    return json.dumps({"count": len(problems), "lines": kept}).encode()


def _current(run_dir: Path, plan: _Tables) -> Iterator[dict[str, Any]]:
    for rec in read_journal(run_dir, None, plan.kinds):
        if plan.keep.get((rec["cell_id"], rec["trial"])) == rec["attempt"]:
            yield rec


def _batches(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _run_constants(manifest: Manifest) -> dict[str, Any]:
    return {
        "run_id": manifest["run_id"], "host": manifest.get("host", {}).get("hostname", ""),
        "git_rev": manifest.get("git_rev", ""), "suite": manifest.get("suite_name", ""),
    }


def kernel_columns(manifest: Manifest) -> dict[tuple[str, str], dict[str, str]]:
    """(paging_mode, guest) -> the kernel columns of its rows: what the guest booted (`uname
    -r`, its command line) as its boot recorded it, and the image and config hashes of the
    kernel the suite chose (the manifest's `kernels`) or of the image's own."""
    chosen = manifest.get("kernels")
    chosen = chosen if isinstance(chosen, dict) else {}
    found: dict[tuple[str, str], dict[str, str]] = {}
    guests = manifest.get("guests")
    for key, facts in (guests if isinstance(guests, dict) else {}).items():
        mode, _, guest = str(key).partition("/")
        if not isinstance(facts, dict):
            continue
        asked = chosen.get(guest)
        asked = asked if isinstance(asked, dict) else {}
        found[(mode, guest)] = {
            "guest_kernel": str(facts.get("kernel_release") or ""),
            "kernel_id": str(facts.get("kernel_id") or asked.get("kernel_id") or ""),
            "kernel_config": str(asked.get("config_hash") or ""),
            "kernel_cmdline": str(facts.get("kernel_cmdline") or ""),
        }
    for guest, asked in chosen.items():  # rows of a guest that never booted
        if isinstance(asked, dict):
            found.setdefault(("", str(guest)), {
                "guest_kernel": "", "kernel_id": str(asked.get("kernel_id") or ""),
                "kernel_config": str(asked.get("config_hash") or ""), "kernel_cmdline": ""})
    return found


def _kernel_of(rec: dict[str, Any], kernels: dict[tuple[str, str], dict[str, str]]
               ) -> dict[str, str]:
    return (kernels.get((rec["paging_mode"], rec["guest"]))
            or kernels.get(("", rec["guest"]))
            or dict.fromkeys(KERNEL_COLUMNS, ""))


def _trial_rows(rec: dict[str, Any], plan: _Tables,
                params: dict[str, pa.DataType]) -> Iterator[dict[str, Any]]:
    common = {
        **plan.base, **_kernel_of(rec, plan.kernels),
        **{k: rec[k] for k in ("cell_id", "paging_requested", "paging_mode", "accel", "guest",
                               "workload", "kind", "trial", "warmup", "attempt", "outcome",
                               "reason", "duration_s")},
        "started_at": datetime.fromtimestamp(rec["started_at"], UTC),
        **{name: rec["params"].get(name) for name in params},
    }
    metrics = rec["metrics"] or [["", None, ""]]  # a trial without metrics still has a row
    for name, value, unit in metrics:
        yield {**common, "metric": name, "value": value, "unit": unit}


def _trial_table(batch: list[dict[str, Any]], plan: _Tables, schema: pa.Schema,
                 params: dict[str, pa.DataType]) -> pa.Table:
    rows = [row for rec in batch for row in _trial_rows(rec, plan, params)]
    return pa.Table.from_pylist(rows, schema=schema)


def _event_table(batch: list[dict[str, Any]], base: dict[str, Any], schema: pa.Schema) -> pa.Table:
    rows = [
        {"run_id": base["run_id"], "cell_id": rec["cell_id"], "trial": rec["trial"],
         "attempt": rec["attempt"], "paging_mode": rec["paging_mode"], "guest": rec["guest"],
         "workload": rec["workload"], "side": side, "event": event, "count": count,
         "available": available}
        for rec in batch for side, event, count, available in rec["events"]
    ]
    return pa.Table.from_pylist(rows, schema=schema)
