"""Workload adapters: argv built exactly, every kind of output read honestly."""

from __future__ import annotations

import json
import shutil

import pytest

from orchestrator import proc
from orchestrator.model import Outcome
from orchestrator.workloads import adapters


def completed(rc: int, stdout: str = "", stderr: str = "") -> proc.Completed:
    return proc.Completed(("x",), rc, stdout, stderr)


def trial_line(**metrics: float) -> str:
    return json.dumps({"type": "trial", "trial": 0, "warmup": False, "params": {},
                       "metrics": {k: {"value": v, "unit": "us"} for k, v in metrics.items()},
                       "rusage": {"minflt": 12, "majflt": 0}, "clock": "CLOCK_MONOTONIC",
                       "info": {"layout_ok": True}})


def test_argv_one_trial_flags_and_booleans() -> None:
    argv = adapters.command("fork-dirty", {"pages": 1280, "ptes_per_table": 4, "cow": True},
                             "/opt/w b/bin")
    assert argv == ["/opt/w b/bin/fork-dirty", "--trials", "1", "--warmup", "0", "--pages",
                    "1280", "--ptes-per-table", "4", "--cow"]
    off = adapters.command("fork-dirty", {"pages": 1, "cow": False}, "/b")
    assert "--cow" not in off


def test_argv_floats_keep_precision_and_strings_stay_one_argument() -> None:
    argv = adapters.command("dirtier", {"pages": 10, "duration": 0.1, "interval": 2.5}, "/b")
    assert argv[argv.index("--duration") + 1] == "0.1"
    odd = adapters.command("fault", {"pages": 1, "populate": "a b;rm -rf /"}, "/b")
    assert odd[-1] == "a b;rm -rf /"  # one argv element: no shell ever sees it


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="no adapter"):
        adapters.command("nope", {}, "/b")


def test_ok_trial_metrics_and_rusage() -> None:
    parsed = adapters.parse("fork-dirty", completed(0, "noise\n" + trial_line(fork_us=812.5)))
    assert parsed.outcome is Outcome.OK
    values = {m.name: (m.value, m.unit) for m in parsed.metrics}
    assert values["fork_us"] == (812.5, "us")
    assert values["rusage_minflt"] == (12.0, "count")
    assert parsed.info["layout_ok"] is True


def test_skip_failure_usage_and_garbage() -> None:
    skip = json.dumps({"type": "skip", "reason": "no free 2 MiB pages: 0 of 0"})
    assert adapters.parse("hugepage", completed(3, skip)) == adapters.ParsedTrial(
        Outcome.SKIPPED, "no free 2 MiB pages: 0 of 0")
    err = json.dumps({"type": "error", "reason": "layout: 3 page-table pages, expected 250"})
    failed = adapters.parse("fork-dirty", completed(1, err))
    assert failed.outcome is Outcome.FAILED and "expected 250" in failed.reason
    usage = adapters.parse("fork-dirty", completed(2, "", "fork-dirty: error: --pages needs"))
    assert usage.outcome is Outcome.ERROR and "--pages needs" in usage.reason
    garbage = adapters.parse("fork-dirty", completed(0, "Segmentation fault"))
    assert garbage.outcome is Outcome.ERROR and "got 0" in garbage.reason
    twice = adapters.parse("fork-dirty", completed(0, trial_line(a=1) + "\n" + trial_line(a=2)))
    assert twice.outcome is Outcome.ERROR


@pytest.mark.skipif(shutil.which("stress-ng") is None, reason="stress-ng not installed")
def test_stress_ng_for_real() -> None:
    argv = adapters.command("stress-ng", {"stressor": "fork", "workers": 1, "ops": 50}, "/x")
    parsed = adapters.parse("stress-ng", proc.run(argv, timeout=60, check=False))
    assert parsed.outcome is Outcome.OK, parsed.reason
    values = {m.name: m.value for m in parsed.metrics}
    assert values["bogo_ops"] >= 50 and values["bogo_ops_per_s"] > 0
    assert parsed.info["stress_ng_version"]


def test_stress_ng_failure_and_missing_metrics() -> None:
    assert adapters.parse("stress-ng", completed(1, "", "bad stressor")).outcome is Outcome.FAILED
    assert adapters.parse("stress-ng", completed(0, "---\n{}\n")).outcome is Outcome.ERROR


def test_a_pinned_workload_passes_its_cpu() -> None:
    argv = adapters.command("fork-dirty", {"pages": 1280}, "/b", cpu=1)
    assert argv[:7] == ["/b/fork-dirty", "--trials", "1", "--warmup", "0", "--cpu", "1"]
    tool = adapters.command("stress-ng", {"stressor": "fork", "workers": 1, "ops": 10}, "/b",
                            cpu=0)
    assert tool[:3] == ["taskset", "-c", "0"]
    assert "--cpu" not in adapters.command("fork-dirty", {"pages": 1280}, "/b")
