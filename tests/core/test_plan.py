"""Plan expansion and grouping, checked as properties over generated suites."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.suite.plan import NATIVE_GUEST, Precision, group_cells, make_plan, plan_json
from orchestrator.suite.schema import RequestedMode, Suite, TrialOrder

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


# ---- order: contiguous (the default) and interleaved -----------------------------------------


def ordered(suite: Suite, order: str, seed: int = 0) -> Suite:
    return suite.model_copy(update={"order": TrialOrder(order), "order_seed": seed})


@settings(max_examples=100, deadline=None)
@given(suites(), st.integers(-5, 5))
def test_interleaved_runs_every_cell_once_in_rounds(suite: Suite, seed: int) -> None:
    plan = make_plan(ordered(suite, "interleaved", seed))
    contiguous = make_plan(suite)
    cells = list(plan.cells())
    assert sorted(c.key for c in cells) == sorted(c.key for c in contiguous.cells())
    for group in plan.groups:
        mine = [c for c in cells if (c.point.mode, c.point.guest) == (group.mode, group.guest)]
        # round k holds trial k of every point that has one: the trial index never goes down,
        # and each round holds each of those points once
        trials = [c.trial for c in mine]
        assert trials == sorted(trials)
        for k, round_ in itertools.groupby(mine, key=lambda c: c.trial):
            points = [c.point.cell_id for c in round_]
            assert sorted(points) == sorted(p.cell_id for p in group.points
                                            if k < p.warmup + p.trials)


@settings(max_examples=100, deadline=None)
@given(suites())
def test_interleaved_keeps_modes_and_boots_together(suite: Suite) -> None:
    cells = list(make_plan(ordered(suite, "interleaved")).cells())
    boots = [k for k, _ in itertools.groupby((c.point.mode, c.point.guest) for c in cells)]
    assert len(boots) == len(set(boots))


def wide_suite(order: str = "interleaved", seed: int = 0) -> Suite:
    return Suite.model_validate({
        "name": "p", "paging": ["native", "tdp"], "guests": {"g": {}}, "order": order,
        "order_seed": seed, "workloads": [
            {"name": "f", "kind": "fork-dirty", "trials": 3, "warmup": 1,
             "params": {"pages": list(range(1, 9))}},
            {"name": "m", "kind": "mprotect", "trials": 2, "warmup": 0, "params": {"pages": 4}}]})


def keys(suite: Suite) -> list[tuple[str, int]]:
    return [c.key for c in make_plan(suite).cells()]


def test_the_shuffle_is_reproducible_and_follows_the_seed() -> None:
    assert keys(wide_suite(seed=7)) == keys(wide_suite(seed=7))
    assert keys(wide_suite(seed=7)) != keys(wide_suite(seed=8))
    plan = make_plan(wide_suite(seed=7))
    rounds = [[c.point.cell_id for c in group_cells(plan.groups[0], TrialOrder.INTERLEAVED, 7)
               if c.trial == k] for k in range(4)]
    assert len({tuple(r) for r in rounds}) > 1  # each round shuffled on its own
    assert [len(r) for r in rounds] == [9, 9, 8, 8]  # `m` has trials 0 and 1 only
    # the warm-ups of `f` are round 0, and every point's measured trials come after them
    assert all(c.warmup for c in plan.group_cells(plan.groups[0]) if c.trial == 0
               and c.point.workload == "f")


def test_contiguous_is_the_default_and_unchanged() -> None:
    default = wide_suite().model_copy(update={"order": TrialOrder.CONTIGUOUS})
    plan = make_plan(default)
    assert [c.key for c in plan.cells()] == [
        (p.cell_id, t) for p in plan.points for t in range(p.warmup + p.trials)]
    assert "order" not in plan_json(plan)
    assert Suite.model_validate({"name": "p", "paging": ["native"], "workloads": [
        {"name": "f", "kind": "noop"}]}).order is TrialOrder.CONTIGUOUS


def test_plan_json_shows_the_order_the_cells_run_in() -> None:
    plan = make_plan(wide_suite(seed=3))
    shown = plan_json(plan)
    assert (shown["order"], shown["order_seed"]) == ("interleaved", 3)
    assert [(c["cell_id"], c["trial"]) for c in shown["cells"]] == keys(wide_suite(seed=3))


# ---- precision targets ------------------------------------------------------------------------


def test_a_precision_target_plans_its_max_and_keeps_cell_ids() -> None:
    def suite(trials: object) -> Suite:
        return Suite.model_validate({"name": "p", "paging": ["native"], "workloads": [
            {"name": "f", "kind": "fork-dirty", "trials": trials, "warmup": 2,
             "params": {"pages": [1, 2, 3]}}]})
    counted = make_plan(suite(10))
    targeted = make_plan(suite({"min": 5, "max": 20, "ci_halfwidth": "2%"}))
    assert [p.cell_id for p in targeted.points] == [p.cell_id for p in counted.points]
    assert {p.precision for p in targeted.points} == {Precision(5, 20, 0.02, "fork_us")}
    assert targeted.counts() == {"mode_switches": 0, "boots": 0, "points": 3, "trials": 66,
                                 "measured_trials": 60, "points_with_precision_target": 3}
    assert "points_with_precision_target" not in counted.counts()
    assert plan_json(targeted)["precision_targets"] == {
        "f": {"min": 5, "max": 20, "ci_halfwidth": 0.02, "metric": "fork_us"}}
    named = make_plan(suite({"min": 5, "max": 20, "ci_halfwidth": 0.025, "metric": "cow_us"}))
    assert next(iter(named.points)).precision == Precision(5, 20, 0.025, "cow_us")
    assert next(iter(named.points)).trials_text() == (
        "up to 20 trials (stop when cow_us is known to +-2.5%, after 5)")
    assert next(iter(counted.points)).trials_text() == "10 trials"
