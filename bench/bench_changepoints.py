"""Change-point detection: calibration on the recorded A/A series, and its cost over a year.

    .venv/bin/python -m bench.bench_changepoints [--results DIR] [--suites 5 --nights 365]

Calibration (tests/report/test_changepoints.py asserts on the same figures): a recorded A/A
series (default tests/fixtures/aa-native-wide: 30 real runs of an unchanged suite of 6 cells,
interleaved, 30 trials a cell, back to back on one of these machines; --results picks another)
must give no change point that alerts; then each series in turn gets a step of 5, 10, 20
and 30 % planted in its run medians from a known run on (the host factors and load
sensitivities then made again, as the nightly does), and the script prints how often the change
point is found at that very run (and within one run), its delay: how many runs after the step
it took to be found, re-running the detector night by night as the nightly does, and any
change point the step caused in the other series. Beside it: each series' noise (sd of the
log run medians raw, after the host factor unscaled and scaled, and the standard error of one
run's median from its own trials), and how often a step of so many sd is found at its run in
white noise, the yardstick for what the recorded noise allows.

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
from orchestrator.analysis.stats import measured
from orchestrator.store import reader

RECORDED = Path(__file__).parent.parent / "tests" / "fixtures" / "aa-native"
# the same suite with `order: interleaved`, 30 runs recorded back to back in stop 26
INTERLEAVED = RECORDED.with_name("aa-native-interleaved")
# 6 cells (fork of 1280/8000/32000 pages, mprotect of 16/256 pages/whole), 30 trials a cell,
# interleaved, 30 runs back to back (stop 27): the calibration the closing note quotes
WIDE = RECORDED.with_name("aa-native-wide")
ALLOWS = 2.5  # a step this many sd of a series' noise is found at its run in white noise 78 %
STEPS = (1.05, 1.10, 1.20, 1.30)
AT = (10, 15, 20)  # planted from these runs on (0-based) in the 30-run series
Key = tuple[str, str]  # (cell, metric)


@dataclass(frozen=True)
class Detection:
    factor: float
    planted: int  # series x positions
    exact: int  # found at the planted run
    near: int  # found within one run of it
    delays: tuple[int, ...]  # runs after the step until it was found (exact), per hit
    elsewhere: int  # change points in the other, unchanged series meanwhile
    alerted: int  # found at the planted run and paging (a confirmed regression, not contradicted)
    alerts_elsewhere: int  # alerts in the other series

    @property
    def rate(self) -> float:
        return self.exact / self.planted

    @property
    def mean_delay(self) -> float:
        return float(np.mean(self.delays)) if self.delays else float("nan")


@dataclass(frozen=True)
class Noise:
    """One series' noise, in log units (0.05 ~ 5 %)."""
    key: Key
    sensitivity: float  # its load sensitivity (the scale of the host factor)
    raw: float  # sd of the log run medians
    unscaled: float  # sd after the host factor taken as is (sensitivity 1)
    adjusted: float  # sd after the scaled host factor: what the detector sees
    within: float  # the standard error of one run's median from its own trials

    def step_ratio(self, factor: float) -> float:
        return float(np.log(factor)) / self.adjusted


def recorded_runs(where: Path = RECORDED) -> list[reader.RunTables]:
    return [reader.load(p, quiet=True) for p in sorted(where.iterdir()) if p.is_dir()]


def recorded_values(runs: list[reader.RunTables]) -> pd.DataFrame:
    return changepoints.run_values(runs).sort_values(["order", "cell_id", "metric"])


def keys(values: pd.DataFrame) -> list[Key]:
    return sorted({(str(c), str(m)) for c, m in zip(values["cell_id"], values["metric"],
                                                     strict=True)})


def _of(values: pd.DataFrame, key: Key) -> pd.Series:
    return (values["cell_id"] == key[0]) & (values["metric"] == key[1])


def adjusted(values: pd.DataFrame, key: Key) -> NDArray[Any]:
    """The series the detector sees for `key`: host-adjusted log medians in run order."""
    logs = changepoints.host_adjusted(values)
    return logs[_of(values, key)].to_numpy(float)


def planted(values: pd.DataFrame, key: Key, at: int, factor: float) -> pd.DataFrame:
    """The runs with `key`'s medians multiplied by `factor` from its run `at` on (0-based):
    the host factors, load sensitivity included, are then made again, as the nightly does."""
    orders = sorted(values["order"].unique())
    hit = _of(values, key) & (values["order"] >= orders[at])
    out = values.copy()
    for column in ("median", "low", "high"):
        out.loc[hit, column] = out.loc[hit, column] * factor
    return out


def found_at(values: pd.DataFrame, key: Key) -> list[int]:
    return [i for i, _ in changepoints.detect_robust(adjusted(values, key))]


def found_elsewhere(values: pd.DataFrame, key: Key) -> int:
    logs = changepoints.host_adjusted(values)  # once for all the series
    return sum(len(changepoints.detect_robust(logs[_of(values, other)].to_numpy(float)))
               for other in keys(values) if other != key)


def delay(values: pd.DataFrame, key: Key, at: int) -> int | None:
    """Runs after `at` the nightly needed before the change point showed at `at`."""
    orders = sorted(values["order"].unique())
    for seen in range(at + 1, len(orders) + 1):
        if at in found_at(values[values["order"] < orders[seen - 1] + 1], key):
            return seen - at
    return None


def detection(values: pd.DataFrame, factor: float, only: list[Key] | None = None
              ) -> Detection:
    """Each series of `only` (default all) in turn gets the step at each of `AT`."""
    exact = near = elsewhere = alerted = alerts_elsewhere = 0
    delays = []
    series = keys(values) if only is None else only
    run_ids = values.drop_duplicates("order").sort_values("order")["run_id"].tolist()
    for key in series:
        for at in AT:
            stepped = planted(values, key, at, factor)
            hits = found_at(stepped, key)
            exact += at in hits
            near += any(abs(h - at) <= 1 for h in hits)
            elsewhere += found_elsewhere(stepped, key)
            if at in hits:
                delays.append(delay(stepped, key, at) or 0)
            for cp in changepoints.change_points_of(stepped)[0]:
                mine = (cp.cell_id, cp.metric) == key
                alerted += mine and cp.at_run == run_ids[at] and cp.alerts
                alerts_elsewhere += not mine and cp.alerts
    return Detection(factor, len(series) * len(AT), exact, near, tuple(delays), elsewhere,
                     alerted, alerts_elsewhere)


def where_noise_allows(figures: list[Noise], factor: float) -> tuple[list[Key], list[Key]]:
    """The series on which a step of `factor` is at least `ALLOWS` sd of their noise, and the
    rest."""
    quiet = [n.key for n in figures if n.step_ratio(factor) >= ALLOWS]
    return quiet, [n.key for n in figures if n.key not in quiet]


def noise(runs: list[reader.RunTables], values: pd.DataFrame) -> list[Noise]:
    """Per series: how much the run medians move, before and after the host factor, beside
    how much a run's median could move from its own trials' spread alone."""
    logs = changepoints.host_adjusted(values)
    unscaled = _unscaled(values)
    trials = measured(pd.concat([r.trials for r in runs], ignore_index=True))
    out = []
    for key in keys(values):
        rows = _of(values, key)
        raw = np.log(values.loc[rows, "median"].to_numpy(float))
        factor = raw - unscaled[rows].to_numpy(float)
        sensitivity = changepoints.load_sensitivity(pd.Series(raw - np.median(raw)),
                                                    pd.Series(factor))
        out.append(Noise(key, sensitivity, float(np.std(raw)), float(np.std(unscaled[rows])),
                         float(np.std(logs[rows])), _within(trials, key)))
    return out


def _unscaled(values: pd.DataFrame) -> pd.Series:
    """host_adjusted() as it was before the load sensitivity: every series' scale 1."""
    saved = changepoints.MIN_FIT_RUNS
    changepoints.MIN_FIT_RUNS = 10**9
    try:
        return changepoints.host_adjusted(values)
    finally:
        changepoints.MIN_FIT_RUNS = saved


def _within(trials: pd.DataFrame, key: Key) -> float:
    """Median over runs of the standard error of a run's median (1.25 sd / sqrt(n))."""
    mine = trials[(trials["cell_id"] == key[0]) & (trials["metric"] == key[1])]
    per_run = np.log(mine["value"]).groupby(mine["run_id"])
    return float(np.median(1.2533 * per_run.std() / np.sqrt(per_run.size())))


def synthetic_rate(ratio: float, runs: int = 30, repeats: int = 40) -> tuple[int, int]:
    """How often a step of `ratio` sd in white Gaussian noise is found at its run: what the
    recorded series' noise is measured against (seeded: the same figures every time)."""
    rng = np.random.default_rng(20)
    exact = 0
    for _ in range(repeats):
        for at in AT:
            logs = rng.normal(0.0, 0.05, runs)
            logs[at:] += 0.05 * ratio
            exact += at in [i for i, _ in changepoints.detect([float(x) for x in np.exp(logs)])]
    return exact, repeats * len(AT)


def year_of_nights(runs: list[reader.RunTables], nights: int, seed: int) -> Iterator[
        reader.RunTables]:
    """`nights` runs drawn from the recorded ones (whole runs, so their noise is real)."""
    rng = np.random.default_rng(seed)
    for night in range(nights):
        run = runs[int(rng.integers(len(runs)))]
        manifest = {**run.manifest, "run_id": f"night-{night:04d}"}
        yield reader.RunTables(run.path, manifest, run.trials.assign(run_id=manifest["run_id"]),
                               pd.DataFrame())


def print_noise(figures: list[Noise]) -> None:
    print("series (cell/metric)          sens.  sd raw  sd adj(1)  sd adj  run-median se"
          "  10%/sd  20%/sd")
    for n in figures:
        print(f"{n.key[0][:8]}/{n.key[1]:<20} {n.sensitivity:5.2f}  {n.raw:6.3f}  "
              f"{n.unscaled:9.3f}  {n.adjusted:6.3f}  {n.within:13.3f}  "
              f"{n.step_ratio(1.10):6.1f}  {n.step_ratio(1.20):6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=WIDE)
    parser.add_argument("--suites", type=int, default=5)
    parser.add_argument("--nights", type=int, default=365)
    args = parser.parse_args()
    runs = recorded_runs(args.results)
    values = recorded_values(runs)
    found = changepoints.change_points(runs)[0]
    print(f"A/A: {len(runs)} runs, {len(keys(values))} series: {len(found)} change point(s), "
          f"{sum(c.alerts for c in found)} alert(s) (false alarms)")
    figures = noise(runs, values)
    print_noise(figures)
    for factor in STEPS:
        d = detection(values, factor)
        print(f"step +{factor - 1:.0%}: found at the run {d.exact}/{d.planted} "
              f"({d.rate:.0%}), within one run {d.near}/{d.planted}; delay "
              f"{d.mean_delay:.1f} runs (mean), max {max(d.delays, default=0)}; "
              f"{d.elsewhere} change point(s) in unchanged series; alerts at the run "
              f"{d.alerted}, elsewhere {d.alerts_elsewhere}")
        quiet, _ = where_noise_allows(figures, factor)
        if quiet:
            q = detection(values, factor, quiet)
            print(f"  on the {len(quiet)} series where it is >= {ALLOWS} sd: found at the run "
                  f"{q.exact}/{q.planted}, within one run {q.near}/{q.planted}")
    for ratio in (1.0, 1.5, 2.0, 2.5, 3.0):
        exact, planted_ = synthetic_rate(ratio)
        print(f"white noise, step of {ratio} sd: found at the run {exact}/{planted_}")
    started = time.perf_counter()
    for suite in range(args.suites):  # --suites 0: calibration only
        changepoints.change_points(list(year_of_nights(runs, args.nights, seed=suite)))
    spent = time.perf_counter() - started
    print(f"{args.suites} suites x {args.nights} nights x {len(keys(values))} series: "
          f"{spent:.1f}s ({spent / max(args.suites, 1):.2f}s a suite)")


if __name__ == "__main__":
    main()
