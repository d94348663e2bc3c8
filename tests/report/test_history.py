"""History: a persistent step is found where it starts; a one-night spike is not a step."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from orchestrator import results
from orchestrator.history import steps
from tests.report.conftest import make_run, noisy


def nights(tmp_path: Path, factors: list[float]) -> pd.DataFrame:
    runs = [make_run(tmp_path, f"n{i:02d}", noisy(100 + i, sigma=0.04, slow_cell="c-large",
                                                   factor=f), trials=8, started=1e9 + i * 86400)
            for i, f in enumerate(factors)]
    return pd.concat([results.load(r).trials for r in runs], ignore_index=True)


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
