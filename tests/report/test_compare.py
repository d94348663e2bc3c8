"""compare flags only significant changes beyond the threshold, in the right direction."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from orchestrator.analysis.compare import compare_tables
from orchestrator.store import reader
from tests.report.conftest import make_run, noisy


def verdicts(base: Path, new: Path) -> dict[tuple[str, str], str]:
    changes = compare_tables(reader.load(base).trials, reader.load(new).trials, ["pages"])
    return {(c.cell_id, c.metric): c.verdict for c in changes}


def test_identical_runs_flag_nothing(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1))
    b = make_run(tmp_path, "b", noisy(1))
    assert set(verdicts(a, b).values()) == {"unchanged"}


def test_a_twenty_percent_slowdown_is_a_regression(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1))
    b = make_run(tmp_path, "b", noisy(2, slow_cell="c-large", factor=1.2))
    found = verdicts(a, b)
    assert found[("tdp-c-large", "fork_us")] == "regression"
    assert found[("tdp-c-small", "fork_us")] == "unchanged"
    assert found[("tdp-c-large", "rusage_minflt")] == "unchanged"  # counts never regress


def test_a_speedup_is_an_improvement_not_a_regression(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1))
    b = make_run(tmp_path, "b", noisy(3, slow_cell="c-small", factor=0.7))
    assert verdicts(a, b)[("tdp-c-small", "fork_us")] == "improvement"


def test_noisy_but_equal_medians_are_not_flagged(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(4, sigma=0.25))
    b = make_run(tmp_path, "b", noisy(5, sigma=0.25))
    assert "regression" not in verdicts(a, b).values()


def test_small_real_change_below_threshold_is_not_flagged(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1, sigma=0.001))
    b = make_run(tmp_path, "b", noisy(1, sigma=0.001, slow_cell="c-large", factor=1.02))
    assert verdicts(a, b)[("tdp-c-large", "fork_us")] == "unchanged"


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1))
    b = make_run(tmp_path, "b", noisy(2, slow_cell="c-large", factor=1.2))
    cli = [sys.executable, "-m", "orchestrator.cli", "compare"]
    same = subprocess.run([*cli, str(a), str(a)], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and "0 regression(s)" in same.stdout
    slower = subprocess.run([*cli, str(a), str(b), "--json"], capture_output=True, text=True,
                            timeout=120)
    assert slower.returncode == 4
    data = json.loads(slower.stdout)
    assert data["regressions"] == 1
    flagged = [c for c in data["changes"] if c["verdict"] == "regression"][0]
    assert np.isclose(flagged["ratio"], 1.2, atol=0.05) and flagged["ci_low"] > 1
    bad = subprocess.run([*cli, str(a), str(tmp_path / "nope")], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "no such run" in bad.stderr


def compare_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", "compare", *args],
                          capture_output=True, text=True, timeout=120)


def test_a_cell_that_ran_ok_and_now_errors_is_lost_and_fails(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1))
    b = make_run(tmp_path, "b", noisy(2), failing=frozenset({"c-large"}))
    found = verdicts(a, b)
    assert found[("tdp-c-large", "fork_us")] == "lost"
    assert found[("tdp-c-small", "fork_us")] == "unchanged"
    done = compare_cli(str(a), str(b))
    assert done.returncode == 4
    assert "lost         tdp/g fork pages=128000 fork_us (trials measured: base 12, new 0)" \
        in done.stdout
    assert "0 regression(s), 2 lost cell(s), 0 new cell(s)" in done.stdout
    back = verdicts(b, a)  # the other way round the cell is new, which is no failure
    assert back[("tdp-c-large", "fork_us")] == "new"
    assert compare_cli(str(b), str(a)).returncode == 0


def test_counters_zero_on_both_sides_say_nothing(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1), counter=0.0)
    b = make_run(tmp_path, "b", noisy(2), counter=0.0)
    found = verdicts(a, b)
    assert found[("tdp-c-large", "rusage_minflt")] == "no signal"
    done = compare_cli(str(a), str(b), "--json")
    assert "NaN" not in done.stdout
    data = json.loads(done.stdout)
    silent = [c for c in data["changes"] if c["verdict"] == "no signal"]
    assert silent and silent[0]["ratio"] is None


def test_runs_that_differ_are_refused_unless_the_difference_is_the_judged_change(
        tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1), manifest={
        "host": {"hostname": "lab1", "kernel_release": "6.1.0"}, "tools": {"qemu": "7.2"}})
    b = make_run(tmp_path, "b", noisy(2), manifest={
        "host": {"hostname": "lab1", "kernel_release": "6.12.0"}, "tools": {"qemu": "9.0"}})
    refused = compare_cli(str(a), str(b))
    assert refused.returncode == 2 and refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "host kernel: 6.1.0 vs 6.12.0; QEMU version: 7.2 vs 9.0" in lines[0]
    assert "--allow KEY (host-kernel, qemu)" in lines[0]
    still = compare_cli(str(a), str(b), "--allow", "host-kernel")
    assert still.returncode == 2 and "host kernel" not in still.stderr
    judged = compare_cli(str(a), str(b), "--allow", "host-kernel", "--allow", "qemu")
    assert judged.returncode == 0
    assert "the change being judged: host kernel: 6.1.0 vs 6.12.0" in judged.stdout
    forced = compare_cli(str(a), str(b), "--force")
    assert forced.returncode == 0
    assert "DIFFERS (--force): QEMU version: 7.2 vs 9.0" in forced.stdout
    assert "comparing anyway (--force): QEMU version" in forced.stderr


def test_a_change_within_the_hosts_own_noise_is_not_flagged(tmp_path: Path) -> None:
    """Earlier runs on this host swing by ~10%: a 12% step in a tight pair is not a finding."""
    for night, scale in enumerate([1.0, 1.08, 0.93, 1.05, 0.96, 1.1]):
        make_run(tmp_path, f"n{night}", noisy(10 + night, sigma=0.002, scale=scale),
                 started=1000.0 + night)
    a = make_run(tmp_path, "a", noisy(1, sigma=0.002), started=2000.0)
    b = make_run(tmp_path, "b", noisy(2, sigma=0.002, slow_cell="c-large", factor=1.12),
                 started=3000.0)
    alone = verdicts(a, b)  # no history given: the 12% step is significant and over 5%
    assert alone[("tdp-c-large", "fork_us")] == "regression"
    data = json.loads(compare_cli(str(a), str(b), "--json", "--results-dir",
                                  str(tmp_path)).stdout)
    large = [c for c in data["changes"] if c["cell_id"] == "tdp-c-large"
             and c["metric"] == "fork_us"][0]
    assert large["verdict"] == "unchanged" and large["noise"] > 0.04


def test_too_few_trials_for_the_fdr_are_called_out(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1), trials=4)
    b = make_run(tmp_path, "b", noisy(2, slow_cell="c-large", factor=1.3), trials=4)
    done = compare_cli(str(a), str(b))
    # 4 vs 4 trials: p >= 2/C(8,4) = 0.029; times 4 tested cell metrics, q cannot reach 0.05
    assert "with 4 vs 4 trials a cell's p-value is at least 0.029; over 4 tested cells" \
        in done.stdout
    assert "0 regression(s)" in done.stdout


def test_the_comparison_as_a_page(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1), manifest={"tools": {"qemu": "7.2"}})
    b = make_run(tmp_path, "b", noisy(2, slow_cell="c-large", factor=1.3),
                 failing=frozenset({"c-small"}), manifest={"tools": {"qemu": "9.0"}})
    page = tmp_path / "compare.html"
    done = compare_cli(str(a), str(b), "--allow", "qemu", "--html", str(page))
    assert done.returncode == 4
    text = page.read_text()
    assert text.index("the change being judged: QEMU version: 7.2 vs 9.0") \
        < text.index("lost: tdp/g fork pages=1280 fork_us") < text.index("<img")
    first_row = text[text.index("<tbody>"):].split("</tr>")[0]
    assert "<td>regression</td>" in first_row and "pages=128000" in first_row
    assert "data:image/png;base64," in text and "<title>compare a-" in text
