"""The run directory: manifest, an append-only trial journal, and tidy Parquet tables.

Durability: each finished trial is one JSON line written with a single O_APPEND write, so a
crash loses at most the trial in flight and never leaves half a record that a reader trusts.
The Parquet tables are derived from the journal when a run ends (or on load, if it did not),
streaming in batches so memory stays flat however many trials a run has.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import BadInput

JOURNAL = "trials.jsonl"
MANIFEST = "manifest.json"
TRIALS = "trials.parquet"
EVENTS = "events.parquet"
BATCH = 20_000

# Columns every trial row has; workload parameters become further columns of their own.
FIXED_COLUMNS: dict[str, pa.DataType] = {
    "run_id": pa.string(), "host": pa.string(), "git_rev": pa.string(), "suite": pa.string(),
    "cell_id": pa.string(), "paging_requested": pa.string(), "paging_mode": pa.string(),
    "accel": pa.string(), "guest": pa.string(), "workload": pa.string(), "kind": pa.string(),
    "trial": pa.int32(), "warmup": pa.bool_(), "attempt": pa.int32(), "metric": pa.string(),
    "value": pa.float64(), "unit": pa.string(), "outcome": pa.string(), "reason": pa.string(),
    "started_at": pa.timestamp("us", tz="UTC"), "duration_s": pa.float64(),
}
EVENT_COLUMNS: dict[str, pa.DataType] = {
    "run_id": pa.string(), "cell_id": pa.string(), "trial": pa.int32(), "attempt": pa.int32(),
    "paging_mode": pa.string(), "guest": pa.string(), "workload": pa.string(),
    "side": pa.string(), "event": pa.string(), "count": pa.float64(), "available": pa.bool_(),
}
_PARAM_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string(),
}


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"  # the workload ran and reported a bad result
    ERROR = "error"  # boot, SSH, tooling or timeout: the harness could not measure
    SKIPPED = "skipped"  # not runnable here, with the reason


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: str


@dataclass(frozen=True)
class EventCount:
    side: str  # host | guest
    event: str
    count: float | None  # None: the event does not exist there (never reported as 0)
    available: bool = True


@dataclass(frozen=True)
class TrialRecord:
    cell_id: str
    trial: int
    warmup: bool
    paging_requested: str
    paging_mode: str  # as verified on the host when the trial ran
    accel: str  # native | kvm | tcg | nested-tcg
    guest: str
    workload: str
    kind: str
    params: dict[str, Any]
    outcome: Outcome
    reason: str = ""
    metrics: tuple[Metric, ...] = ()
    events: tuple[EventCount, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    duration_s: float = 0.0
    attempt: int = 1

    def to_json(self) -> str:
        body = {
            "cell_id": self.cell_id, "trial": self.trial, "warmup": self.warmup,
            "paging_requested": self.paging_requested, "paging_mode": self.paging_mode,
            "accel": self.accel, "guest": self.guest, "workload": self.workload,
            "kind": self.kind, "params": self.params, "outcome": self.outcome.value,
            "reason": self.reason, "attempt": self.attempt,
            "metrics": [[m.name, m.value, m.unit] for m in self.metrics],
            "events": [[e.side, e.event, e.count, e.available] for e in self.events],
            "info": self.info, "started_at": self.started_at, "duration_s": self.duration_s,
        }
        return json.dumps(body, separators=(",", ":"), allow_nan=True)


# ---- writing -------------------------------------------------------------------------------


def new_run_dir(root: Path, suite_name: str, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{suite_name}-{uuid.uuid4().hex[:6]}"
    (path / "logs").mkdir(parents=True)
    return path


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def update_latest(root: Path, run_dir: Path) -> None:
    """Point root/latest at run_dir atomically (a rename never leaves the link missing)."""
    tmp = root / f".latest-{uuid.uuid4().hex[:6]}"
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, root / "latest")


class Journal:
    """Append-only trial log; each record is one write() of one line."""

    def __init__(self, run_dir: Path, *, fsync: bool = False) -> None:
        self.path = run_dir / JOURNAL
        self._fsync = fsync
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: TrialRecord) -> None:
        os.write(self._fd, (record.to_json() + "\n").encode())
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(run_dir: Path) -> Iterator[dict[str, Any]]:
    """Records in write order; a torn last line (a crash mid-write) is ignored."""
    path = run_dir / JOURNAL
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def latest_attempts(run_dir: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The last attempt of every trial recorded so far (what resume and rerun look at)."""
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in read_journal(run_dir):
        key = (rec["cell_id"], rec["trial"])
        if key not in last or rec["attempt"] >= last[key]["attempt"]:
            rec.pop("info", None)
            last[key] = rec
    return last


# ---- tables ----------------------------------------------------------------------------------


def param_types(manifest: dict[str, Any]) -> dict[str, pa.DataType]:
    return {name: _PARAM_TYPES[kind] for name, kind in manifest.get("param_columns", {}).items()}


def finalize_tables(run_dir: Path) -> None:
    """Journal -> trials.parquet and events.parquet, streamed in batches."""
    manifest = read_manifest(run_dir)
    keep = {k: r["attempt"] for k, r in latest_attempts(run_dir).items()}
    params = param_types(manifest)
    trial_schema = pa.schema([*FIXED_COLUMNS.items(), *params.items()])
    event_schema = pa.schema(list(EVENT_COLUMNS.items()))
    base = _run_constants(manifest)
    with (
        pq.ParquetWriter(run_dir / f".{TRIALS}.tmp", trial_schema) as trials_out,
        pq.ParquetWriter(run_dir / f".{EVENTS}.tmp", event_schema) as events_out,
    ):
        for batch in _batches(_current(run_dir, keep), BATCH):
            trials_out.write_table(_trial_table(batch, base, trial_schema, params))
            events_out.write_table(_event_table(batch, base, event_schema))
    os.replace(run_dir / f".{TRIALS}.tmp", run_dir / TRIALS)
    os.replace(run_dir / f".{EVENTS}.tmp", run_dir / EVENTS)


def _current(run_dir: Path, keep: dict[tuple[str, int], int]) -> Iterator[dict[str, Any]]:
    for rec in read_journal(run_dir):
        if keep.get((rec["cell_id"], rec["trial"])) == rec["attempt"]:
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


def _run_constants(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": manifest["run_id"], "host": manifest.get("host", {}).get("hostname", ""),
        "git_rev": manifest.get("git_rev", ""), "suite": manifest.get("suite_name", ""),
    }


def _trial_rows(rec: dict[str, Any], base: dict[str, Any],
                params: dict[str, pa.DataType]) -> Iterator[dict[str, Any]]:
    common = {
        **base, **{k: rec[k] for k in ("cell_id", "paging_requested", "paging_mode", "accel",
                                        "guest", "workload", "kind", "trial", "warmup",
                                        "attempt", "outcome", "reason", "duration_s")},
        "started_at": datetime.fromtimestamp(rec["started_at"], UTC),
        **{name: rec["params"].get(name) for name in params},
    }
    metrics = rec["metrics"] or [["", None, ""]]  # a trial without metrics still has a row
    for name, value, unit in metrics:
        yield {**common, "metric": name, "value": value, "unit": unit}


def _trial_table(batch: list[dict[str, Any]], base: dict[str, Any], schema: pa.Schema,
                 params: dict[str, pa.DataType]) -> pa.Table:
    rows = [row for rec in batch for row in _trial_rows(rec, base, params)]
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


# ---- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTables:
    path: Path
    manifest: dict[str, Any]
    trials: pd.DataFrame
    events: pd.DataFrame


def mark_unfinished(run_dir: Path, status: str, **facts: Any) -> None:
    """A run that ended before it could write its own status (killed, or its host died):
    say so in its manifest; a run that did write one keeps it."""
    manifest = read_manifest(run_dir)
    if manifest.get("status") == "running":
        manifest.update(status=status, **facts)
        write_json_atomic(run_dir / MANIFEST, manifest)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{run_dir}: not a run directory (no {MANIFEST})",
                       hint="`orchestrate results` lists the runs") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{run_dir / MANIFEST}: corrupt ({exc.msg})",
                       hint="the run is damaged; its trials.jsonl still holds the trials",
                       ) from None
    return data


def resolve_run(run: str | Path, root: Path | None = None) -> Path:
    """A run by path, by directory name under root, or 'latest'."""
    candidates = [Path(run)]
    if root is not None:
        candidates.append(root / str(run))
    for path in candidates:
        if (path / MANIFEST).exists():
            return path.resolve()
    raise BadInput(f"{run}: no such run", hint="`orchestrate results` lists the runs")


def load(run: str | Path, root: Path | None = None) -> RunTables:
    """The run's tables as pandas DataFrames (from Parquet, or the journal if not finalized)."""
    run_dir = resolve_run(run, root)
    manifest = read_manifest(run_dir)
    if not _parquet_fresh(run_dir):
        finalize_tables(run_dir)
    trials = pq.read_table(run_dir / TRIALS).to_pandas()
    events = pq.read_table(run_dir / EVENTS).to_pandas()
    return RunTables(run_dir, manifest, trials, events)


def _parquet_fresh(run_dir: Path) -> bool:
    journal, trials = run_dir / JOURNAL, run_dir / TRIALS
    if not trials.exists() or not (run_dir / EVENTS).exists():
        return False
    return not journal.exists() or trials.stat().st_mtime_ns >= journal.stat().st_mtime_ns


def list_runs(root: Path, *, hosts: bool = True) -> list[dict[str, Any]]:
    """Every run under root, oldest first.

    A fleet root collected from several runners (`<root>/<host>/<run_id>/`) is listed too:
    with `hosts`, a directory that is not a run itself is searched one level down, and its
    runs carry the directory's name as "collected_from".
    """
    runs = []
    for child in _subdirs(root):
        if (child / MANIFEST).exists():
            runs.append({"path": child, **read_manifest(child)})
        elif hosts:
            runs.extend({"path": run, "collected_from": child.name, **read_manifest(run)}
                        for run in _subdirs(child) if (run / MANIFEST).exists())
    return sorted(runs, key=lambda m: str(m.get("started_at", "")))


def _subdirs(path: Path) -> list[Path]:
    """Real subdirectories (never the `latest` symlink), in name order."""
    if not path.is_dir():
        return []
    return [c for c in sorted(path.iterdir()) if c.is_dir() and not c.is_symlink()]


def default_root() -> Path:
    """Where runs go and are looked up: $ORCH_RESULTS, else ./results."""
    return Path(os.environ.get("ORCH_RESULTS", "results"))


def hostname() -> str:
    return socket.gethostname()
