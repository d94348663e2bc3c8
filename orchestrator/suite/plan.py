"""Pure planning: Suite -> ordered measurement points and trial cells.

Order minimises expensive transitions: each paging mode is entered once, each guest boots once
per mode. Within a guest (`group_cells`) the suite's `order` decides: `contiguous` runs the
workloads in suite order, each parameter point's trials together (warm-ups first);
`interleaved` runs trial k of every point in round k, the points shuffled in each round (seeded,
so a plan is reproducible). Nothing here touches the host.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from orchestrator.suite.kernel_choice import BuiltKernel, guest_names
from orchestrator.suite.kinds import KINDS
from orchestrator.suite.schema import (
    Guest,
    PrecisionTarget,
    RequestedMode,
    Suite,
    TrialOrder,
    WorkloadBase,
)

NATIVE_GUEST = "host"  # the guest column's value for native rows

Scalar = int | float | str | bool


@dataclass(frozen=True, slots=True)
class Precision:
    """A point's precision target, its metric resolved (the kind's primary one by default)."""

    min: int  # measured ok trials at least
    max: int  # measured trials at most (the point's `trials`)
    halfwidth: float  # of the median's exact 95 % interval, relative to the median
    metric: str


@dataclass(frozen=True, slots=True)
class Point:
    """One measurement point: mode x guest x workload x one value of each parameter."""

    mode: RequestedMode
    guest: str
    workload: str
    kind: str
    params: tuple[tuple[str, Scalar], ...]
    trials: int  # measured trials; with a precision target, the most it may run
    warmup: int
    cell_id: str  # from mode, guest, workload, kind and params only: stable across suites
    precision: Precision | None = None

    @property
    def param_dict(self) -> dict[str, Scalar]:
        return dict(self.params)

    def trials_text(self) -> str:
        """'10 trials', or 'up to 20 trials (stop when fork_us is known to +-2%, after 10)'."""
        if self.precision is None:
            return f"{self.trials} trials"
        target = self.precision
        return (f"up to {target.max} trials (stop when {target.metric} is known to "
                f"+-{target.halfwidth:.1%}, after {target.min})").replace(".0%", "%")


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
    order: TrialOrder = TrialOrder.CONTIGUOUS
    order_seed: int = 0

    @property
    def modes(self) -> tuple[RequestedMode, ...]:
        return tuple(dict.fromkeys(g.mode for g in self.groups))

    @property
    def points(self) -> Iterator[Point]:
        for group in self.groups:
            yield from group.points

    def cells(self) -> Iterator[Cell]:
        for group in self.groups:
            yield from self.group_cells(group)

    def group_cells(self, group: GuestGroup) -> list[Cell]:
        return group_cells(group, self.order, self.order_seed)

    def counts(self) -> dict[str, int]:
        """Trials count a precision target's max (the most a run may make); the points with a
        target are counted apart (only when there are any, so older plans read the same)."""
        points = list(self.points)
        counts = {
            "mode_switches": sum(1 for m in self.modes if m is not RequestedMode.NATIVE),
            "boots": sum(1 for g in self.groups if g.mode is not RequestedMode.NATIVE),
            "points": len(points),
            "trials": sum(p.trials + p.warmup for p in points),
            "measured_trials": sum(p.trials for p in points),
        }
        if targeted := sum(1 for p in points if p.precision):
            counts["points_with_precision_target"] = targeted
        return counts


def cells_of(point: Point) -> Iterator[Cell]:
    for index in range(point.warmup + point.trials):
        yield Cell(point, index, index < point.warmup)


def group_cells(group: GuestGroup, order: TrialOrder, seed: int) -> list[Cell]:
    """A guest's cells in the order they run. Interleaved: round k holds trial k of every
    point that has one (warm-ups are the first rounds), its points shuffled by a generator
    seeded from (seed, mode, guest, k) alone, so the same suite gives the same order anywhere."""
    if order is TrialOrder.CONTIGUOUS:
        return [cell for point in group.points for cell in cells_of(point)]
    cells: list[Cell] = []
    rounds = max((p.warmup + p.trials for p in group.points), default=0)
    for index in range(rounds):
        present = [p for p in group.points if index < p.warmup + p.trials]
        # a str seed is hashed with SHA-512 by random itself: stable across processes
        shuffler = random.Random(f"{seed}/{group.mode.value}/{group.guest}/{index}")  # noqa: S311
        shuffler.shuffle(present)
        cells += [Cell(point, index, index < point.warmup) for point in present]
    return cells


def make_plan(suite: Suite) -> Plan:
    groups = [GuestGroup(mode, guest, tuple(p for w in suite.workloads
                                            for p in _points(mode, guest, w)))
              for mode, guest in targets(suite)]
    return Plan(tuple(groups), suite.order, suite.order_seed)


def targets(suite: Suite) -> list[tuple[RequestedMode, str]]:
    """(mode, guest) in plan order: natively the host, in every other mode every guest (a
    guest sweeping kernels is one guest per kernel, see run_guests)."""
    guests = list(guest_names(suite.guests))
    return [(mode, guest) for mode in suite.paging
            for guest in ([NATIVE_GUEST] if mode is RequestedMode.NATIVE else guests)]


@dataclass(frozen=True)
class RunGuest:
    """A guest as a run boots it: the suite's guest (`base`) with one kernel."""

    base: str
    config: Guest
    kernel: str | BuiltKernel


def run_guests(suite: Suite) -> dict[str, RunGuest]:
    """Every guest a run boots, by the name its rows carry."""
    return {name: RunGuest(base, suite.guests[base], spec)
            for name, (base, spec) in guest_names(suite.guests).items()}


def points_per_target(workload: WorkloadBase) -> int:
    """The points one target runs of a workload, counted without expanding the sweeps."""
    return math.prod(len(sweep) for sweep in _sweeps(workload)[1])


def _sweeps(workload: WorkloadBase) -> tuple[list[str], list[tuple[Any, ...]]]:
    names = list(type(workload.params).model_fields)
    return names, [getattr(workload.params, n) for n in names]


def _points(mode: RequestedMode, guest: str, workload: WorkloadBase) -> Iterator[Point]:
    names, sweeps = _sweeps(workload)
    precision = _precision(workload)
    for combo in itertools.product(*sweeps):
        params = tuple((n, _scalar(v)) for n, v in zip(names, combo, strict=True))
        yield Point(mode, guest, workload.name, workload.kind, params, workload.max_trials,
                    workload.warmup, cell_id(mode, guest, workload.name, workload.kind, params),
                    precision)


def _precision(workload: WorkloadBase) -> Precision | None:
    target = workload.trials
    if not isinstance(target, PrecisionTarget):
        return None
    return Precision(target.min, target.max, target.ci_halfwidth,
                     target.metric or KINDS[workload.kind].primary_metric)


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
    """The plan as `orchestrate plan --json` shows it: the cells in the order they run."""
    shown: dict[str, Any] = {"counts": plan.counts()}
    if plan.order is TrialOrder.INTERLEAVED:  # contiguous plans read as they always did
        shown |= {"order": plan.order.value, "order_seed": plan.order_seed}
    targets = {p.workload: _target_json(p.precision) for p in plan.points if p.precision}
    if targets:  # a cell past a met target is recorded as skipped, not run
        shown["precision_targets"] = targets
    shown["cells"] = [
        {"mode": c.point.mode.value, "guest": c.point.guest, "workload": c.point.workload,
         "kind": c.point.kind, "params": c.point.param_dict, "trial": c.trial,
         "warmup": c.warmup, "cell_id": c.point.cell_id}
        for c in plan.cells()
    ]
    return shown


def _target_json(precision: Precision) -> dict[str, Any]:
    return {"min": precision.min, "max": precision.max,
            "ci_halfwidth": precision.halfwidth, "metric": precision.metric}
