"""Pure planning: Suite -> ordered measurement points and trial cells.

Order minimises expensive transitions: each paging mode is entered once, each guest boots once
per mode, and within a guest the workloads run in suite order, each parameter point's trials
together (warm-ups first). Nothing here touches the host.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from orchestrator.suite.schema import RequestedMode, Suite, WorkloadBase

NATIVE_GUEST = "host"  # the guest column's value for native rows

Scalar = int | float | str | bool


@dataclass(frozen=True, slots=True)
class Point:
    """One measurement point: mode x guest x workload x one value of each parameter."""

    mode: RequestedMode
    guest: str
    workload: str
    kind: str
    params: tuple[tuple[str, Scalar], ...]
    trials: int
    warmup: int
    cell_id: str

    @property
    def param_dict(self) -> dict[str, Scalar]:
        return dict(self.params)


@dataclass(frozen=True, slots=True)
class Cell:
    """One trial of a point: the unit that is run, recorded and resumed."""

    point: Point
    trial: int
    warmup: bool

    @property
    def key(self) -> tuple[str, int]:
        return (self.point.cell_id, self.trial)


@dataclass(frozen=True)
class GuestGroup:
    mode: RequestedMode
    guest: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Plan:
    groups: tuple[GuestGroup, ...]

    @property
    def modes(self) -> tuple[RequestedMode, ...]:
        return tuple(dict.fromkeys(g.mode for g in self.groups))

    @property
    def points(self) -> Iterator[Point]:
        for group in self.groups:
            yield from group.points

    def cells(self) -> Iterator[Cell]:
        for point in self.points:
            yield from cells_of(point)

    def counts(self) -> dict[str, int]:
        points = list(self.points)
        return {
            "mode_switches": sum(1 for m in self.modes if m is not RequestedMode.NATIVE),
            "boots": sum(1 for g in self.groups if g.mode is not RequestedMode.NATIVE),
            "points": len(points),
            "trials": sum(p.trials + p.warmup for p in points),
            "measured_trials": sum(p.trials for p in points),
        }


def cells_of(point: Point) -> Iterator[Cell]:
    for index in range(point.warmup + point.trials):
        yield Cell(point, index, index < point.warmup)


def make_plan(suite: Suite) -> Plan:
    groups = [GuestGroup(mode, guest, tuple(p for w in suite.workloads
                                            for p in _points(mode, guest, w)))
              for mode, guest in targets(suite)]
    return Plan(tuple(groups))


def targets(suite: Suite) -> list[tuple[RequestedMode, str]]:
    """(mode, guest) in plan order: natively the host, in every other mode every guest."""
    return [(mode, guest) for mode in suite.paging
            for guest in ([NATIVE_GUEST] if mode is RequestedMode.NATIVE else suite.guests)]


def points_per_target(workload: WorkloadBase) -> int:
    """The points one target runs of a workload, counted without expanding the sweeps."""
    return math.prod(len(sweep) for sweep in _sweeps(workload)[1])


def _sweeps(workload: WorkloadBase) -> tuple[list[str], list[tuple[Any, ...]]]:
    names = list(type(workload.params).model_fields)
    return names, [getattr(workload.params, n) for n in names]


def _points(mode: RequestedMode, guest: str, workload: WorkloadBase) -> Iterator[Point]:
    names, sweeps = _sweeps(workload)
    for combo in itertools.product(*sweeps):
        params = tuple((n, _scalar(v)) for n, v in zip(names, combo, strict=True))
        yield Point(mode, guest, workload.name, workload.kind, params, workload.trials,
                    workload.warmup, cell_id(mode, guest, workload.name, workload.kind, params))


def _scalar(value: Any) -> Scalar:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, int | float | str | bool):
        return value
    raise TypeError(f"parameter value {value!r} is not a scalar")


def cell_id(mode: RequestedMode, guest: str, workload: str, kind: str,
            params: tuple[tuple[str, Scalar], ...]) -> str:
    """Stable across runs and machines, so runs can be compared cell by cell."""
    blob = json.dumps([mode.value, guest, workload, kind, params], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "counts": plan.counts(),
        "cells": [
            {"mode": c.point.mode.value, "guest": c.point.guest, "workload": c.point.workload,
             "kind": c.point.kind, "params": c.point.param_dict, "trial": c.trial,
             "warmup": c.warmup, "cell_id": c.point.cell_id}
            for c in plan.cells()
        ],
    }
