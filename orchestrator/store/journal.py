"""The trial journal, trials.jsonl: appended by the run, read by everyone else.

Durability: each finished trial is one JSON line written with a single O_APPEND write, so a
crash loses at most the trial in flight and never leaves half a record that a reader trusts.
A writer that opens a journal whose last line was cut short (a crash or power loss mid-write)
first moves that fragment aside into trials.jsonl.torn, so the next record never joins it.

Readers never change the journal. Every line they cannot use (bad JSON, not an object, missing
or ill-typed keys, a torn last line) is reported with its line number and counted, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.model import Outcome, TrialRecord
from orchestrator.store.rundir import RunDir

KEPT_PROBLEMS = 1000  # unreadable lines kept in a listing (their count is always exact)
_TAIL_CHUNK = 1 << 16

log = logging.getLogger(__name__)


# ---- writing -------------------------------------------------------------------------------


class Journal:
    """Append-only trial log; each record is one write() of one line.

    Opening it repairs a torn tail first (see repair_torn_tail): a record appended after a
    fragment would otherwise be glued onto it and lost with it.
    """

    def __init__(self, run_dir: Path, *, fsync: bool = False) -> None:
        self.path = RunDir(run_dir).journal
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
    aside = RunDir(path.parent).torn
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


# ---- checking a line -----------------------------------------------------------------------


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
KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "number": "a number",
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
                f"{key!r} is not {KIND_NAMES[kind]}"
    for key, (kind, _) in _OPTIONAL.items():
        if key in data and type(data[key]) not in _KINDS[kind]:
            return f"{key!r} is not {KIND_NAMES[kind]}"
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
            return f"param {name!r} is not {KIND_NAMES[kind]}"
    return ""


# ---- reading -------------------------------------------------------------------------------


def read_journal(run_dir: Path, problems: list[JournalProblem] | None = None,
                 params: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Readable records in write order; every other line is added to `problems` (if given)
    with its line number. Never changes the journal."""
    try:
        fh = RunDir(run_dir).journal.open("rb")
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
