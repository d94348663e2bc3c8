"""The report answers each workload's question in its own section, frames emulated numbers
honestly and sets several runs side by side (#16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orchestrator.analysis.questions import QUESTIONS
from orchestrator.analysis.report import write_report
from orchestrator.suite.kinds import KINDS
from tests.report.conftest import make_run, noisy


def report_md(runs: list[Path], out: Path) -> str:
    write_report([str(r) for r in runs], out)
    return (out / "report.md").read_text()


def test_every_kind_has_its_question() -> None:
    assert set(QUESTIONS) == set(KINDS)


def test_a_workload_section_opens_with_its_question_and_collapses_counters(
        tmp_path: Path) -> None:
    run = make_run(tmp_path, "a", noisy(1))
    text = report_md([run], tmp_path / "out")
    section = text[text.index("## fork (fork-dirty)"):]
    assert section.split("\n")[2].startswith("How does fork() latency grow")
    assert "![fork-fork_us-vs-pages](fork-fork_us-vs-pages.png)" in section
    timings = section[:section.index("### Counters")]
    assert "| fork_us |" in timings and "rusage_minflt" not in timings
    assert "rusage_minflt" in section[section.index("### Counters"):]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<details><summary>Counters" in page
    assert "<title>report: a-" in page and "Emulated" not in page


def test_tcg_rows_get_the_banner(tmp_path: Path) -> None:
    run = make_run(tmp_path, "a", noisy(1), mode="tdp", accel="tcg")
    text = report_md([run], tmp_path / "out")
    assert text.split("\n")[2].startswith("> **Emulated: some rows ran under TCG")


def test_two_runs_side_by_side_with_a_run_column_and_their_differences(
        tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1), manifest={
        "host": {"hostname": "lab1", "kernel_release": "6.1.0"}})
    b = make_run(tmp_path, "b", noisy(2), manifest={
        "host": {"hostname": "lab1", "kernel_release": "6.12.0"}})
    text = report_md([a, b], tmp_path / "out")
    assert "differ: host kernel: 6.1.0 vs 6.12.0" in text
    header = next(line for line in text.splitlines() if line.startswith("| paging_mode"))
    assert "| run_id |" in header


def test_a_captured_timeline_is_drawn_with_the_guest_to_host_gap(tmp_path: Path) -> None:
    import pandas as pd

    from orchestrator.store import reader

    run = make_run(tmp_path, "a", noisy(1))
    cell = reader.load(run).trials["cell_id"].iloc[0]
    (run / "captures").mkdir()
    pd.DataFrame({"side": ["host", "guest", "host", "guest", "host"],
                  "event": ["kvm:kvm_exit", "exceptions:page_fault_user", "kvm:kvm_exit",
                            "exceptions:page_fault_user", "kvm:kvm_page_fault"],
                  "tsc": pd.array([100, 1000, 1300, 5000, 5100], dtype="UInt64")}).to_parquet(
        run / "captures" / f"{cell}-1.timeline.parquet")
    text = report_md([run], tmp_path / "out")
    assert f"![{cell}-1-timeline]({cell}-1-timeline.png)" in text
    # guest 1000 -> host 1300 (300 ticks), guest 5000 -> host 5100 (100): median 200
    assert "Median gap from a guest event to the next host event: 200 TSC ticks." in text
    page = (tmp_path / "out" / "report.html").read_text()
    # the zoomable canvas's data: guest rows first, ticks from the first event, in time order
    assert ('data-timeline=\'{&quot;rows&quot;:[{&quot;side&quot;:&quot;guest&quot;,'
            '&quot;label&quot;:&quot;exceptions:page_fault_user&quot;,&quot;ticks&quot;:'
            '[900,4900]}') in page


def test_per_unit_costs_and_events_against_the_same_axis(tmp_path: Path) -> None:
    import pandas as pd

    from orchestrator.analysis.stats import event_table, per_unit, summary
    from orchestrator.store import reader

    trials = reader.load(make_run(tmp_path, "a", noisy(1), trials=6)).trials
    derived = summary(per_unit(trials), ["pages"])
    table = summary(trials, ["pages"])

    def median(frame: pd.DataFrame, metric: str, pages: int) -> float:
        return float(frame[(frame["metric"] == metric) & (frame["pages"] == pages)]
                     ["median"].iloc[0])

    fork = median(table, "fork_us", 1280)
    assert median(derived, "fork_ns_per_dirty_page", 1280) == fork * 1000 / 1280
    # 128,000 pages at 512 PTEs per page-table page: 250 page-table pages
    assert median(derived, "fork_us_per_pt_page", 128000) == \
        median(table, "fork_us", 128000) / 250
    cells = trials.drop_duplicates(["cell_id", "trial"])
    events = pd.DataFrame({"cell_id": cells["cell_id"], "trial": cells["trial"],
                           "attempt": cells["attempt"], "side": "host",
                           "event": "kvm:kvm_exit", "count": cells["pages"] / 10.0,
                           "available": True})
    counted = event_table(trials, events, ["pages"])
    assert set(counted["metric"]) == {"host.kvm.kvm_exit"}
    assert dict(zip(counted["pages"], counted["median"], strict=True)) == {1280: 128.0,
                                                                           128000: 12800.0}


def test_a_workload_with_nothing_swept_gets_its_phase_bars(tmp_path: Path) -> None:
    import pandas as pd

    from orchestrator.analysis.plots import unswept_plots

    table = pd.DataFrame({
        "paging_mode": ["tdp"] * 3 + ["shadow"] * 3, "guest": ["g"] * 6,
        "workload": ["log"] * 6, "unit": ["pages/s"] * 6,
        "metric": ["pages_per_s_off", "pages_per_s_on", "pages_per_s_after"] * 2,
        "median": [9e5, 5e5, 9e5, 8e5, 2e5, 8e5], "ci_low": [np.nan] * 6,
        "ci_high": [np.nan] * 6})
    made = unswept_plots(table, [], tmp_path)
    assert [p.name for p in made] == ["log-pages-per-s-phases.png"]
