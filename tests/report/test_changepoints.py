"""Calibration on the recorded A/A series (tests/fixtures/aa-native: 30 real runs of an
unchanged suite, back to back on one of these machines): no change point at all, and planted
steps found as often as bench/bench_changepoints.py measures (figures in docs/results.md).

The recorded series are noisy even after the host factor: each cell runs for well under a
second, so a neighbour's load hits cells of one run differently (the metrics of one cell move
together, r 0.9-0.98; of different cells, r 0.3-0.8), and a run's median moves 6-21 % (sd of
the log) from run to run, 1.6-3 times what its own trials' spread allows. Found at its very run
(in 30 runs, p < 0.001) needs a step of about 2.5 sd: 20 % is found there on the quiet
(mprotect) series, not on the fork ones; 10 % on none (it needs sd <= 0.038, the quietest has
0.061). This test states it rather than hiding it; on series with 1-3 % noise (test_history.py)
10 % and 20 % steps are found at their run. Deterministic: no live measurement, no timing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench import bench_changepoints as bench
from orchestrator.analysis import changepoints
from orchestrator.store import reader


@pytest.fixture(scope="module")
def runs() -> list[reader.RunTables]:
    return bench.recorded_runs()


@pytest.fixture(scope="module")
def values(runs: list[reader.RunTables]) -> pd.DataFrame:
    return bench.recorded_values(runs)


@pytest.fixture(scope="module")
def noise(runs: list[reader.RunTables], values: pd.DataFrame) -> dict[bench.Key, bench.Noise]:
    return {n.key: n for n in bench.noise(runs, values)}


def test_the_recorded_a_a_series_has_no_change_point(runs: list[reader.RunTables]) -> None:
    assert len(runs) == 30
    found, platforms = changepoints.change_points(runs)
    assert found == [] and platforms == []


def test_without_the_host_factor_the_a_a_series_would_page_people(
        runs: list[reader.RunTables]) -> None:
    """Why the host factor: the raw run medians have real level shifts (the machine's load)."""
    values = changepoints.run_values(runs).sort_values("order")
    raw = sum(len(changepoints.detect(rows["median"].tolist()))
              for _, rows in values.groupby(["cell_id", "metric"]))
    assert raw > 0


@pytest.mark.parametrize(("factor", "found", "within_one", "delay"), [
    (1.05, 0, 2, None), (1.10, 2, 3, 6.0), (1.20, 15, 21, 5.4), (1.30, 22, 25, 4.5)])
def test_planted_steps_are_found_as_often_as_measured(
        values: pd.DataFrame, factor: float, found: int, within_one: int,
        delay: float | None) -> None:
    """Detection at the planted run (out of 10 series x 3 positions = 30), then within one
    run, and the mean delay (runs after the step until the nightly showed it): 5 % 0/30
    (2/30); 10 % 2/30 (3/30), 6.0 runs; 20 % 15/30 (21/30), 5.4 runs; 30 % 22/30 (25/30),
    4.5 runs. (Host factor unscaled, as before the load sensitivity: 0, 0, 6 and 19 of 30.)
    Never a change point in another series (the planted one moves their host factor)."""
    result = bench.detection(values, factor)
    assert (result.planted, result.exact, result.near) == (30, found, within_one)
    assert result.elsewhere == 0 and all(d >= 1 for d in result.delays)
    if delay is not None:
        assert result.mean_delay == pytest.approx(delay, abs=0.05)


def test_the_load_sensitivity_takes_the_host_factor_at_its_strength_per_series(
        noise: dict[bench.Key, bench.Noise]) -> None:
    """mprotect times follow the other cells' load at a third to two thirds of its size, fork
    times at 1 to 1.8 times: scaled so, the noise left drops (most for mprotect)."""
    mprotect = [n for k, n in noise.items() if not k[1].startswith("fork")]
    fork = [n for k, n in noise.items() if k[1].startswith("fork")]
    assert all(0.3 < n.sensitivity < 0.75 for n in mprotect)
    assert all(0.95 < n.sensitivity < 2.0 for n in fork)
    assert all(n.adjusted <= n.unscaled + 1e-9 for n in noise.values())
    assert all(n.adjusted > 1.5 * n.within for n in noise.values())  # the run, not the trials


def test_a_step_is_found_at_its_run_where_the_noise_allows_it(
        values: pd.DataFrame, noise: dict[bench.Key, bench.Noise]) -> None:
    """Where a step is >= 2 sd of the series' adjusted noise (white noise: 60 % found at the
    run, 2.5 sd 78 %): 20 % is, on the six mprotect series, 14 of 18 times at its run and
    17 of 18 within one run; on the fork series (1 sd) 1 of 12. A 10 % step is >= 2 sd on no
    recorded series: there it is noise."""
    quiet = [k for k, n in noise.items() if n.step_ratio(1.20) >= 2]
    loud = [k for k in noise if k not in quiet]
    assert sorted({m for _, m in quiet}) == ["mprotect_ro_ns", "mprotect_rw_ns",
                                             "prot_fault_ns"] and len(quiet) == 6
    found, rest = bench.detection(values, 1.20, quiet), bench.detection(values, 1.20, loud)
    assert (found.planted, found.exact, found.near) == (18, 14, 17)
    assert (rest.planted, rest.exact) == (12, 1)
    assert not [k for k, n in noise.items() if n.step_ratio(1.10) >= 2]


def test_a_big_step_in_one_cell_is_a_change_point_of_that_cell_only(
        runs: list[reader.RunTables]) -> None:
    cell, metric = "4807e33ff73c1b2a", "mprotect_rw_ns"
    slowed = []
    for i, r in enumerate(runs):
        hit = (r.trials["cell_id"] == cell) & (r.trials["metric"] == metric) & (i >= 15)
        trials = r.trials.assign(value=r.trials["value"].where(~hit, r.trials["value"] * 1.5))
        slowed.append(reader.RunTables(r.path, r.manifest, trials, r.events))
    found, _ = changepoints.change_points(slowed)
    assert {(c.cell_id, c.metric) for c in found} == {(cell, metric)}
    [cp] = found
    assert cp.at_run == runs[15].manifest["run_id"] and cp.regression and cp.confirmed


@pytest.fixture(scope="module")
def interleaved() -> list[reader.RunTables]:
    return bench.recorded_runs(bench.INTERLEAVED)


def test_the_interleaved_a_a_series_has_no_change_point_through_a_machine_wide_shift(
        interleaved: list[reader.RunTables]) -> None:
    """The same suite with `order: interleaved` (each cell's trials spread over the whole run),
    30 runs: the machine itself sped up by about a fifth from run 11 on (every cell at once);
    that is host load, not a change of any cell, and no change point is raised."""
    assert len(interleaved) == 30
    values = bench.recorded_values(interleaved)
    raw = values.groupby("order")["median"].apply(lambda m: float(np.exp(np.log(m).mean())))
    assert raw.iloc[12:].mean() < 0.9 * raw.iloc[:10].mean()  # the shift is in the data
    found, platforms = changepoints.change_points(interleaved)
    assert found == [] and platforms == []


def test_interleaving_leaves_the_host_factor_less_noise_to_explain(
        runs: list[reader.RunTables], interleaved: list[reader.RunTables]) -> None:
    """Why nightly suites should interleave: a burst of load then reaches every cell of a run
    alike, so the host factor removes it. Host-adjusted sd of the mprotect series: 0.061-0.083
    in the contiguous recording, 0.026-0.054 interleaved."""
    def mprotect_noise(recorded: list[reader.RunTables]) -> list[float]:
        values = bench.recorded_values(recorded)
        return [n.adjusted for n in bench.noise(recorded, values) if "mprotect" in n.key[1]
                or n.key[1] == "prot_fault_ns"]

    contiguous, spread = mprotect_noise(runs), mprotect_noise(interleaved)
    assert len(spread) == len(contiguous) == 6
    assert max(spread) < min(contiguous)
