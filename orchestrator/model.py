"""The plain record types of a trial: its outcome, metrics, event counts and the record itself.

They travel from the workload adapters and tracers through the executor into the journal, so
they import nothing of the package and no pandas or pyarrow: the standard library alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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
        """One journal line (without its newline)."""
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
