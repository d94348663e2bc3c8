"""History: change points per (host, cell, metric) series, newest first, triaged; the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.analysis import changepoints, triage
from orchestrator.analysis.history import history
from orchestrator.store import rundir
from tests.report.conftest import make_run, noisy

STEP_AT = 12


def nights(root: Path, factors: list[float], *, host: str = "lab1", start: int = 0,
           kernel: str = "6.1", runner: str | None = None) -> list[Path]:
    guests = {"guests": {"tdp/small": {"runner": runner}}} if runner else {}
    return [make_run(root, f"n{start + i:02d}", noisy(100 + start + i, sigma=0.03,
                                                       slow_cell="c-large", factor=f),
                     trials=8, started=1e9 + (start + i) * 86400,
                     manifest={"host": {"hostname": host, "kernel_release": kernel}, **guests})
            for i, f in enumerate(factors)]


def orchestrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args],
                          capture_output=True, text=True, timeout=120)


def history_json(root: Path) -> tuple[int, dict[str, Any]]:
    done = orchestrate("history", "nightly", "--json", "--results-dir", str(root))
    assert done.returncode in (0, 4), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize("factor", [1.10, 1.20])
def test_a_step_is_found_at_its_run_with_its_range_magnitude_and_p_value(
        tmp_path: Path, factor: float) -> None:
    runs = nights(tmp_path, [1.0] * STEP_AT + [factor] * 8)
    [cp] = [c for c in history(tmp_path, "nightly").change_points if c.metric == "fork_us"]
    assert cp.at_run.startswith(f"n{STEP_AT}") and cp.last_before.startswith(f"n{STEP_AT - 1}")
    assert (cp.host, cp.cell_id, str(cp.params["pages"])) == ("lab1", "tdp-c-large", "128000")
    assert cp.ratio_low < cp.ratio < cp.ratio_high and cp.ratio == pytest.approx(factor,
                                                                                 rel=0.03)
    assert cp.pvalue < changepoints.MAX_PVALUE and cp.runs_after == 8
    assert cp.confirmed and cp.regression and cp.alerts and len(runs) == 20


def test_noise_and_a_one_night_spike_are_not_change_points(tmp_path: Path) -> None:
    nights(tmp_path, [1.0, 1.01, 0.99, 1.0, 1.02, 1.6, 1.0, 0.98, 1.0, 1.01, 1.0, 0.99])
    assert history(tmp_path, "nightly").change_points == []


def test_a_step_with_too_few_runs_after_it_is_unconfirmed_and_does_not_alert(
        tmp_path: Path) -> None:
    nights(tmp_path, [1.0] * STEP_AT + [1.3] * 2)
    found = history(tmp_path, "nightly")
    [cp] = found.change_points
    assert cp.runs_after == 2 and not cp.confirmed and found.alerts == []


def test_hosts_are_never_mixed_and_a_kernel_update_cuts_the_series(tmp_path: Path) -> None:
    nights(tmp_path, [1.0] * 10, host="lab1")
    nights(tmp_path / "lab2", [1.3] * 10, host="lab2", start=10)  # another, slower machine
    nights(tmp_path, [1.3] * 10, host="lab1", start=20, kernel="6.8")  # lab1, new kernel
    found = history(tmp_path, "nightly")
    assert found.change_points == []  # each host's level is its own; a kernel is no regression
    [pc] = found.platform_changes
    assert (pc.host, pc.last_before[:3], pc.at_run[:3]) == ("lab1", "n09", "n20")
    assert "kernel 6.1" in pc.before and "kernel 6.8" in pc.after


def test_another_runner_in_the_guests_cuts_the_series(tmp_path: Path) -> None:
    """What carried the trials is part of the measured machine (shadow paging's fork moved
    2-2.5x with the harness's processes per trial): a change of it is a platform change."""
    nights(tmp_path, [1.0] * 10, runner="sh")
    nights(tmp_path, [0.5] * 10, start=10, runner="orch-runner")
    found = history(tmp_path, "nightly")
    assert found.change_points == []
    [pc] = found.platform_changes
    assert (pc.last_before[:3], pc.at_run[:3]) == ("n09", "n10")
    assert pc.before.endswith("runner sh") and pc.after.endswith("runner orch-runner")


def test_triage_is_a_file_in_the_results_root_honoured_by_history(tmp_path: Path) -> None:
    nights(tmp_path, [1.0] * STEP_AT + [1.2] * 6)
    empty = orchestrate("triage", "list", "--results-dir", str(tmp_path))
    assert empty.returncode == 0 and empty.stdout.startswith("no triage decisions in ")
    code, data = history_json(tmp_path)
    [cp] = data["change_points"]
    assert code == 4 and cp["alert"] and cp["status"] == "open" and data["alerts"] == 1
    done = orchestrate("triage", "ack", cp["key"], "--why", "new kernel", "--who", "ann",
                       "--results-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    [line] = (tmp_path / triage.FILE).read_text().splitlines()
    assert json.loads(line)["who"] == "ann"
    code, data = history_json(tmp_path)
    [cp] = data["change_points"]
    assert code == 0 and cp["status"] == "acknowledged" and cp["triage"]["why"] == "new kernel"
    listed = orchestrate("triage", "list", "--results-dir", str(tmp_path))
    assert "acknowledged" in listed.stdout and cp["key"] in listed.stdout and "ann" in listed.stdout
    orchestrate("triage", "reopen", cp["key"], "--why", "it was not the kernel",
                "--results-dir", str(tmp_path))
    assert history_json(tmp_path)[0] == 4


def test_triage_without_a_reason_is_bad_input(tmp_path: Path) -> None:
    done = orchestrate("triage", "invalid", "h/c/m/r", "--results-dir", str(tmp_path))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "--why" in done.stderr


def test_history_prints_change_points_newest_first_by_the_cells_parameters(
        tmp_path: Path) -> None:
    nights(tmp_path, [1.0] * 10 + [1.25] * 10 + [1.6] * 10)
    done = orchestrate("history", "nightly", "--results-dir", str(tmp_path))
    assert done.returncode == 4, done.stderr
    lines = [line for line in done.stdout.splitlines() if "->" in line]
    assert [line.split()[2][:3] for line in lines] == ["n20", "n10"]
    assert all("pages=128000" in line and "fork_us" in line and "regression, confirmed, open"
               in line for line in lines)
    assert "2 change point(s), 2 alert(s) over 30 runs" in done.stdout


def test_history_json_names_the_runs_and_warns_of_damaged_ones(tmp_path: Path) -> None:
    runs = nights(tmp_path, [1.0] * STEP_AT + [1.2] * 6)
    (runs[2] / rundir.MANIFEST).write_text('{"run_id": "n02", "suite_na')  # cut short
    done = orchestrate("history", "nightly", "--metric", "fork_us", "--json",
                       "--results-dir", str(tmp_path))
    data = json.loads(done.stdout)
    assert data["schema"] == "orchestrate.history/3" and data["metric"] == "fork_us"
    assert [r["path"] for r in data["runs"]] == [str(r.resolve()) for i, r in enumerate(runs)
                                                 if i != 2]
    assert str(runs[2] / rundir.MANIFEST) in done.stderr


def test_history_of_a_suite_without_runs_says_where_it_looked(tmp_path: Path) -> None:
    done = orchestrate("history", "nope", "--results-dir", str(tmp_path))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert str(tmp_path.resolve()) in line and "--results-dir" in line


def test_the_trend_has_a_panel_per_series_and_each_change_point_as_a_range(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from orchestrator.analysis import trend

    nights(tmp_path, [1.0] * STEP_AT + [1.2] * 6)
    found = history(tmp_path, "nightly")
    kept: list[Figure] = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: kept.append(fig))
    monkeypatch.setattr(plt, "close", lambda fig: None)
    trend.trend_plot(changepoints.run_values(found.runs), found.change_points,
                     found.platform_changes, tmp_path / "trend.png")
    panels = [ax for ax in kept[0].axes if ax.get_visible()]
    assert len(panels) == 2  # two cells, one timed metric each
    [stepped] = [ax for ax in panels if ax.patches]
    assert "pages=128000" in stepped.get_title() and stepped.get_ylabel() == "fork_us (us)"
    assert any("x1.2" in t.get_text() and "open" in t.get_text() for t in stepped.texts)
