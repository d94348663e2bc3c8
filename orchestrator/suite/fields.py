"""Field types shared by the suite schema and the workload kinds' parameter models.

Every workload parameter may be a scalar or a list; a list is swept. After validation every
parameter is a non-empty tuple of distinct values, so the planner never sees a bare scalar.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from orchestrator.suite.units import parse_duration, parse_fraction, parse_size

T = TypeVar("T")


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else [value]


def nonempty_distinct(values: tuple[T, ...]) -> tuple[T, ...]:
    if not values:
        raise ValueError("an empty sweep runs nothing: give at least one value")
    seen: set[T] = set()
    for value in values:
        if value in seen:  # named alone, not with the list: a sweep may hold thousands
            raise ValueError(f"the sweep repeats a value: {value!r}")
        seen.add(value)
    return values


# A sweepable parameter: a scalar or a list of distinct values, stored as a tuple.
Sweep = Annotated[tuple[T, ...], BeforeValidator(_as_list), AfterValidator(nonempty_distinct)]
Size = Annotated[int, BeforeValidator(parse_size)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
Fraction = Annotated[float, BeforeValidator(parse_fraction)]  # 2% or 0.02
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
