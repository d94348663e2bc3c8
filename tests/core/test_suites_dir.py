"""Every suite shipped in suites/ and the embedded default is valid and plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli.run import DEFAULT_SUITE
from orchestrator.suite.loader import load_suite
from orchestrator.suite.plan import make_plan
from orchestrator.suite.schema import PrecisionTarget, TrialOrder

SUITES = sorted((Path(__file__).resolve().parents[2] / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", [*SUITES, DEFAULT_SUITE], ids=lambda p: p.name)
def test_shipped_suite_is_valid(path: Path) -> None:
    suite = load_suite(path).suite
    assert make_plan(suite).counts()["trials"] > 0


def test_there_are_seed_suites() -> None:
    names = {p.stem for p in SUITES}
    assert {"fork-dirty-pages", "pte-density", "hugepage-fork", "fault-around",
            "mprotect-ranges"} <= names


# The seed suites measure in interleaved order; those whose trials take seconds stop each point
# at a precision target, no sooner than they used to and at most about twice as late.
INTERLEAVED = ["fork-dirty-pages", "pte-density", "mprotect-ranges", "hugepage-fork",
               "fault-around", "dirty-logging"]
TARGETED = INTERLEAVED[:-1]  # dirty-logging's trials take minutes: fixed counts


@pytest.mark.parametrize("name", INTERLEAVED)
def test_seed_suites_interleave_their_trials(name: str) -> None:
    assert load_suite(SUITES[0].parent / f"{name}.yaml").suite.order is TrialOrder.INTERLEAVED


@pytest.mark.parametrize("name", TARGETED)
def test_seed_suites_stop_at_a_precision_target(name: str) -> None:
    suite = load_suite(SUITES[0].parent / f"{name}.yaml").suite
    for workload in suite.workloads:
        target = workload.trials
        assert isinstance(target, PrecisionTarget)
        assert target.min >= 6 and target.max <= 2 * target.min  # 6: a 95 % interval's least
        assert 0 < target.ci_halfwidth <= 0.05


@pytest.mark.parametrize("path", [p for p in SUITES if p.stem == "native-smoke"] + [DEFAULT_SUITE],
                         ids=lambda p: p.name)
def test_smoke_suites_keep_their_order_and_counts(path: Path) -> None:
    suite = load_suite(path).suite
    assert suite.order is TrialOrder.CONTIGUOUS
    assert all(isinstance(w.trials, int) for w in suite.workloads)
