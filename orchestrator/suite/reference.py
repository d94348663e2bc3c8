"""A suite's reference data: the figures its source thread published, to set ours beside.

A seed suite asks the question a mailing-list thread asked, and that thread measured something
on its own platform and era (Xen PV in 2006, ...). `reference:` carries those published numbers
verbatim, which of our paging modes stands where each of their mechanisms stood, and the caveats,
so `report` can compare shapes (growth factors, ratios, break-even), never absolute times, and
`orchestrate reproduce SEED` can find the suites of a seed. Validated against the suite's own
workloads in `schema.Suite`; stored in the run's manifest with the rest of the suite.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from orchestrator.suite.fields import Frozen

Positive = Annotated[float, Field(gt=0)]


class ReferenceSeries(Frozen):
    """One published curve: their mechanism, the mode of ours that plays its part, values."""

    label: Annotated[str, Field(min_length=1)]
    like: Annotated[str, Field(pattern=r"^(native|tdp|shadow)\z")]
    # the swept parameter's value -> their published figure, in the reference's unit
    values: Annotated[dict[Positive, Positive], Field(min_length=1)]


class ReferenceRatio(Frozen):
    """A published ratio between two settings of one parameter ("~50x faster")."""

    label: Annotated[str, Field(min_length=1)]
    value: Positive
    param: str
    numerator: str | int | float
    denominator: str | int | float


class Reference(Frozen):
    seed: Annotated[str, Field(pattern=r"^[0-9]{3}\z")]  # the thread in ../shared/seeds
    source: Annotated[str, Field(min_length=1)]  # who, where, when: a citation
    caveats: Annotated[str, Field(min_length=1)]  # the era and platform: what not to compare
    workload: str  # the suite's workload whose rows are compared
    metric: str
    unit: str = "us"
    axis: str | None = None  # the swept parameter the series are given against
    series: tuple[ReferenceSeries, ...] = ()
    break_even: Positive | None = None  # their published break-even on `axis`
    ratios: tuple[ReferenceRatio, ...] = ()

    @model_validator(mode="after")
    def _series_need_an_axis(self) -> Reference:
        if self.series and self.axis is None:
            raise ValueError("reference series are values against a swept parameter: "
                             "name it with `axis:`")
        if not self.series and not self.ratios:
            raise ValueError("a reference needs `series:` or `ratios:` to compare with")
        if len({s.like for s in self.series}) != len(self.series):
            raise ValueError("two reference series play the same paging mode (`like:`)")
        return self
