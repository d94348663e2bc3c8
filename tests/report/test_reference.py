"""Ours beside theirs (#16): a seed suite's published figures in the report, the suite field
that carries them, and `orchestrate reproduce`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from orchestrator.analysis import reference
from orchestrator.analysis.report import write_report
from orchestrator.analysis.stats import mode_ratios, summary
from orchestrator.cli.reproduce import native_copy, seed_suites, where_to_run
from orchestrator.errors import BadInput
from orchestrator.host.accel import AccelReport
from orchestrator.model import Metric, Outcome, TrialRecord
from orchestrator.store import rundir
from orchestrator.store.journal import Journal
from orchestrator.store.tables import finalize_tables
from orchestrator.suite.loader import load_suite, parse_suite

SUITES = Path(__file__).resolve().parents[2] / "suites"
FORK_REF: dict[str, Any] = {
    "seed": "000", "source": "a thread", "caveats": "another era", "workload": "fork",
    "metric": "fork_us", "unit": "us", "axis": "pages", "break_even": None, "ratios": [],
    "series": [{"label": "wtpt", "like": "tdp", "values": {"1280.0": 813, "128000.0": 37552}},
               {"label": "emulate", "like": "shadow",
                "values": {"1280.0": 3279, "128000.0": 283879}}]}
DENSITY_REF: dict[str, Any] = {
    **FORK_REF, "axis": "ptes_per_table", "break_even": 4,
    "series": [{"label": "wtpt", "like": "tdp", "values": {"2": 5242, "4": 5251, "8": 5519}},
               {"label": "emulate", "like": "shadow",
                "values": {"2": 4922, "4": 5265, "8": 6991}}]}


def trials(axis: str, medians: dict[tuple[str, float], float]) -> pd.DataFrame:
    """Nine measured trials per (mode, axis value), spread +-2% around the given median."""
    rows = []
    for (mode, x), median in medians.items():
        for i, spread in enumerate(np.linspace(0.98, 1.02, 9)):
            rows.append({"paging_mode": mode, "accel": "kvm", "guest": "g", "workload": "fork",
                         "kind": "fork-dirty", axis: x, "metric": "fork_us", "unit": "us",
                         "value": median * spread, "trial": i, "warmup": False,
                         "outcome": "ok", "cell_id": f"{mode}-{x}"})
    return pd.DataFrame(rows)


def fork_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    data = trials("pages", {("tdp", 1280): 1000, ("tdp", 128000): 50000,
                            ("shadow", 1280): 4000, ("shadow", 128000): 400000,
                            ("native", 1280): 200, ("native", 128000): 20000})
    return summary(data, ["pages"]), mode_ratios(data, ["pages"])


def test_values_sit_beside_theirs_with_our_interval_and_n() -> None:
    table, _ = fork_tables()
    values = reference.values_table(table, FORK_REF)
    assert values["pages"].tolist() == ["1,280", "128,000"]
    assert values["theirs: wtpt"].tolist() == ["813", "37,552"]
    assert values["ours: tdp"].iloc[0].startswith("1,000 [") and "(n=9)" in values["ours: tdp"][0]
    assert values["ours: shadow"].iloc[1].startswith("400,000 [")


def test_shapes_compare_growth_and_the_ratio_of_the_two_mechanisms() -> None:
    table, ratios = fork_tables()
    shape = reference.shape_table(table, ratios, FORK_REF).set_index(["curve", "between"])
    assert shape.loc[("theirs: wtpt", "1280 .. 128000"), "value"] == "46.2x"
    assert shape.loc[("ours: tdp", "1280 .. 128000"), "value"] == "50x"
    assert shape.loc[("ours: shadow", "1280 .. 128000"), "value"] == "100x"
    assert shape.loc[("ours: native (for scale)", "1280 .. 128000"), "value"] == "100x"
    assert shape.loc[("theirs: emulate / wtpt", "pages=128000"), "value"] == "7.56x"
    ours = str(shape.loc[("ours: shadow/tdp", "pages=128000"), "value"])
    assert ours.startswith("8x [") and ours.endswith("]")


def test_break_even_published_from_their_table_and_ours() -> None:
    data = trials("ptes_per_table", {("tdp", 2): 5000, ("tdp", 4): 5200, ("tdp", 8): 5400,
                                     ("shadow", 2): 4800, ("shadow", 4): 5300,
                                     ("shadow", 8): 6500})
    lines = reference.break_even_lines(summary(data, ["ptes_per_table"]), DENSITY_REF)
    assert lines[0] == "Theirs, as published: near ptes_per_table=4."
    assert lines[1] == "Theirs, from their table: ptes_per_table=3.89 (log-linear)."
    # ours: -200 at 2, +100 at 4: 2 * 2**(2/3) on a log axis
    assert lines[2] == "Ours (shadow vs tdp, medians): ptes_per_table=3.17 (log-linear)."


def test_curves_that_never_cross_say_so_with_the_ratio_range() -> None:
    table, _ = fork_tables()
    lines = reference.break_even_lines(table, FORK_REF)
    assert lines[-1] == ("Ours (shadow vs tdp, medians): no crossing between pages=1280 and "
                         "128000; the ratio goes from 4x to 8x.")


def test_tcg_rows_play_no_part() -> None:
    data = trials("pages", {("tcg", 1280): 1000, ("tcg", 128000): 50000})
    values = reference.values_table(summary(data, ["pages"]), FORK_REF)
    assert set(values["ours: tdp"]) == set(values["ours: shadow"]) == {"not measured"}


def test_a_published_ratio_sits_beside_ours_per_mode() -> None:
    rows = []
    for backing, median in (("small", 5000.0), ("hugetlb-2m", 100.0)):
        frame = trials("size", {("tdp", 64): median}).assign(backing=backing)
        rows.append(frame.assign(cell_id=frame["cell_id"] + backing))
    ref = {**FORK_REF, "series": [], "ratios": [
        {"label": "per-page vs superpage", "value": 50, "param": "backing",
         "numerator": "small", "denominator": "hugetlb-2m"}]}
    claims = reference.ratio_claims(pd.concat(rows), ref, ["size", "backing"])
    [row] = claims.to_dict("records")
    assert (row["paging_mode"], row["ratio"]) == ("tdp", "small/hugetlb-2m")
    assert row["theirs"] == "50x (per-page vs superpage)"
    assert row["ours"].startswith("50x [") and row["ours"].endswith("(n=9/9)")


def write_two_mode_run(root: Path) -> Path:
    run_dir = rundir.new_run_dir(root, "fork-dirty-pages")
    ref = load_suite(SUITES / "fork-dirty-pages.yaml").suite.model_dump(mode="json")
    rundir.RunDir(run_dir).create_manifest({
        "run_id": run_dir.name, "suite_name": "fork-dirty-pages", "status": "done",
        "started_at": "2026-12-01T00:00:00", "host": {"hostname": "lab1"}, "suite": ref,
        "param_columns": {"pages": "int"}})
    medians = {("tdp", 1280): 1000.0, ("tdp", 128000): 50000.0,
               ("shadow", 1280): 4000.0, ("shadow", 128000): 400000.0}
    with Journal(run_dir) as journal:
        for (mode, pages), median in medians.items():
            for trial, spread in enumerate(np.linspace(0.98, 1.02, 9)):
                journal.append(TrialRecord(
                    cell_id=f"{mode}-{pages}", trial=trial, warmup=False,
                    paging_requested=mode, paging_mode=mode, accel="nested-tcg", guest="small",
                    workload="fork", kind="fork-dirty", params={"pages": pages},
                    outcome=Outcome.OK, reason="",
                    metrics=(Metric("fork_us", float(median * spread), "us"),),
                    started_at=1.0 + trial))
    finalize_tables(run_dir)
    return run_dir


def test_the_report_opens_with_ours_beside_theirs(tmp_path: Path) -> None:
    run_dir = write_two_mode_run(tmp_path)
    page = write_report([run_dir], run_dir / "report", tmp_path)
    text = (page.parent / "report.md").read_text()
    section = text[text.index("## Ours beside theirs: seed 000 (fork, fork_us)"):
                   text.index("## fork (fork-dirty)")]
    assert "Xen 3.0 paravirtualized Linux" in section  # the caveats, from the suite
    assert "| 128,000 | 37,552 | 50,000 [" in section
    assert "| ours: shadow/tdp | ratio (95% BCa interval) | pages=128000 | 8x [" in section
    assert (page.parent / "reference-000-fork.png").stat().st_size > 0
    assert (page.parent / "reference-000-fork.svg").stat().st_size > 0


def test_the_suite_field_refuses_what_it_cannot_compare() -> None:
    base = (SUITES / "pte-density.yaml").read_text()
    for old, new, expected in [
        ("workload: density\n", "workload: dense\n", "names workload 'dense'"),
        ("axis: ptes_per_table", "axis: ptes", "has no parameter 'ptes'"),
        ("like: shadow", "like: tdp", "same paging mode"),
        ("like: shadow", "like: tcg", "like"),
        ('seed: "000"', 'seed: "0"', "seed"),
    ]:
        assert old in base
        with pytest.raises(BadInput, match=expected):
            parse_suite(base.replace(old, new, 1), Path("pte-density.yaml"))
    hugepage = (SUITES / "hugepage-fork.yaml").read_text()
    with pytest.raises(BadInput, match="backing=huge-1g is not measured"):
        parse_suite(hugepage.replace("numerator: small", "numerator: huge-1g"), Path("h.yaml"))


def test_a_seed_is_found_by_number_or_suite_name() -> None:
    assert [p.stem for p, _ in seed_suites("000", SUITES)] == ["fork-dirty-pages", "pte-density"]
    assert [p.stem for p, _ in seed_suites("0", SUITES)] == ["fork-dirty-pages", "pte-density"]
    assert [p.stem for p, _ in seed_suites("seed-002", SUITES)] == ["hugepage-fork"]
    assert [p.stem for p, _ in seed_suites("pte-density", SUITES)] == ["pte-density"]
    with pytest.raises(BadInput, match="004: no suite in .* carries that seed's") as info:
        seed_suites("004", SUITES)
    assert info.value.hint == ("seeds with reference data: 000: fork-dirty-pages, "
                               "pte-density; 002: hugepage-fork")


def test_where_follows_the_accelerator_and_never_starts_a_lab_unasked() -> None:
    kvm = AccelReport("kvm", "kvm_amd", "tdp", {}, ())
    tcg = AccelReport("tcg", "kvm_pvm", "tcg", {}, ("/dev/kvm is served by kvm_pvm",))
    assert where_to_run("auto", kvm)[0] == "host"
    where, why = where_to_run("auto", tcg)
    assert where == "native" and "--where lab" in why
    assert where_to_run("lab", tcg)[0] == "lab"
    with pytest.raises(BadInput, match="KVM is not usable here"):
        where_to_run("host", tcg)


def test_the_native_copy_keeps_the_suite_but_its_paging(tmp_path: Path) -> None:
    copy = native_copy(SUITES / "pte-density.yaml", tmp_path)
    suite = load_suite(copy).suite
    original = load_suite(SUITES / "pte-density.yaml").suite
    assert [m.value for m in suite.paging] == ["native"]
    assert suite.model_copy(update={"paging": original.paging}) == original
    assert "# Seed 000" in copy.read_text()  # the comments travel into the manifest


def test_the_growth_figure_anchors_ours_where_their_table_starts() -> None:
    data = trials("ptes_per_table", {("tdp", 1): 9000, ("tdp", 2): 6000, ("tdp", 8): 3000,
                                     ("shadow", 1): 50000, ("shadow", 2): 30000,
                                     ("shadow", 8): 9000})
    curves = {label: (xs, ys) for label, _, _, xs, ys in
              reference.growth_curves(summary(data, ["ptes_per_table"]), DENSITY_REF)}
    xs, ys = curves["ours: tdp"]
    assert xs.tolist() == [1, 2, 8] and ys.tolist() == pytest.approx([1.5, 1.0, 0.5])
    assert curves["theirs: emulate"][1][0] == 1.0  # theirs start at 1 at their first value
    colours = [(label, index) for label, index, *_ in
               reference.growth_curves(summary(data, ["ptes_per_table"]), DENSITY_REF)]
    assert colours == [("theirs: wtpt", 0), ("ours: tdp", 0), ("theirs: emulate", 1),
                       ("ours: shadow", 1)]
