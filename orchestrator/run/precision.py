"""Precision targets: a point stops running trials once its median is known well enough.

A workload's `trials: {min, max, ci_halfwidth}` runs a point's measured trials until the exact
95 % interval of its metric's median (orchestrator.median) is at most ci_halfwidth of the median
on either side, with at least `min` ok values, or until its `max` trials ran. Only measured ok
trials that report the metric count; warm-ups, failures and errors do not.

The executor judges each trial before recording it, so the row that ends a point says why in
its info; the point's cells still to run are then recorded as skipped with the reason, which
keeps counts whole and tells a resumed run not to run them. A resumed run starts from the
values the journal already holds, so the decision goes on where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.median import relative_halfwidth
from orchestrator.model import Outcome, TrialRecord
from orchestrator.suite.plan import Cell, Plan, Precision


@dataclass
class PrecisionTargets:
    """The measured values of each point with a target, and the points whose target is met."""

    values: dict[str, list[float]] = field(default_factory=dict)  # cell_id -> ok values
    finished: dict[str, str] = field(default_factory=dict)  # cell_id -> why the rest is skipped

    @classmethod
    def resumed(cls, plan: Plan, recorded: Mapping[tuple[str, int], Mapping[str, Any]]
                ) -> PrecisionTargets:
        """Seeded from a journal's latest attempts (the dicts `latest_attempts` reads)."""
        targets = cls()
        wanted = {p.cell_id: p.precision for p in plan.points if p.precision is not None}
        for (cell_id, _), rec in recorded.items():
            precision = wanted.get(cell_id)
            if precision and rec["outcome"] == Outcome.OK.value and not rec["warmup"]:
                value = _metric(precision, ((name, value) for name, value, _ in rec["metrics"]))
                if value is not None:
                    targets.values.setdefault(cell_id, []).append(value)
        for cell_id, values in targets.values.items():
            halfwidth = relative_halfwidth(values)
            if _met(wanted[cell_id], values, halfwidth):
                targets.finished[cell_id] = skip_reason(len(values), halfwidth)
        return targets

    def judge(self, cell: Cell, record: TrialRecord) -> TrialRecord:
        """The trial's record, with why its point stops in its info if this trial ends it."""
        precision = cell.point.precision
        if precision is None or cell.warmup:
            return record
        values = self.values.setdefault(cell.point.cell_id, [])
        if record.outcome is Outcome.OK:
            value = _metric(precision, ((m.name, m.value) for m in record.metrics))
            if value is not None:
                values.append(value)
        halfwidth = relative_halfwidth(values)
        met = _met(precision, values, halfwidth)
        if not met and cell.trial < cell.point.warmup + cell.point.trials - 1:
            return record
        if met:
            self.finished[cell.point.cell_id] = skip_reason(len(values), halfwidth)
        stopped = {"stopped": "precision" if met else "max", "halfwidth": halfwidth,
                   "n": len(values)}
        return replace(record, info={**record.info, **stopped})


def skip_reason(n: int, halfwidth: float | None) -> str:
    return f"precision target met after {n} trials (+-{halfwidth or 0:.1%})"


def _met(precision: Precision, values: list[float], halfwidth: float | None) -> bool:
    return (len(values) >= precision.min and halfwidth is not None
            and halfwidth <= precision.halfwidth)


def _metric(precision: Precision, metrics: Iterable[tuple[str, Any]]) -> float | None:
    """The target's metric among a trial's metrics, if it is there and a finite number."""
    for name, value in metrics:
        if name == precision.metric and isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None
