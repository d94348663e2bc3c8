"""The run directory: manifest, an append-only trial journal, and tidy Parquet tables.

Durability: each finished trial is one JSON line written with a single O_APPEND write, so a
crash loses at most the trial in flight and never leaves half a record that a reader trusts.
A writer that opens a journal whose last line was cut short (a crash or power loss mid-write)
first moves that fragment aside into trials.jsonl.torn, so the next record never joins it.

Readers never change a run directory. Every line they cannot use (bad JSON, not an object,
missing or ill-typed keys, a torn last line) is reported with its line number and counted,
never fatal. The Parquet tables are written from the journal when a run ends (streaming in
batches, so memory stays flat however many trials a run has); `load` reads them, or builds the
same tables in memory from the journal when they are missing or older than it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import BadInput
from orchestrator.settings import current

JOURNAL = "trials.jsonl"
TORN = "trials.jsonl.torn"  # fragments of torn last lines, moved aside by the writer
MANIFEST = "manifest.json"
TRIALS = "trials.parquet"
EVENTS = "events.parquet"
BATCH = 20_000
KEPT_PROBLEMS = 1000  # unreadable lines kept in a listing (their count is always exact)
_PROBLEMS_KEY = b"orchestrator.journal_problems"
_TAIL_CHUNK = 1 << 16

log = logging.getLogger(__name__)

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
    """Append-only trial log; each record is one write() of one line.

    Opening it repairs a torn tail first (see repair_torn_tail): a record appended after a
    fragment would otherwise be glued onto it and lost with it.
    """

    def __init__(self, run_dir: Path, *, fsync: bool = False) -> None:
        self.path = run_dir / JOURNAL
        self._fsync = fsync
        repair_torn_tail(self.path)
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


def repair_torn_tail(path: Path) -> None:
    """For writers only: end the journal at its last complete line before appending.

    A last line without its newline is a write cut short. If it still holds a whole valid
    record, only the newline is added; otherwise the fragment is appended to trials.jsonl.torn
    (kept, never deleted) and the journal is truncated to its last complete line, both fsync'd.
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        cut = _torn_tail_start(fd, size)
        if cut is not None:
            _repair(fd, path, os.pread(fd, size - cut, cut), cut)
    finally:
        os.close(fd)


def _torn_tail_start(fd: int, size: int) -> int | None:
    """Where the unterminated last line starts, or None if the file ends in a newline."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return None
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _repair(fd: int, path: Path, fragment: bytes, cut: int) -> None:
    if parse_line(fragment + b"\n")[0] is not None:
        os.pwrite(fd, b"\n", cut + len(fragment))
        os.fsync(fd)
        log.warning("%s: its last record had lost its newline (a write cut short); "
                    "the record is whole and kept, the newline added", path)
        return
    aside = path.with_name(TORN)
    with aside.open("ab") as fh:
        fh.write(fragment + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(path.parent)
    os.ftruncate(fd, cut)
    os.fsync(fd)
    log.warning("%s: its last line was torn (%d bytes without a newline: a write cut short); "
                "moved the fragment to %s and truncated the journal to its last complete line",
                path, len(fragment), aside)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- reading the journal -----------------------------------------------------------------------


@dataclass(frozen=True)
class JournalProblem:
    """One journal line a reader could not use, and why."""

    line: int  # 1-based
    what: str

    def __str__(self) -> str:
        return f"{self.line} ({self.what})"


@dataclass(frozen=True)
class JournalScan:
    records: list[dict[str, Any]]  # the readable records, in write order
    problems: list[JournalProblem]  # every unreadable line


def describe_problems(count: int, problems: Sequence[JournalProblem], shown: int = 10) -> str:
    """'2 unreadable line(s) skipped: 17 (bad JSON), 30 (missing key 'trial')'."""
    listed = ", ".join(str(p) for p in problems[:shown])
    more = count - min(shown, len(problems))
    return f"{count} unreadable line(s) skipped: {listed}" + (f", and {more} more" if more else "")


# JSON types by the exact Python type json.loads gives (a bool is never a number)
_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "number": (int, float),
    "bool": (bool,), "dict": (dict,), "list": (list,),
}
_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "number": "a number",
          "bool": "true or false", "dict": "an object", "list": "a list"}
# every key a journal record must have, and its JSON type
_REQUIRED: dict[str, str] = {
    "cell_id": "str", "trial": "int", "warmup": "bool", "paging_requested": "str",
    "paging_mode": "str", "accel": "str", "guest": "str", "workload": "str", "kind": "str",
    "params": "dict", "outcome": "str", "metrics": "list", "started_at": "number",
    "duration_s": "number",
}
# keys with a natural default when absent
_OPTIONAL: dict[str, tuple[str, Callable[[], Any]]] = {
    "reason": ("str", str), "attempt": ("int", lambda: 1), "events": ("list", list),
    "info": ("dict", dict),
}
_TYPE_CHECKS = tuple((key, _KINDS[kind], kind) for key, kind in _REQUIRED.items())
_OUTCOMES = frozenset(o.value for o in Outcome)
_MISSING = object()
_INT32, _INT64 = 2**31, 2**63
_EXACT = 2**53  # the largest integer a float64 column holds exactly
_LAST_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z


def is_kind(value: object, kind: str) -> bool:
    """Is a decoded JSON value of this kind, and does it fit the column it goes into?
    (a bool is never a number; an integer fits int64, or float64 exactly for numbers)"""
    if type(value) is int:
        if kind == "int":
            return -_INT64 <= value < _INT64
        return kind in ("number", "float") and -_EXACT <= value <= _EXACT
    return type(value) in _KINDS[kind]


def _number_or_null(value: object) -> bool:
    return value is None or type(value) is float or is_kind(value, "number")


def parse_line(raw: bytes, params: Mapping[str, str] | None = None
               ) -> tuple[dict[str, Any] | None, str]:
    """One journal line: (the record, with defaults filled in, "") or (None, what is wrong)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except (ValueError, RecursionError):
        return None, _undecodable(raw)
    problem = check_record(data, params or {})
    if problem:
        return None, problem
    for key, (_, default) in _OPTIONAL.items():
        if key not in data:
            data[key] = default()
    return data, ""


def _undecodable(raw: bytes) -> str:
    if not raw.endswith(b"\n"):
        return "torn last line: a write cut short"
    return "blank line" if not raw.strip() else "bad JSON"


def check_record(data: object, params: Mapping[str, str]) -> str:
    """What is wrong with one decoded journal record ('' if nothing); params: the manifest's
    parameter columns and their kinds."""
    if type(data) is not dict:
        return "not a JSON object"
    for key, types, kind in _TYPE_CHECKS:  # the hot loop of every reader: kept plain
        value = data.get(key, _MISSING)
        if type(value) not in types:
            return f"missing key {key!r}" if value is _MISSING else \
                f"{key!r} is not {_NAMES[kind]}"
    for key, (kind, _) in _OPTIONAL.items():
        if key in data and type(data[key]) not in _KINDS[kind]:
            return f"{key!r} is not {_NAMES[kind]}"
    return _check_values(data) or _check_entries(data) or _check_params(data["params"], params)


def _check_values(data: dict[str, Any]) -> str:
    if data["outcome"] not in _OUTCOMES:
        return f"unknown outcome {data['outcome']!r}"
    if not 0 <= data["trial"] < _INT32:
        return f"trial {data['trial']} out of range"
    if not 1 <= data.get("attempt", 1) < _INT32:
        return f"attempt {data['attempt']} out of range"
    started = data["started_at"]
    if not (0 <= started <= _LAST_TIMESTAMP):  # NaN fails this too
        return f"started_at {started} is not a time"
    if not is_kind(data["duration_s"], "number"):
        return f"duration_s {data['duration_s']} out of range"
    return ""


def _check_entries(data: dict[str, Any]) -> str:
    for index, m in enumerate(data["metrics"]):
        if not (type(m) is list and len(m) == 3 and type(m[0]) is str and type(m[2]) is str
                and _number_or_null(m[1])):
            return f"metrics entry {index} is not [name, value, unit]"
    for index, e in enumerate(data.get("events", ())):
        if not (type(e) is list and len(e) == 4 and type(e[0]) is str and type(e[1]) is str
                and _number_or_null(e[2]) and type(e[3]) is bool):
            return f"events entry {index} is not [side, event, count, available]"
    return ""


def _check_params(values: dict[str, Any], params: Mapping[str, str]) -> str:
    for name, kind in params.items():
        value = values.get(name)
        if value is not None and not is_kind(value, kind):
            return f"param {name!r} is not {_NAMES[kind]}"
    return ""


def read_journal(run_dir: Path, problems: list[JournalProblem] | None = None,
                 params: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Readable records in write order; every other line is added to `problems` (if given)
    with its line number. Never changes the journal."""
    path = run_dir / JOURNAL
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    with fh:
        for number, raw in enumerate(fh, 1):
            record, what = parse_line(raw, params)
            if record is not None:
                yield record
            elif problems is not None:
                problems.append(JournalProblem(number, what))


def scan_journal(run_dir: Path, params: Mapping[str, str] | None = None) -> JournalScan:
    """Every readable record and every unreadable line (numbered) of a run's journal."""
    problems: list[JournalProblem] = []
    records = list(read_journal(run_dir, problems, params))
    return JournalScan(records, problems)


def latest_attempts(run_dir: Path, problems: list[JournalProblem] | None = None,
                    params: Mapping[str, str] | None = None,
                    ) -> dict[tuple[str, int], dict[str, Any]]:
    """The last attempt of every trial recorded so far (what resume and rerun look at)."""
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in read_journal(run_dir, problems, params):
        key = (rec["cell_id"], rec["trial"])
        if key not in last or rec["attempt"] >= last[key]["attempt"]:
            rec.pop("info", None)
            last[key] = rec
    return last


# ---- tables ----------------------------------------------------------------------------------


def param_types(manifest: dict[str, Any]) -> dict[str, pa.DataType]:
    return {name: _PARAM_TYPES[kind] for name, kind in manifest.get("param_columns", {}).items()}


@dataclass(frozen=True)
class _Tables:
    """What turning a journal into tables needs, from a first pass over it."""

    trial_schema: pa.Schema
    event_schema: pa.Schema
    params: dict[str, pa.DataType]
    kinds: dict[str, str]
    base: dict[str, Any]
    keep: dict[tuple[str, int], int]  # (cell, trial) -> the attempt that counts


def _plan_tables(run_dir: Path, manifest: dict[str, Any],
                 problems: list[JournalProblem]) -> _Tables:
    kinds = dict(manifest.get("param_columns", {}))
    keep = {k: r["attempt"] for k, r in latest_attempts(run_dir, problems, kinds).items()}
    params = param_types(manifest)
    meta = {_PROBLEMS_KEY: _problems_metadata(problems)}
    return _Tables(pa.schema([*FIXED_COLUMNS.items(), *params.items()], metadata=meta),
                   pa.schema(list(EVENT_COLUMNS.items()), metadata=meta), params, kinds,
                   _run_constants(manifest), keep)


def _table_batches(run_dir: Path, plan: _Tables) -> Iterator[tuple[pa.Table, pa.Table]]:
    """(trials, events) tables of the counting attempts, a batch of records at a time."""
    for batch in _batches(_current(run_dir, plan), BATCH):
        yield (_trial_table(batch, plan.base, plan.trial_schema, plan.params),
               _event_table(batch, plan.base, plan.event_schema))


def finalize_tables(run_dir: Path) -> list[JournalProblem]:
    """Journal -> trials.parquet and events.parquet, streamed in batches (for the writer of a
    run: readers use `load`, which never writes). Returns the journal's unreadable lines,
    which are also logged and kept in the tables' metadata."""
    manifest = read_manifest(run_dir)
    problems: list[JournalProblem] = []
    plan = _plan_tables(run_dir, manifest, problems)
    with (
        pq.ParquetWriter(run_dir / f".{TRIALS}.tmp", plan.trial_schema) as trials_out,
        pq.ParquetWriter(run_dir / f".{EVENTS}.tmp", plan.event_schema) as events_out,
    ):
        for trials, events in _table_batches(run_dir, plan):
            trials_out.write_table(trials)
            events_out.write_table(events)
    os.replace(run_dir / f".{TRIALS}.tmp", run_dir / TRIALS)
    os.replace(run_dir / f".{EVENTS}.tmp", run_dir / EVENTS)
    if problems:
        log.warning("%s: %s", run_dir / JOURNAL, describe_problems(len(problems), problems))
    return problems


def _build_tables(run_dir: Path, manifest: dict[str, Any]
                  ) -> tuple[pd.DataFrame, pd.DataFrame, list[JournalProblem]]:
    """The same tables as finalize_tables writes, in memory (nothing on disk changes)."""
    problems: list[JournalProblem] = []
    plan = _plan_tables(run_dir, manifest, problems)
    trials, events = [plan.trial_schema.empty_table()], [plan.event_schema.empty_table()]
    for trial_batch, event_batch in _table_batches(run_dir, plan):
        trials.append(trial_batch)
        events.append(event_batch)
    return (pa.concat_tables(trials).to_pandas(), pa.concat_tables(events).to_pandas(),
            problems)


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
    unreadable: int = 0  # journal lines skipped as unreadable
    problems: tuple[JournalProblem, ...] = ()  # those lines (at most KEPT_PROBLEMS of them)

    def unreadable_note(self) -> str:
        """'journal: 2 unreadable line(s) skipped: 17 (bad JSON), ...', or '' if none."""
        if not self.unreadable:
            return ""
        return "journal: " + describe_problems(self.unreadable, self.problems)


def mark_unfinished(run_dir: Path, status: str, **facts: Any) -> None:
    """A run that ended before it could write its own status (killed, or its host died):
    say so in its manifest; a run that did write one keeps it."""
    manifest = read_manifest(run_dir)
    if manifest.get("status") == "running":
        manifest.update(status=status, **facts)
        write_json_atomic(run_dir / MANIFEST, manifest)


_DAMAGED = "the run is damaged or was written by another tool; its trials.jsonl still holds " \
           "the trials"


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest as a dict (for a run's writers, which update it); readers use
    read_run_manifest, which also checks the fields they rely on."""
    path = run_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{run_dir}: not a run directory (no {MANIFEST})",
                       hint="`orchestrate results` lists the runs") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: corrupt ({exc.msg} at line {exc.lineno})", hint=_DAMAGED,
                       ) from None
    except (OSError, ValueError, RecursionError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 JSON"
        raise BadInput(f"{path}: unreadable ({why})", hint=_DAMAGED) from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: not a JSON object", hint=_DAMAGED)
    return data


# the manifest fields readers use, and their JSON types; run_id and suite_name are required
_MANIFEST_FIELDS = {"run_id": "str", "suite_name": "str", "status": "str", "git_rev": "str",
                    "host": "dict", "tools": "dict", "outcomes": "dict", "plan": "dict",
                    "param_columns": "dict"}


def manifest_problem(data: dict[str, Any]) -> str:
    """What makes a manifest unusable to readers ('' if nothing)."""
    for key in ("run_id", "suite_name"):
        if key not in data:
            return f"no {key!r} (an old or foreign manifest)"
    for key, kind in _MANIFEST_FIELDS.items():
        if key in data and not is_kind(data[key], kind):
            return f"{key!r} is not {_NAMES[kind]}"
    if not is_kind(data.get("host", {}).get("hostname", ""), "str"):
        return "'host.hostname' is not a string"
    if not all(is_kind(n, "int") for n in data.get("outcomes", {}).values()):
        return "'outcomes' holds a count that is not an integer"
    bad = [k for k, v in data.get("param_columns", {}).items() if v not in _PARAM_TYPES]
    return f"'param_columns' has an unknown type for {bad[0]!r}" if bad else ""


def read_run_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest of a run to read, checked: a damaged one is a one-line BadInput."""
    data = read_manifest(run_dir)
    problem = manifest_problem(data)
    if problem:
        raise BadInput(f"{run_dir / MANIFEST}: {problem}", hint=_DAMAGED)
    return data


def resolve_run(run: str | Path, root: str | Path | None = None) -> Path:
    """A run by path, by directory name under root, or 'latest'."""
    candidates = [Path(run)]
    if root is not None:
        candidates.append(Path(root) / str(run))
    for path in candidates:
        if (path / MANIFEST).exists():
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
    tables = _from_parquet(run_dir, manifest) if _parquet_fresh(run_dir) else None
    if tables is None:
        trials, events, problems = _build_tables(run_dir, manifest)
        tables = RunTables(run_dir, manifest, trials, events, len(problems),
                           tuple(problems[:KEPT_PROBLEMS]))
    if tables.unreadable and not quiet:
        log.warning("%s: %s", run_dir / JOURNAL,
                    describe_problems(tables.unreadable, tables.problems))
    return tables


def _from_parquet(run_dir: Path, manifest: dict[str, Any]) -> RunTables | None:
    try:
        trials, events = pq.read_table(run_dir / TRIALS), pq.read_table(run_dir / EVENTS)
    except (OSError, pa.ArrowException) as exc:
        log.warning("%s: unreadable (%s); reading the journal instead", run_dir / TRIALS, exc)
        return None
    count, problems = _stored_problems(trials.schema.metadata or {})
    if count is None:  # tables written before their metadata said: look at the journal
        found: list[JournalProblem] = []
        for _ in read_journal(run_dir, found, manifest.get("param_columns", {})):
            pass
        count, problems = len(found), found[:KEPT_PROBLEMS]
    return RunTables(run_dir, manifest, trials.to_pandas(), events.to_pandas(), count,
                     tuple(problems))


def _stored_problems(meta: dict[bytes, bytes]) -> tuple[int | None, list[JournalProblem]]:
    try:
        stored = json.loads(meta[_PROBLEMS_KEY])
        return int(stored["count"]), [JournalProblem(int(n), str(w)) for n, w in stored["lines"]]
    except (KeyError, TypeError, ValueError):
        return None, []


def _parquet_fresh(run_dir: Path) -> bool:
    journal, trials = run_dir / JOURNAL, run_dir / TRIALS
    if not trials.exists() or not (run_dir / EVENTS).exists():
        return False
    return not journal.exists() or trials.stat().st_mtime_ns >= journal.stat().st_mtime_ns


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
        if (child / MANIFEST).exists():
            _add_run(child, None, runs, skipped)
        elif hosts:
            for run in _subdirs(child):
                if (run / MANIFEST).exists():
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


def default_root() -> Path:
    """Where runs go and are looked up: $ORCH_RESULTS, else ./results (settings.py reads it)."""
    return current().results


def hostname() -> str:
    return socket.gethostname()
