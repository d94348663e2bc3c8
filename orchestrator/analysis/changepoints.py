"""Change points over the runs of a suite: Apache Otava's E-Divisive with a Student t-test.

Each run is reduced to one robust value per cell and metric, its median (with the median's
exact interval); the runs of a suite on one host make a series per (host, cell, metric), in
run order. Series never mix machines: a change of host is another series, and a change of the
host's kernel, QEMU or accelerator (the run's *platform*) cuts the series into segments that are
searched on their own; the cut is itself reported as a platform change.

What the detector sees is the log of each run's median less the run's *host factor*: the median,
over the other cells of the same run, of how far each lay from its own typical level. On a
shared machine a neighbour's load moves every cell of a run together (the recorded A/A series,
tests/fixtures/aa-native*: 10-25 % swings, whole stretches of runs slower); a change in one
cell is not moved by it. The factor is scaled per series by how strongly that series follows
it (`load_sensitivity`: the same load slows a fork more than an mprotect). The price: a change
that moves every cell by the same factor is taken for host load (a kernel or QEMU update, which
is what usually does that, is a platform change). Found at its run, a step needs about 2.5
times the series' run-to-run sd left after the factor: on the wide A/A recording (6 cells
interleaved, 30 trials a cell) 10 % is that on the mprotect series, 20 % on most fork ones
(docs/results.md).

A change point's `ratio` is the step net of the host factor; its `before` and `after` are the
run medians as measured. When those moved the other way (the machine's own speed moved the
cell more than its sensitivity says), the change point is `contradicted`: shown, not paged.

Otava (`apache-otava`, the successor of MongoDB's performance CI's detector) splits windows of
`WINDOW` runs where the energy statistic peaks, keeps splits with p < 10 x `MAX_PVALUE`, then
merges away the weakest until each remaining one has p < `MAX_PVALUE` and a relative change
of the means above `MIN_MAGNITUDE`; `detect_robust` then asks the same of the medians.
Deterministic: the same runs always give the same change points.

A change point is *confirmed* once `CONFIRM_RUNS` runs lie after it (in its segment): before
that its p-value rests on too few runs to page anyone.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from orchestrator.analysis.intervals import median_interval, ratio_interval
from orchestrator.analysis.stats import higher_is_worse, measured, shown
from orchestrator.store import reader

WINDOW = 30
MAX_PVALUE = 0.001
MIN_MAGNITUDE = 0.05
CONFIRM_RUNS = 3
MIN_OTHER_CELLS = 2  # fewer other cells in a run: no host factor (the raw log median is used)
MIN_FIT_RUNS = 10  # fewer runs in a series: its load sensitivity is taken as 1
MAX_SENSITIVITY = 3.0
# bumped when the same runs may give other change points: caches of them (the site's) are redone
DETECTOR_VERSION = 2


@dataclass(frozen=True)
class ChangePoint:
    host: str
    cell_id: str
    metric: str
    unit: str
    params: dict[str, Any]
    last_before: str  # the run before the change
    at_run: str  # the first run after it
    before: float  # median of the segment's run medians before, as measured
    after: float  # and after (up to the next change point)
    ratio_low: float  # the 95 % interval of `ratio`
    ratio_high: float
    pvalue: float
    runs_after: int
    status: str = "open"  # "acknowledged" or "invalid" once triaged (analysis/triage.py)
    triage: dict[str, Any] = field(default_factory=dict)
    change: float = float("nan")  # the step net of the host's load (see `ratio`)

    @property
    def ratio(self) -> float:
        """The step the detector found: after / before of the host-adjusted run medians,
        what `regression` and the alert go by. It differs from `measured_ratio` when the
        machine's speed moved every cell at once: the interleaved A/A recording sped up by a
        fifth at its 11th run, and a +10 % step planted after it showed as x0.87 measured."""
        return self.change if np.isfinite(self.change) else self.measured_ratio

    @property
    def measured_ratio(self) -> float:
        return self.after / self.before if self.before else float("nan")

    @property
    def key(self) -> str:
        """Stable across reruns of the detector: what triage files refer to."""
        return f"{self.host}/{self.cell_id}/{self.metric}/{self.at_run}"

    @property
    def confirmed(self) -> bool:
        return self.runs_after >= CONFIRM_RUNS

    @property
    def regression(self) -> bool:
        """The worse way for its unit (a time up, a rate down); a count never."""
        worse = higher_is_worse(self.unit)
        return worse is not None and (self.ratio > 1) == worse

    @property
    def contradicted(self) -> bool:
        """The run medians as measured moved the other way, by more than `MIN_MAGNITUDE`:
        the machine's own speed moved this cell more than the host factor's scale says, and
        which way the cell itself went is not known. Shown, never paged: the interleaved A/A
        recording's 1280-page fork fell to x0.61 measured when the machine sped up (its other
        cells x0.56-0.86), which its scale of 3 made a +19 % step net of the load."""
        moved = abs(self.measured_ratio - 1) >= MIN_MAGNITUDE
        return moved and (self.measured_ratio > 1) != (self.ratio > 1)

    @property
    def open_regression(self) -> bool:
        """A regression nobody has triaged that the measured medians do not contradict: it
        alerts once confirmed (the nightly reruns its cell until then)."""
        return self.regression and self.status == "open" and not self.contradicted

    @property
    def alerts(self) -> bool:
        return self.open_regression and self.confirmed

    def magnitude(self) -> str:
        """How much, as `history` and the fleet site print it."""
        return (f"{self.before:.4g} -> {self.after:.4g} {self.unit} measured, "
                f"x{self.ratio:.3f} net of the host's load "
                f"(95% [{self.ratio_low:.3f}, {self.ratio_high:.3f}], p={self.pvalue:.2g})")

    def state(self, unconfirmed: str) -> str:
        """`unconfirmed` (each page says it its way) or confirmed, and a contradiction."""
        said = "confirmed" if self.confirmed else unconfirmed
        return said + (", the run medians moved the other way: no alert"
                       if self.contradicted else "")

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "host": self.host, "cell_id": self.cell_id,
                "metric": self.metric, "unit": self.unit, "params": self.params,
                "last_before": self.last_before, "at_run": self.at_run,
                "before": self.before, "after": self.after, "ratio": self.ratio,
                "ratio_interval": [self.ratio_low, self.ratio_high],
                "measured_ratio": self.measured_ratio, "contradicted": self.contradicted,
                "pvalue": self.pvalue,
                "runs_after": self.runs_after, "confirmed": self.confirmed,
                "regression": self.regression, "status": self.status, "triage": self.triage,
                "alert": self.alerts}


@dataclass(frozen=True)
class PlatformChange:
    host: str
    last_before: str
    at_run: str
    before: str
    after: str


def platform(manifest: dict[str, Any], accel: str) -> str:
    """What must not change inside a series: the host kernel, QEMU, the accelerator, and what
    carried the guests' trials (the shell loop's processes per trial moved shadow paging's
    fork costs 2-2.5x in the nested lab: a harness change, not the system's)."""
    host, tools = manifest.get("host"), manifest.get("tools")
    host = host if isinstance(host, dict) else {}
    tools = tools if isinstance(tools, dict) else {}
    qemu = str(tools.get("qemu", "")).splitlines()[0] if tools.get("qemu") else "-"
    said = f"kernel {host.get('kernel_release', '?')}, QEMU {qemu}, accel {accel}"
    guests = manifest.get("guests")
    if not isinstance(guests, dict) or not guests:
        return said  # native only: no runner
    runners = sorted({str(f.get("runner") or "-") for f in guests.values() if isinstance(f, dict)})
    return f"{said}, runner {'/'.join(runners)}"


def run_values(runs: Sequence[reader.RunTables]) -> pd.DataFrame:
    """One row per run, cell and metric with a direction (a time, a rate: not a count): host,
    platform, the median and its exact interval.

    One groupby over every run's trials at once (a year of a fleet is thousands of runs: a
    groupby per run cost more than reading them)."""
    used = [(order, run) for order, run in enumerate(runs) if not run.trials.empty]
    if not used:
        return pd.DataFrame()
    data = pd.concat([run.trials for _, run in used], ignore_index=True)
    sizes = [len(run.trials) for _, run in used]
    data["_order"] = np.repeat([order for order, _ in used], sizes)
    data["_part"] = np.repeat(np.arange(len(used)), sizes)
    data = measured(data)  # once for all runs: a filter per run copied every column each time
    names = [[p for p in run.manifest.get("param_columns", {}) if p in run.trials]
             for _, run in used]
    hosts = [str(h.get("hostname", "?")) if isinstance(h := run.manifest.get("host"), dict)
             else "?" for _, run in used]
    platforms = [run.manifest for _, run in used]
    directed = {u: higher_is_worse(u) is not None for u in data["unit"].unique()}
    data = data[data["unit"].map(directed).astype(bool)]  # counts: no better or worse
    keys = ["_order", "cell_id", "metric", "unit"]
    data = data.sort_values(keys, kind="stable")
    starts = np.flatnonzero(~data.duplicated(keys).to_numpy())
    values = data["value"].to_numpy(float)
    firsts = data.iloc[starts].to_dict("records")
    rows = []
    for first, begin, end in zip(firsts, starts, [*starts[1:], len(data)], strict=True):
        group = values[begin:end]
        interval = median_interval(group)
        part = int(first["_part"])
        rows.append({"host": hosts[part], "order": int(first["_order"]),
                     "run_id": runs[int(first["_order"])].manifest["run_id"],
                     "platform": platform(platforms[part], str(first.get("accel", "?"))),
                     "cell_id": str(first["cell_id"]), "metric": str(first["metric"]),
                     "unit": str(first["unit"]),
                     "params": json.dumps(_params(first, names[part]), default=str),
                     "median": float(np.median(group)), "low": interval.low,
                     "high": interval.high})
    return pd.DataFrame(rows)


def _params(row: dict[Hashable, Any], names: list[str]) -> dict[str, Any]:
    """A cell by what people recognise: mode, guest, workload and its parameters."""
    named = {"paging": row.get("paging_mode"), "guest": row.get("guest"),
             "workload": row.get("workload")}
    return {**named, **{n: shown(row[n]) for n in names if pd.notna(row[n])}}


def host_adjusted(values: pd.DataFrame) -> pd.Series:
    """Each row's log median less its run's host factor (leave its own cell out), scaled by
    how strongly its series follows that factor (`load_sensitivity`)."""
    out = pd.Series(np.nan, index=values.index)
    for _, rows in values.groupby(["host", "platform"]):
        logs = np.log(rows["median"].where(rows["median"] > 0))
        shift = logs - logs.groupby([rows["cell_id"], rows["metric"]]).transform("median")
        for cell in rows["cell_id"].unique():
            mine = rows["cell_id"] == cell
            factor = rows.loc[mine, "run_id"].map(_run_factor(rows[~mine], shift[~mine]))
            factor = factor.fillna(0.0)
            for index in rows[mine].groupby("metric").groups.values():
                scale = load_sensitivity(shift[index], factor[index])
                out[index] = logs[index] - scale * factor[index]
    return out


def _run_factor(others: pd.DataFrame, shift: pd.Series) -> pd.Series:
    """Per run: the median shift of the other cells (none with too few of them)."""
    enough = others.groupby("run_id")["cell_id"].nunique() >= MIN_OTHER_CELLS
    return shift.groupby(others["run_id"]).median().where(enough)


def load_sensitivity(shift: pd.Series, factor: pd.Series) -> float:
    """How far a series moves with its host factor: the larger of two least-squares slopes of
    its log shifts on the factor over its runs, one fitted on the levels and one on the
    run-to-run differences (recorded A/A: 0.4-1.1 for mprotect, 1-3 for fork times, which the
    same load slows more). Fewer than `MIN_FIT_RUNS` runs, or no load at all: 1.

    Why two fits: a step in this cell where the load has a trend tilts the levels' slope (a
    +10 % step from the run after a loaded stretch pulled an mprotect series' slope from 0.6
    to near 0, which left the load in and hid the step), while in the differences a step is
    one point among 29; but a load that builds up over several runs hardly shows in the
    differences, and the levels catch it. The larger of the two leaves less load behind; the
    price is that a step arriving together with a rise in load is partly taken for load.
    The factor itself comes from the other cells, where this cell's step is not."""
    y, f = shift.to_numpy(float), factor.to_numpy(float)
    ok = np.isfinite(y) & np.isfinite(f)
    y, f = y[ok], f[ok]
    if len(y) < MIN_FIT_RUNS or not np.any(f):
        return 1.0
    slopes = [_slope(y, f), _slope(np.diff(y), np.diff(f))]
    return float(np.clip(max(slopes), 0.0, MAX_SENSITIVITY))


def _slope(y: NDArray[np.float64], f: NDArray[np.float64]) -> float:
    """The least-squares slope of y on f through the origin (0 when f never moves)."""
    return float(y @ f / (f @ f)) if np.any(f) else 0.0


def detect(series: Sequence[float], min_magnitude: float = MIN_MAGNITUDE
           ) -> list[tuple[int, float]]:
    """Otava's change points of one series: (index of the first point after, p-value)."""
    from otava.analysis import compute_change_points  # scipy: only when detecting

    found, _ = compute_change_points(list(series), window_len=WINDOW,
                                     max_pvalue=MAX_PVALUE, min_magnitude=min_magnitude)
    return [(int(cp.index), float(cp.stats.pvalue)) for cp in found]


def detect_robust(adjusted: NDArray[np.float64], min_magnitude: float = MIN_MAGNITUDE
                  ) -> list[tuple[int, float]]:
    """detect() on a series' host-adjusted logs, keeping the change points whose step is at
    least `min_magnitude` between the medians of the runs on either side (up to the
    neighbouring change points), not only between their means, as Otava checks: one run or two
    far off must not carry a change. On the wide A/A recording a planted step elsewhere gave an
    mprotect series a +5.1 % change of the mean at p 0.0009 from its first six runs, two of
    them loaded; their median moved 1.8 %."""
    hits = detect([float(x) for x in np.exp(adjusted)], min_magnitude)
    bounds = [0, *(i for i, _ in hits), len(adjusted)]
    kept = []
    for n, (index, p) in enumerate(hits):
        before = np.median(adjusted[bounds[n]:index])
        after = np.median(adjusted[index:bounds[n + 2]])
        if abs(float(np.exp(after - before)) - 1) >= min_magnitude:
            kept.append((index, p))
    return kept


def change_points(runs: Sequence[reader.RunTables], min_magnitude: float = MIN_MAGNITUDE
                  ) -> tuple[list[ChangePoint], list[PlatformChange]]:
    """Every change point of the runs (one suite), newest first, and every platform change."""
    return change_points_of(run_values(runs), min_magnitude)


def change_points_of(values: pd.DataFrame, min_magnitude: float = MIN_MAGNITUDE
                     ) -> tuple[list[ChangePoint], list[PlatformChange]]:
    """change_points() from run_values() rows already made (the fleet site keeps them per run,
    so a new night does not reread a year of tables)."""
    if values.empty:
        return [], []
    values = values.assign(adjusted=host_adjusted(values)).sort_values("order")
    found: list[ChangePoint] = []
    for _, rows in values.groupby(["host", "platform", "cell_id", "metric", "unit"]):
        found += _series_points(rows.dropna(subset=["adjusted"]), min_magnitude)
    found.sort(key=lambda c: (_order(values, c.at_run), c.cell_id, c.metric), reverse=True)
    return found, platform_changes(values)


def _order(values: pd.DataFrame, run_id: str) -> int:
    return int(values.loc[values["run_id"] == run_id, "order"].iloc[0])


def _series_points(rows: pd.DataFrame, min_magnitude: float) -> list[ChangePoint]:
    if len(rows) < 2 * 2:
        return []
    medians, run_ids = rows["median"].to_numpy(float), list(rows["run_id"])
    adjusted = rows["adjusted"].to_numpy(float)
    hits = detect_robust(adjusted, min_magnitude)
    bounds = [0, *(i for i, _ in hits), len(rows)]
    first = rows.iloc[0]
    points = []
    for n, (index, p) in enumerate(hits):
        before, after = slice(bounds[n], index), slice(index, bounds[n + 2])
        net_before, net_after = np.exp(adjusted[before]), np.exp(adjusted[after])
        interval = ratio_interval(net_after, net_before)
        points.append(ChangePoint(
            str(first["host"]), str(first["cell_id"]), str(first["metric"]), str(first["unit"]),
            json.loads(first["params"]), run_ids[index - 1], run_ids[index],
            float(np.median(medians[before])), float(np.median(medians[after])),
            interval.low, interval.high, p, len(rows) - index,
            change=float(np.median(net_after) / np.median(net_before))))
    return points


def platform_changes(values: pd.DataFrame) -> list[PlatformChange]:
    """Where a host's platform changed between two of its runs, newest first."""
    changes = []
    for host, rows in values.groupby("host"):
        per_run = rows.drop_duplicates("run_id").sort_values("order")
        ids, kinds = list(per_run["run_id"]), [str(p) for p in per_run["platform"]]
        changes += [PlatformChange(str(host), ids[i - 1], ids[i], kinds[i - 1], kinds[i])
                    for i in range(1, len(ids)) if kinds[i] != kinds[i - 1]]
    return changes[::-1]


def add_threshold_option(cmd: Any) -> None:
    """`--threshold`, as every verb that finds change points takes it."""
    cmd.add_argument("--threshold", type=float, default=MIN_MAGNITUDE,
                     help="smallest relative change a change point may have "
                          f"(default {MIN_MAGNITUDE})")
