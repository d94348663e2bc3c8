"""Change-point detection: calibration on the recorded A/A series, and its cost over a year.

    .venv/bin/python -m bench.bench_changepoints [--results DIR] [--suites 5 --nights 365]

Calibration (tests/report/test_changepoints.py asserts on the same figures): the recorded A/A
series (tests/fixtures/aa-native, 30 real runs of an unchanged suite on one of these
machines) must give no change point at all; then each series in turn gets a step of 5, 10, 20
and 30 % planted from a known run on (its host-adjusted values multiplied from that run on:
the detector sees exactly that), and the script prints how often the change point is found at
that very run (and within one run), and its delay: how many runs after the step it took to be
found, re-running the detector night by night as the nightly does.

Cost: a year of nights (one run a night) for 5 suites of as many series as the A/A suite has,
A/A noise resampled, timed end to end (run values from tables to change points) per suite.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from orchestrator.analysis import changepoints
from orchestrator.store import reader

RECORDED = Path(__file__).parent.parent / "tests" / "fixtures" / "aa-native"
STEPS = (1.05, 1.10, 1.20, 1.30)
AT = (10, 15, 20)  # planted from these runs on (0-based) in the 30-run series


@dataclass(frozen=True)
class Detection:
    factor: float
    planted: int  # series x positions
    exact: int  # found at the planted run
    near: int  # found within one run of it
    delays: tuple[int, ...]  # runs after the step until it was found (exact), per hit

    @property
    def rate(self) -> float:
        return self.exact / self.planted


def recorded_runs(where: Path = RECORDED) -> list[reader.RunTables]:
    return [reader.load(p, quiet=True) for p in sorted(where.iterdir()) if p.is_dir()]


def adjusted_series(runs: list[reader.RunTables]) -> dict[tuple[str, str], NDArray[Any]]:
    """(cell, metric) -> its host-adjusted log medians, in run order."""
    values = changepoints.run_values(runs)
    values = values.assign(adjusted=changepoints.host_adjusted(values)).sort_values("order")
    return {(str(c), str(m)): rows["adjusted"].to_numpy(float)
            for (c, m), rows in values.groupby(["cell_id", "metric"])}


def found_at(logs: NDArray[Any]) -> list[int]:
    return [i for i, _ in changepoints.detect(np.exp(logs).tolist())]


def planted(logs: NDArray[Any], at: int, factor: float) -> NDArray[Any]:
    out = logs.copy()
    out[at:] += np.log(factor)
    return out


def delay(logs: NDArray[Any], at: int) -> int | None:
    """Runs after `at` the nightly needed before the change point showed at `at`."""
    for seen in range(at + 1, len(logs) + 1):
        if at in found_at(logs[:seen]):
            return seen - at
    return None


def detection(series: dict[tuple[str, str], NDArray[Any]], factor: float) -> Detection:
    exact = near = 0
    delays = []
    for logs in series.values():
        for at in AT:
            hits = found_at(planted(logs, at, factor))
            exact += at in hits
            near += any(abs(h - at) <= 1 for h in hits)
            if at in hits:
                delays.append(delay(planted(logs, at, factor), at) or 0)
    return Detection(factor, len(series) * len(AT), exact, near, tuple(delays))


def false_alarms(runs: list[reader.RunTables]) -> int:
    return len(changepoints.change_points(runs)[0])


def year_of_nights(runs: list[reader.RunTables], nights: int, seed: int) -> Iterator[
        reader.RunTables]:
    """`nights` runs drawn from the recorded ones (whole runs, so their noise is real)."""
    rng = np.random.default_rng(seed)
    for night in range(nights):
        run = runs[int(rng.integers(len(runs)))]
        manifest = {**run.manifest, "run_id": f"night-{night:04d}"}
        yield reader.RunTables(run.path, manifest, run.trials.assign(run_id=manifest["run_id"]),
                               pd.DataFrame())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RECORDED)
    parser.add_argument("--suites", type=int, default=5)
    parser.add_argument("--nights", type=int, default=365)
    args = parser.parse_args()
    runs = recorded_runs(args.results)
    series = adjusted_series(runs)
    print(f"A/A: {len(runs)} runs, {len(series)} series: "
          f"{false_alarms(runs)} change point(s) (false alarms)")
    for factor in STEPS:
        d = detection(series, factor)
        mean_delay = np.mean(d.delays) if d.delays else float("nan")
        print(f"step +{factor - 1:.0%}: found at the run {d.exact}/{d.planted} "
              f"({d.rate:.0%}), within one run {d.near}/{d.planted}; delay "
              f"{mean_delay:.1f} runs (mean), max {max(d.delays, default=0)}")
    started = time.perf_counter()
    for suite in range(args.suites):
        changepoints.change_points(list(year_of_nights(runs, args.nights, seed=suite)))
    spent = time.perf_counter() - started
    print(f"{args.suites} suites x {args.nights} nights x {len(series)} series: "
          f"{spent:.1f}s ({spent / args.suites:.2f}s a suite)")


if __name__ == "__main__":
    main()
