"""Plan expansion and grouping, checked as properties over generated suites."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.suite.plan import NATIVE_GUEST, make_plan
from orchestrator.suite.schema import RequestedMode, Suite

MODES = [m.value for m in RequestedMode]


@st.composite
def suites(draw: st.DrawFn) -> Suite:
    paging = draw(st.lists(st.sampled_from(MODES), min_size=1, max_size=4, unique=True))
    guest_names = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3,
                                unique=True))
    workloads: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 3))):
        pages = draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=4, unique=True))
        ptes = draw(st.lists(st.integers(1, 512), min_size=1, max_size=3, unique=True))
        workloads.append({"name": f"w{i}", "kind": "fork-dirty", "trials": draw(st.integers(1, 4)),
                          "warmup": draw(st.integers(0, 2)),
                          "params": {"pages": pages, "ptes_per_table": ptes}})
    return Suite.model_validate({"name": "p", "paging": paging, "workloads": workloads,
                                 "guests": {g: {} for g in guest_names}})


def expected_trials(suite: Suite) -> int:
    total = 0
    for mode in suite.paging:
        guests = 1 if mode is RequestedMode.NATIVE else len(suite.guests)
        for w in suite.workloads:
            points = len(w.params.pages) * len(w.params.ptes_per_table)  # type: ignore[attr-defined]
            total += guests * points * (w.max_trials + w.warmup)
    return total


@settings(max_examples=150, deadline=None)
@given(suites())
def test_counts_match_the_cartesian_product(suite: Suite) -> None:
    plan = make_plan(suite)
    cells = list(plan.cells())
    assert len(cells) == expected_trials(suite) == plan.counts()["trials"]
    virtual = [m for m in suite.paging if m is not RequestedMode.NATIVE]
    assert plan.counts()["boots"] == len(virtual) * len(suite.guests)
    assert plan.counts()["mode_switches"] == len(virtual)


@settings(max_examples=150, deadline=None)
@given(suites())
def test_no_duplicate_trials_and_warmups_first(suite: Suite) -> None:
    cells = list(make_plan(suite).cells())
    keys = [c.key for c in cells]
    assert len(keys) == len(set(keys))
    for _, group in itertools.groupby(cells, key=lambda c: c.point.cell_id):
        flags = [c.warmup for c in group]
        assert flags == sorted(flags, reverse=True)  # all warm-ups before measured trials


@settings(max_examples=150, deadline=None)
@given(suites())
def test_each_mode_entered_once_each_guest_booted_once_per_mode(suite: Suite) -> None:
    cells = list(make_plan(suite).cells())
    modes = [m for m, _ in itertools.groupby(c.point.mode for c in cells)]
    assert modes == list(suite.paging)  # contiguous and in the suite's order
    boots = [k for k, _ in itertools.groupby((c.point.mode, c.point.guest) for c in cells)]
    assert len(boots) == len(set(boots))
    for mode, guest in boots:
        assert (guest == NATIVE_GUEST) == (mode is RequestedMode.NATIVE)


def test_cell_ids_are_stable_and_distinguish_points() -> None:
    data = {"name": "p", "paging": ["native"], "workloads": [
        {"name": "f", "kind": "fork-dirty", "params": {"pages": [1, 2]}}]}
    first = [p.cell_id for p in make_plan(Suite.model_validate(data)).points]
    again = [p.cell_id for p in make_plan(Suite.model_validate(data)).points]
    assert first == again
    assert len(set(first)) == 2
    assert all(len(c) == 16 for c in first)


def test_parameters_keep_declared_order_and_enum_values_are_plain() -> None:
    suite = Suite.model_validate({"name": "p", "paging": ["native"], "workloads": [
        {"name": "h", "kind": "hugepage", "params": {"size": ["2MiB", "1GiB"],
                                                     "backing": ["thp", "hugetlb-2m"]}}]})
    points = list(make_plan(suite).points)
    assert [p.params for p in points] == [
        (("size", 2 << 20), ("backing", "thp")), (("size", 2 << 20), ("backing", "hugetlb-2m")),
        (("size", 1 << 30), ("backing", "thp")), (("size", 1 << 30), ("backing", "hugetlb-2m")),
    ]
    assert all(type(p.param_dict["backing"]) is str for p in points)
