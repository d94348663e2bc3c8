"""Figures and tables show only what was measured, with the intervals they claim (#15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from orchestrator.analysis import plots
from orchestrator.analysis.report import write_report
from orchestrator.analysis.stats import mode_ratios, summary, unmeasured
from orchestrator.store import reader
from tests.report.conftest import make_run, noisy


def fork_table() -> pd.DataFrame:
    """fork_us over pages x ptes_per_table, two modes: the PTE density effect is large."""
    rows = []
    for mode, factor in (("tdp", 1.0), ("shadow", 1.6)):
        for per_table, density_cost in ((512, 1.0), (4, 9.0)):
            for pages in (1280, 12800, 128000):
                median = pages * 0.06 * density_cost * factor
                rows.append({"paging_mode": mode, "guest": "g", "workload": "fork",
                             "metric": "fork_us", "unit": "us", "pages": pages,
                             "ptes_per_table": per_table, "median": median,
                             "ci_low": median * 0.95, "ci_high": median * 1.05})
    return pd.DataFrame(rows)


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures metric_plots would save, kept open for inspection."""
    figures: list[Figure] = []

    def keep(fig: Figure, out_dir: Path, stem: str) -> Path:
        figures.append(fig)
        return out_dir / f"{stem}.png"

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_a_line_per_setting_of_the_other_swept_parameter(drawn: list[Figure],
                                                         tmp_path: Path) -> None:
    plots.metric_plots(fork_table(), ["pages", "ptes_per_table"], tmp_path)
    ax = drawn[0].axes[0]
    legend = ax.get_legend()
    assert legend is not None
    labels = sorted(t.get_text() for t in legend.get_texts())
    assert labels == ["shadow (g) ptes_per_table=4", "shadow (g) ptes_per_table=512",
                      "tdp (g) ptes_per_table=4", "tdp (g) ptes_per_table=512"]
    # every drawn point is a measured cell: nothing between 512 and 4 PTEs per table is drawn
    drawn_y = {round(float(y), 3) for bars in ax.containers
               if isinstance(bars, ErrorbarContainer)
               for y in np.asarray(bars.lines[0].get_ydata(), dtype=float)}  # not the caps
    measured = {round(float(v), 3) for v in fork_table()["median"]}
    assert drawn_y <= measured


def test_whole_region_is_drawn_at_its_size() -> None:
    rows = pd.DataFrame({"range_pages": [16, 256, 0], "pages": [4096, 4096, 4096]})
    assert list(plots.x_values(rows, "range_pages")) == [16.0, 256.0, 4096.0]


def test_bars_carry_their_intervals_and_missing_points_say_why(drawn: list[Figure],
                                                               tmp_path: Path) -> None:
    table = pd.DataFrame({
        "paging_mode": ["tdp", "tdp"], "guest": ["g", "g"], "workload": ["fault"] * 2,
        "metric": ["ns_per_page"] * 2, "unit": ["ns"] * 2, "populate": ["none", "madvise"],
        "median": [900.0, 300.0], "ci_low": [850.0, 280.0], "ci_high": [990.0, 330.0]})
    missing = pd.DataFrame({"workload": ["fault"], "paging_requested": ["shadow"],
                            "guest": ["g"], "populate": ["none"], "outcomes": ["5 skipped"],
                            "reason": ["no KVM here"]})
    plots.metric_plots(table, ["populate"], tmp_path, missing)
    fig = drawn[0]
    errorbars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    low, high = errorbars[0].lines[1]  # the caps: the interval is drawn
    assert sorted(np.asarray(low.get_ydata(), dtype=float).round(1)) == [280.0, 850.0]
    assert sorted(np.asarray(high.get_ydata(), dtype=float).round(1)) == [330.0, 990.0]
    notes = " ".join(t.get_text() for t in fig.texts)
    assert "not measured: shadow/g populate=none: no KVM here" in notes


def test_summary_intervals_say_their_level(tmp_path: Path) -> None:
    five = reader.load(make_run(tmp_path, "a", noisy(1), trials=5)).trials
    twelve = reader.load(make_run(tmp_path, "b", noisy(1), trials=12)).trials
    assert set(summary(five, ["pages"])["ci_level"].round(4)) == {0.9375}
    assert (summary(twelve, ["pages"])["ci_level"] >= 0.95).all()


def test_mode_ratios_carry_an_interval(tmp_path: Path) -> None:
    tdp = reader.load(make_run(tmp_path, "a", noisy(1), mode="tdp")).trials
    shadow = reader.load(make_run(tmp_path, "b", noisy(2, scale=1.5), mode="shadow")).trials
    ratios = mode_ratios(pd.concat([tdp, shadow]), ["pages"])
    fork = ratios[(ratios["metric"] == "fork_us") & (ratios["ratio"] == "shadow/tdp")]
    assert len(fork) == 2  # one per point, never pooled over pages
    assert ((fork["ci_low"] < 1.5) & (1.5 < fork["ci_high"])).all()
    assert (fork["n_num"] == 12).all() and (fork["n_den"] == 12).all()


def test_points_without_measurement_are_listed_with_why(tmp_path: Path) -> None:
    run = make_run(tmp_path, "a", noisy(1), failing=frozenset({"c-large"}))
    missing = unmeasured(reader.load(run).trials, ["pages"])
    assert missing[["paging_requested", "pages", "outcomes", "reason"]].to_dict("records") == [
        {"paging_requested": "tdp", "pages": 128000, "outcomes": "12 error",
         "reason": "guest lost"}]
    page = write_report([run], tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Not measured:" in markdown and "guest lost" in markdown
    assert "exact binomial order-statistic interval" in markdown
    assert "bootstrap CI of the median" not in page.read_text()


def test_a_count_that_stayed_zero_gets_a_linear_axis(drawn: list[Figure], tmp_path: Path,
                                                     recwarn: pytest.WarningsRecorder) -> None:
    """Log x over a decade, but a log y of nothing but zeros is an empty figure and a
    warning on the user's terminal (seen: events never counted in a nested run)."""
    zeros = fork_table().query("ptes_per_table == 512").assign(
        metric="host.kvm.kvm_exit", unit="events/trial", median=0.0, ci_low=0.0, ci_high=0.0)
    plots.metric_plots(zeros, ["pages"], tmp_path)
    [figure] = drawn
    axes = figure.axes[0]
    assert (axes.get_xscale(), axes.get_yscale()) == ("log", "linear")
    assert not [w for w in recwarn if "log-scaled" in str(w.message)]
