"""The guest workloads measure what they claim: behaviour, not just exit codes."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator import proc
from orchestrator.model import Outcome
from orchestrator.suite.kinds import KINDS
from orchestrator.workloads import adapters
from tests.workloads.conftest import metric, run_json, trials

PROGRAMS = ["fork-dirty", "mprotect", "hugepage", "fault", "dirtier", "noop"]
HUGEPAGES_2M = Path("/proc/sys/vm/nr_hugepages")


def test_binaries_are_static(bin_dir: Path) -> None:
    for name in [*PROGRAMS, "orch-runner"]:  # the runner is shipped into any guest, too
        out = subprocess.run(["file", str(bin_dir / name)], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout:
            assert "statically linked" in out.stdout or "static-pie" in out.stdout
        with (bin_dir / name).open("rb") as fh:  # no PT_INTERP: nothing to load at run time
            assert b"/lib64/ld-linux" not in fh.read()


@pytest.mark.parametrize("name", PROGRAMS)
def test_help_and_bad_arguments(bin_dir: Path, name: str) -> None:
    helped = subprocess.run([str(bin_dir / name), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and helped.stdout.startswith(f"usage: {name}")
    bad = subprocess.run([str(bin_dir / name), "--bogus", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: unknown option '--bogus'")
    assert "(hint: " in lines[0]


def test_range_checks(bin_dir: Path) -> None:
    for args in (["--pages", "0"], ["--pages", "10", "--ptes-per-table", "513"],
                 ["--pages", "ten"], ["--pages", "10", "--trials", "0"]):
        done = subprocess.run([str(bin_dir / "fork-dirty"), *args], capture_output=True,
                              text=True)
        assert done.returncode == 2, args


def test_warmups_are_flagged_and_params_echoed(bin_dir: Path) -> None:
    lines = trials(run_json(bin_dir / "fork-dirty", "--pages", "100", "--warmup", "2",
                            "--trials", "3"))
    assert [line["warmup"] for line in lines] == [True, True, False, False, False]
    assert [line["trial"] for line in lines] == [0, 1, 2, 3, 4]
    assert lines[0]["params"] == {"pages": 100, "ptes_per_table": 512, "cow": False}
    assert lines[0]["clock"] == "CLOCK_MONOTONIC"
    assert set(lines[0]["rusage"]) >= {"minflt", "majflt", "utime_us", "stime_us"}


def test_fork_cost_grows_with_dirty_pages(bin_dir: Path) -> None:
    def median_fork(pages: int) -> float:
        lines = trials(run_json(bin_dir / "fork-dirty", "--pages", str(pages), "--warmup", "1",
                                "--trials", "5"))
        return statistics.median(metric(x, "fork_us") for x in lines if not x["warmup"])

    small, large = median_fork(1280), median_fork(128000)
    assert large > 5 * small, (small, large)  # copying 100x the PTEs costs far more


@pytest.mark.parametrize("per_table", [1, 4, 64, 512])
def test_pte_density_layout_is_what_it_claims(bin_dir: Path, per_table: int) -> None:
    pages = 4096
    line = trials(run_json(bin_dir / "fork-dirty", "--pages", str(pages), "--ptes-per-table",
                           str(per_table)))[0]
    info = line["info"]
    assert info["pt_pages_expected"] == -(-pages // per_table)
    assert abs(info["pt_pages_measured"] - info["pt_pages_expected"]) <= max(
        4, info["pt_pages_expected"] // 20)
    assert info["layout_ok"] is True


def test_cow_is_measured_in_the_child(bin_dir: Path) -> None:
    line = trials(run_json(bin_dir / "fork-dirty", "--pages", "2000", "--cow"))[0]
    assert metric(line, "cow_us") > 0
    assert metric(line, "fork_wait_us") >= metric(line, "cow_us")


def test_hugepage_skip_is_honest_when_the_pool_is_empty(bin_dir: Path) -> None:
    before = HUGEPAGES_2M.read_text().strip()
    try:
        HUGEPAGES_2M.write_text("0")
        lines = run_json(bin_dir / "hugepage", "--size", "64M", "--backing", "hugetlb-2m",
                         expect=3)
        assert lines[-1]["type"] == "skip" and "32 free huge pages" in lines[-1]["reason"]
    finally:
        HUGEPAGES_2M.write_text(before)


def test_hugepage_works_when_pages_are_reserved(bin_dir: Path) -> None:
    before = HUGEPAGES_2M.read_text().strip()
    try:
        HUGEPAGES_2M.write_text("40")
        granted = int(HUGEPAGES_2M.read_text())
        if granted < 32:
            pytest.fail(f"the kernel granted only {granted} of 40 huge pages")
        line = trials(run_json(bin_dir / "hugepage", "--size", "64M", "--backing",
                               "hugetlb-2m"))[0]
        assert line["info"]["pool_pages"] == granted
        assert metric(line, "populate_us") > 0 and metric(line, "fork_us") > 0
        # populate touches 16,384 small-page addresses but faults only 32 huge pages
        assert line["rusage"]["minflt"] < 1000
    finally:
        HUGEPAGES_2M.write_text(before)


def test_anonymous_fault_counts_match_pages(bin_dir: Path) -> None:
    pages = 20000
    line = trials(run_json(bin_dir / "fault", "--pages", str(pages)))[0]
    assert abs(metric(line, "minflt") - pages) <= pages * 0.02


@pytest.mark.parametrize("populate", ["map-populate", "madv-populate-write"])
def test_populate_leaves_no_faults_for_the_touch(bin_dir: Path, populate: str) -> None:
    line = trials(run_json(bin_dir / "fault", "--pages", "20000", "--populate", populate))[0]
    assert metric(line, "minflt") <= 20
    assert metric(line, "populate_us") > metric(line, "touch_us")


def test_file_faults_map_around(bin_dir: Path, tmp_path: Path) -> None:
    pages = 16384
    line = trials(run_json(bin_dir / "fault", "--pages", str(pages), "--backing", "file",
                           "--dir", str(tmp_path)))[0]
    # the kernel's fault-around maps several page-cache pages per fault
    assert 0 < metric(line, "minflt") < pages / 2
    assert list(tmp_path.iterdir()) == []  # the scratch file is gone


def test_random_order_is_reproducible_and_echoed(bin_dir: Path) -> None:
    line = trials(run_json(bin_dir / "fault", "--pages", "1000", "--order", "random",
                           "--seed", "7"))[0]
    assert line["params"]["order"] == "random" and line["params"]["seed"] == 7


def test_mprotect_range_costs_grow_with_range(bin_dir: Path) -> None:
    def ro_ns(pages: str) -> float:
        return metric(trials(run_json(bin_dir / "mprotect", "--pages", "8192", "--range-pages",
                                      pages, "--iterations", "50"))[0], "mprotect_ro_ns")

    assert ro_ns("0") > ro_ns("1")  # 8,192 PTEs rewritten vs one
    line = trials(run_json(bin_dir / "mprotect", "--pages", "16", "--iterations", "20"))[0]
    assert metric(line, "prot_fault_ns") > 0


def test_dirtier_holds_its_rate(bin_dir: Path) -> None:
    lines = run_json(bin_dir / "dirtier", "--pages", "512", "--rate", "10000", "--duration",
                     "1", "--interval", "0.25")
    intervals = [x for x in lines if x["type"] == "interval"]
    assert len(intervals) >= 3
    total = trials(lines)[0]
    assert 0.8 * 10000 < metric(total, "pages_per_s") < 1.05 * 10000


def _while_running(argv: list[str], look: Callable[[int], str]) -> str:
    """What `look(pid)` reads from a workload's /proc entry half a second into its run."""
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        return look(child.pid)
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("cpu", sorted(os.sched_getaffinity(0))[:2])
def test_cpu_pins_the_measuring_process(bin_dir: Path, cpu: int) -> None:
    argv = [str(bin_dir / "dirtier"), "--pages", "16", "--duration", "5", "--cpu", str(cpu)]
    status = _while_running(argv, lambda pid: Path(f"/proc/{pid}/status").read_text())
    assert f"Cpus_allowed_list:\t{cpu}\n" in status
    line = trials(run_json(bin_dir / "fork-dirty", "--pages", "64", "--cpu", str(cpu)))[0]
    assert metric(line, "fork_us") > 0


def test_cpu_that_does_not_exist_is_a_usage_error(bin_dir: Path) -> None:
    done = subprocess.run([str(bin_dir / "noop"), "--cpu", "1023"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("noop: error: --cpu 1023: cannot run there")


THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.needs_root
def test_mprotect_times_small_pages_even_when_thp_is_always(bin_dir: Path) -> None:
    """The host's THP setting must not choose what mprotect times: 4 KiB PTEs, always."""
    before = THP.read_text().split("[")[1].split("]")[0]
    try:
        THP.write_text("always")
        argv = [str(bin_dir / "mprotect"), "--pages", "8192", "--iterations", "1000000"]
        rollup = _while_running(argv, lambda pid: Path(f"/proc/{pid}/smaps_rollup").read_text())
    finally:
        THP.write_text(before)
    huge_kb = int(rollup.split("AnonHugePages:")[1].split()[0])
    assert huge_kb == 0, rollup


# one small trial of each program, with the options that make it report everything it can
EVERY_METRIC: dict[str, dict[str, Any]] = {
    "fork-dirty": {"pages": 64, "cow": True},
    "mprotect": {"pages": 64},
    "hugepage": {"size": "4M", "backing": "small"},
    "fault": {"pages": 64},
    "dirtier": {"pages": 64, "duration": 0.5, "interval": 0.1},
    "noop": {},
}


@pytest.mark.parametrize("kind", sorted(EVERY_METRIC))
def test_the_metrics_a_kind_declares_are_the_ones_its_program_reports(
        bin_dir: Path, kind: str) -> None:
    """A precision target's `metric:` is checked against KINDS[kind].metrics at load time;
    that list must be what the program really prints (and the parser adds)."""
    done = proc.run(adapters.command(kind, EVERY_METRIC[kind], str(bin_dir)), timeout=120)
    parsed = adapters.parse(kind, done)
    assert parsed.outcome is Outcome.OK, parsed
    reported = {m.name for m in parsed.metrics}
    assert reported == set(KINDS[kind].metrics)
    assert KINDS[kind].primary_metric in reported
