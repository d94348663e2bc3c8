"""Precision targets and the interleaved order, in a real executor with a stand-in target: a
point stops once its median's exact interval is narrow enough, says why on the row that stopped
it and records the rest as skipped; a resumed run goes on from the journal's values."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from orchestrator import proc
from orchestrator.median import relative_halfwidth
from orchestrator.run.execute import Executor, Progress, Selection
from orchestrator.run.targets import ModeState
from orchestrator.store import rundir
from orchestrator.store.journal import Journal, latest_attempts, read_journal
from orchestrator.suite.kinds import KINDS
from orchestrator.suite.loader import parse_suite
from orchestrator.suite.plan import make_plan
from orchestrator.suite.schema import RequestedMode

QUIET, NOISY, FAILING = 1, 2, 3  # the `pages` of each point: how its fork_us behaves

SUITE = """\
name: precise
paging: [native]
workloads:
  - name: fork
    kind: fork-dirty
    params: {{pages: {pages}}}
    trials: {{min: 5, max: 12, ci_halfwidth: 2%}}
    warmup: 1
"""


class FakeTarget:
    """fork-dirty without a process: `QUIET` points barely vary, `NOISY` ones swing by 2x,
    `FAILING` ones fail their first three trials, then barely vary."""

    name, paging_mode, accel, bin_dir = "host", "native", "native", "/nowhere"

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self.ran: list[int] = []  # pages, in the order trials ran

    def run(self, argv: Sequence[str], *, timeout: float) -> proc.Completed:
        pages = int(argv[argv.index("--pages") + 1])
        index = self.calls[pages] = self.calls.get(pages, 0) + 1
        self.ran.append(pages)
        if pages == FAILING and index <= 3:
            return proc.Completed(tuple(argv), 1, "", "layout check failed")
        value = 100.0 * (1 + index % 2) if pages == NOISY else 100.0 + 0.01 * (index % 3)
        trial = {"type": "trial", "metrics": {"fork_us": {"value": value, "unit": "us"}}}
        return proc.Completed(tuple(argv), 0, json.dumps(trial), "")


class FakeBackend:
    def __init__(self) -> None:
        self.target = FakeTarget()
        self.opened = 0

    @contextmanager
    def enter_mode(self, mode: RequestedMode) -> Iterator[ModeState]:
        yield ModeState(mode, "native", "native", {})

    @contextmanager
    def open_target(self, state: ModeState, guest: str) -> Iterator[FakeTarget]:
        self.opened += 1
        yield self.target


def execute(run_dir: Path, suite_text: str, backend: FakeBackend,
            selection: Selection | None = None) -> list[dict[str, Any]]:
    suite = parse_suite(suite_text, run_dir / "suite.yaml").suite
    with Journal(run_dir) as journal:
        Executor(suite, make_plan(suite), backend, journal, Progress(),
                 selection or Selection()).run()
    return list(read_journal(run_dir))


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    return rundir.new_run_dir(tmp_path, "precise")


def of(rows: list[dict[str, Any]], pages: int) -> list[dict[str, Any]]:
    return [r for r in rows if r["params"]["pages"] == pages]


def test_a_quiet_point_stops_early_and_skips_the_rest(run_dir: Path) -> None:
    rows = execute(run_dir, SUITE.format(pages=QUIET), FakeBackend())
    assert [r["trial"] for r in rows] == list(range(13))  # counts stay whole: 1 + 12
    ran, skipped = rows[:7], rows[7:]
    assert [r["outcome"] for r in ran] == ["ok"] * 7
    # six values are the fewest whose exact interval reaches 95 %, so min 5 waits for six
    assert ran[-1]["info"]["stopped"] == "precision" and ran[-1]["info"]["n"] == 6
    assert ran[-1]["info"]["halfwidth"] < 0.02
    assert not any("stopped" in r["info"] for r in ran[:-1])
    assert {r["outcome"] for r in skipped} == {"skipped"}
    assert {r["reason"] for r in skipped} == {"precision target met after 6 trials (+-0.0%)"}


def test_a_noisy_point_runs_to_max(run_dir: Path) -> None:
    rows = execute(run_dir, SUITE.format(pages=NOISY), FakeBackend())
    assert [r["outcome"] for r in rows] == ["ok"] * 13
    assert rows[-1]["info"]["stopped"] == "max" and rows[-1]["info"]["n"] == 12
    assert rows[-1]["info"]["halfwidth"] == pytest.approx(1 / 3)  # 100..200 around 150
    assert not any("stopped" in r["info"] for r in rows[:-1])


def test_failed_trials_do_not_count(run_dir: Path) -> None:
    rows = execute(run_dir, SUITE.format(pages=FAILING), FakeBackend())
    outcomes = [r["outcome"] for r in rows]
    # the warm-up takes the first failure; two measured trials fail, six ok ones follow
    assert outcomes == ["failed"] * 3 + ["ok"] * 6 + ["skipped"] * 4
    assert rows[8]["info"]["stopped"] == "precision" and rows[8]["info"]["n"] == 6


def test_with_interleaved_order_each_point_stops_on_its_own(run_dir: Path) -> None:
    backend = FakeBackend()
    text = SUITE.format(pages=f"[{QUIET}, {NOISY}]") + "order: interleaved\norder_seed: 4\n"
    rows = execute(run_dir, text, backend)
    assert len(rows) == 26 and len({(r["cell_id"], r["trial"]) for r in rows}) == 26
    quiet, noisy = of(rows, QUIET), of(rows, NOISY)
    assert [r["outcome"] for r in quiet] == ["ok"] * 7 + ["skipped"] * 6
    assert [r["outcome"] for r in noisy] == ["ok"] * 13
    # round by round (each of both points once) until the quiet one stopped, then the other
    ran = backend.target.ran
    assert all(sorted(ran[k:k + 2]) == [QUIET, NOISY] for k in range(0, 14, 2))
    assert ran[14:] == [NOISY] * 6


def test_interleaved_runs_in_the_plans_order(run_dir: Path) -> None:
    backend = FakeBackend()
    text = (SUITE.format(pages="[1, 10, 20, 30]")
            .replace("{min: 5, max: 12, ci_halfwidth: 2%}", "3")) + "order: interleaved\n"
    rows = execute(run_dir, text, backend)
    suite = parse_suite(text, run_dir / "suite.yaml").suite
    assert [(r["cell_id"], r["trial"]) for r in rows] == [c.key for c in make_plan(suite).cells()]
    assert [r["trial"] for r in rows] == [k for k in range(4) for _ in range(4)]
    assert backend.target.ran != [1, 10, 20, 30] * 4  # shuffled within the rounds


def resumed(run_dir: Path) -> Selection:
    last = latest_attempts(run_dir)
    return Selection(skip=set(last), attempts={k: r["attempt"] for k, r in last.items()},
                     recorded=last)


def test_a_resumed_run_goes_on_from_the_journals_values(run_dir: Path) -> None:
    text = SUITE.format(pages=QUIET)
    plan = make_plan(parse_suite(text, run_dir / "suite.yaml").suite)
    first = {c.key for c in list(plan.cells())[:4]}  # the warm-up and 3 measured trials
    execute(run_dir, text, FakeBackend(), Selection(only=first))
    backend = FakeBackend()
    rows = execute(run_dir, text, backend, resumed(run_dir))
    assert len(backend.target.ran) == 3  # 3 more make the 6 values the interval needs
    assert rows[6]["info"]["stopped"] == "precision" and rows[6]["info"]["n"] == 6
    assert [r["outcome"] for r in rows] == ["ok"] * 7 + ["skipped"] * 6


def test_a_run_killed_after_its_target_was_met_resumes_without_a_guest(run_dir: Path) -> None:
    text = SUITE.format(pages=QUIET)
    plan = make_plan(parse_suite(text, run_dir / "suite.yaml").suite)
    execute(run_dir, text, FakeBackend(), Selection(only={c.key for c in list(plan.cells())[:7]}))
    backend = FakeBackend()
    rows = execute(run_dir, text, backend, resumed(run_dir))
    assert backend.opened == 0
    assert [r["outcome"] for r in rows] == ["ok"] * 7 + ["skipped"] * 6
    assert rows[-1]["reason"].startswith("precision target met after 6 trials")


def test_the_relative_halfwidth_is_the_exact_intervals() -> None:
    assert relative_halfwidth([10.0] * 5) is None  # 5 values reach 93.75 %, not 95 %
    assert relative_halfwidth([9.0, 10, 10, 10, 10, 11]) == pytest.approx(0.1)
    assert relative_halfwidth([0.0] * 8) is None  # no relative width around a zero median


def test_every_kinds_primary_metric_is_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "suite.md").read_text()
    section = " ".join(text[text.index("### Precision targets"):].split())
    for kind in KINDS.values():  # e.g. "`fork_us` (fork-dirty, hugepage)"
        assert re.search(rf"`{kind.primary_metric}` \([^)]*\b{kind.name}\b", section), kind.name
