"""History: a persistent step is found where it starts; a one-night spike is not a step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.analysis.history import steps
from orchestrator.store import reader, rundir
from tests.report.conftest import make_run, noisy


def nights(tmp_path: Path, factors: list[float]) -> pd.DataFrame:
    runs = [make_run(tmp_path, f"n{i:02d}", noisy(100 + i, sigma=0.04, slow_cell="c-large",
                                                   factor=f), trials=8, started=1e9 + i * 86400)
            for i, f in enumerate(factors)]
    return pd.concat([reader.load(r).trials for r in runs], ignore_index=True)


def test_a_persistent_step_is_detected_at_its_first_night(tmp_path: Path) -> None:
    trials = nights(tmp_path, [1, 1, 1, 1, 1, 1.25, 1.25, 1.25, 1.25])
    found = [s for s in steps(trials) if s.metric == "fork_us"]
    assert [s.cell_id for s in found] == ["tdp-c-large"]
    assert found[0].at_run.startswith("n05") and 1.15 < found[0].ratio < 1.35


def test_a_one_night_spike_is_not_a_step(tmp_path: Path) -> None:
    trials = nights(tmp_path, [1, 1, 1, 1, 1.6, 1, 1, 1, 1])
    assert [s for s in steps(trials) if s.metric == "fork_us"] == []


def test_noise_alone_is_not_a_step(tmp_path: Path) -> None:
    trials = nights(tmp_path, [1.0, 1.03, 0.98, 1.02, 0.97, 1.01, 1.0, 0.99])
    assert steps(trials) == []


def test_history_json_names_the_runs_and_the_step(tmp_path: Path) -> None:
    factors = [1, 1, 1, 1, 1, 1.25, 1.25, 1.25, 1.25]
    runs = [make_run(tmp_path, f"n{i:02d}", noisy(100 + i, sigma=0.04, slow_cell="c-large",
                                                  factor=f), trials=8, started=1e9 + i * 86400)
            for i, f in enumerate(factors)]
    (runs[2] / rundir.MANIFEST).write_text('{"run_id": "n02", "suite_na')  # cut short
    with (runs[3] / rundir.JOURNAL).open("a") as fh:
        fh.write("{not json\n")  # the journal is now newer than the tables, too
    later = (runs[3] / rundir.TRIALS).stat().st_mtime_ns + 10**10
    os.utime(runs[3] / rundir.JOURNAL, ns=(later, later))
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "history", "nightly",
                           "--metric", "fork_us", "--json", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stderr  # a time went up: a regression
    data = json.loads(done.stdout)
    assert data["schema"] == "orchestrate.history/1"
    assert (data["suite"], data["metric"], data["threshold"]) == ("nightly", "fork_us", 0.05)
    assert data["results_dir"] == str(tmp_path.resolve())
    assert [r["path"] for r in data["runs"]] == [str(r.resolve()) for i, r in enumerate(runs)
                                                 if i != 2]
    assert [r["unreadable_lines"] for r in data["runs"]][2] == 1
    [step] = data["steps"]
    assert step["cell_id"] == "tdp-c-large" and step["at_run"].startswith("n05")
    assert step["regression"] and 1.15 < step["ratio"] < 1.35 and data["regressions"] == 1
    assert str(runs[2] / rundir.MANIFEST) in done.stderr  # the damaged run, warned once
    assert "1 unreadable line(s) skipped: 17 (bad JSON)" in done.stderr


def test_history_of_a_suite_without_runs_says_where_it_looked(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "history", "nope",
                           "--results-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert str(tmp_path.resolve()) in line and "--results-dir" in line


def test_the_trend_has_dates_units_named_cells_a_step_range_and_noise_bands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from orchestrator.analysis import plots

    trials = nights(tmp_path, [1, 1, 1, 1, 1, 1.25, 1.25, 1.25, 1.25])
    trials = trials[trials["metric"] == "fork_us"]
    found = steps(trials)
    kept: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: kept.append(fig))
    monkeypatch.setattr(plt, "close", lambda fig: None)
    plots.trend_plot(trials, ["pages"], found, tmp_path / "trend.png")
    ax = kept[0].axes[0]
    assert ax.get_ylabel().startswith("fork_us (us)")
    assert isinstance(ax.xaxis.get_major_formatter(), mdates.AutoDateFormatter)
    legend = ax.get_legend()
    assert legend is not None
    assert sorted(t.get_text() for t in legend.get_texts()) == [
        "tdp/g fork pages=1280", "tdp/g fork pages=128000"]
    spans = [p for p in ax.patches if p.get_facecolor()[:3] == (0.5019607843137255,) * 3]
    assert len(spans) == 1  # the step, from the last night before it to its first night
    assert any("step x1.2" in t.get_text() for t in ax.texts)
    assert len(ax.patches) == 1 + 2  # and one noise band per cell
