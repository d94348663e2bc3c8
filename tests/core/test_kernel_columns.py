"""Rows say which guest kernel they ran on (guest_kernel, kernel_id, kernel_config,
kernel_cmdline, from the run's manifest), and `results --kernel` keeps one kernel's rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli.entry import main
from orchestrator.errors import BadInput
from orchestrator.model import EventCount, Metric, Outcome, TrialRecord
from orchestrator.store import reader, rundir
from orchestrator.store.journal import Journal
from orchestrator.store.tables import finalize_tables

GENERIC, RT = "6.1.0-47-amd64", "6.1.0-47-rt-amd64"


def record(guest: str, cell: str, mode: str = "tcg", *,
           outcome: Outcome = Outcome.OK) -> TrialRecord:
    return TrialRecord(cell_id=cell, trial=1, warmup=False, paging_requested="tdp",
                       paging_mode=mode, accel="tcg", guest=guest, workload="w",
                       kind="fork-dirty", params={"pages": 10}, outcome=outcome,
                       metrics=(Metric("fork_us", 1.5, "us"),), started_at=1.7e9,
                       events=(EventCount("guest", "page-faults", 3.0),))


def facts(release: str, kernel_id: str) -> dict[str, object]:
    return {"kernel_release": release, "kernel_id": kernel_id,
            "kernel_cmdline": "console=ttyS0 panic=-1 quiet", "boot_to_ssh_s": 17.2}


def make_run(tmp_path: Path) -> Path:
    run_dir = rundir.new_run_dir(tmp_path, "s")
    rundir.RunDir(run_dir).create_manifest({
        "run_id": run_dir.name, "suite_name": "s", "host": {"hostname": "lab1"},
        "param_columns": {"pages": "int"},
        "guests": {f"tcg/small-{GENERIC}": facts(GENERIC, "1a29e4786a77"),
                   f"tcg/small-{RT}": facts(RT, "c6a23dce630c")},
        "kernels": {f"small-{GENERIC}": {"release": GENERIC, "kernel_id": "1a29e4786a77",
                                         "config_hash": "0548532c6128"},
                    f"small-{RT}": {"release": RT, "kernel_id": "c6a23dce630c",
                                    "config_hash": "2aa56f0c8c48"},
                    "late": {"release": RT, "kernel_id": "c6a23dce630c",
                             "config_hash": "2aa56f0c8c48"}}})
    with Journal(run_dir) as journal:
        journal.append(record(f"small-{GENERIC}", "a"))
        journal.append(record(f"small-{RT}", "b"))
        journal.append(record("late", "c", "unavailable", outcome=Outcome.SKIPPED))
        journal.append(record("host", "d", "native"))
    finalize_tables(run_dir)
    return run_dir


def test_every_row_says_its_kernel(tmp_path: Path) -> None:
    trials = reader.load(make_run(tmp_path)).trials.set_index("guest")
    assert trials.loc[f"small-{RT}", "guest_kernel"] == RT
    assert trials.loc[f"small-{RT}", "kernel_id"] == "c6a23dce630c"
    assert trials.loc[f"small-{RT}", "kernel_config"] == "2aa56f0c8c48"
    assert trials.loc[f"small-{GENERIC}", "kernel_cmdline"] == "console=ttyS0 panic=-1 quiet"
    # a guest that never booted: the chosen kernel's id, no release; native rows: none
    assert (trials.loc["late", "guest_kernel"], trials.loc["late", "kernel_id"]) == \
        ("", "c6a23dce630c")
    assert (trials.loc["host", "guest_kernel"], trials.loc["host", "kernel_id"]) == ("", "")


@pytest.mark.parametrize("kernel", [RT, "c6a2", "c6a23dce630c"])
def test_only_kernel_keeps_its_rows_and_events(tmp_path: Path, kernel: str) -> None:
    """A release matches what guests booted; an id also the rows of a guest that never booted
    (they carry the chosen kernel's id)."""
    kept = reader.only_kernel(reader.load(make_run(tmp_path)), kernel)
    by_id = kernel != RT
    assert set(kept.trials["guest"]) == {f"small-{RT}", *(["late"] if by_id else [])}
    assert set(kept.events["cell_id"]) == {"b", *(["c"] if by_id else [])}


def test_an_id_prefix_needs_four_digits_and_a_miss_names_the_run_kernels(
        tmp_path: Path) -> None:
    tables = reader.load(make_run(tmp_path))
    with pytest.raises(BadInput) as caught:
        reader.only_kernel(tables, "c6a")
    assert f"{GENERIC} (1a29e4786a77), {RT} (c6a23dce630c)" in caught.value.hint


def test_results_kernel_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run(tmp_path)
    assert main(["results", str(run_dir), "--kernel", GENERIC, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {row["guest"] for row in shown["summary"]} == {f"small-{GENERIC}"}
    assert main(["results", "--results-dir", str(tmp_path), "--kernel", "1a29"]) == 0
    assert run_dir.name in capsys.readouterr().out
    assert main(["results", "--results-dir", str(tmp_path), "--kernel", "6.12.0"]) == 0
    assert run_dir.name not in capsys.readouterr().out
    assert main(["results", str(run_dir), "--kernel", "6.12.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no rows of guest kernel '6.12.0'" in err
