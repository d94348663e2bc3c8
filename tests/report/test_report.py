"""The report from a real native run opens in headless Chromium with every figure loaded."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.analysis.report import _provenance_rows, write_report
from orchestrator.analysis.stats import crossings
from tests.report.conftest import make_run, noisy

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def test_break_even_is_where_the_curves_cross() -> None:
    x = np.array([1.0, 2, 4, 8, 16])
    shadow = np.array([10.0, 8, 6, 4, 2])
    tdp = np.array([5.0, 5, 5, 5, 5])
    assert crossings(x, shadow, tdp) == pytest.approx([4 + 4 * 1 / 2])
    assert crossings(x, tdp, tdp + 1) == []


def test_report_files_from_synthetic_runs(tmp_path: Path) -> None:
    run = make_run(tmp_path, "a", noisy(1))
    page = write_report([run], tmp_path / "out")
    text = page.read_text()
    assert "data:image/png;base64," in text and "fork_us" in text
    assert "lab1" in text  # provenance from the manifest
    assert (tmp_path / "out" / "report.md").read_text().startswith("# report: ")
    assert (tmp_path / "out" / "fork-fork_us-vs-pages.svg").exists()


@pytest.mark.integration
def test_report_of_a_real_run_opens_in_chromium(tmp_path: Path) -> None:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    suite = tmp_path / "s.yaml"
    suite.write_text((ROOT / "suites/native-smoke.yaml").read_text())
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(suite),
                           "--results-dir", str(tmp_path / "r")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = subprocess.run([sys.executable, "-m", "orchestrator.cli", "report", "latest",
                             "--results-dir", str(tmp_path / "r")], capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    page = Path(report.stdout.split("report: ", 1)[1].strip())
    dom = opened_in_chromium(page, tmp_path, ARTIFACTS / "report.png")
    run_id = page.parent.parent.name
    assert f"<title>report: {run_id}</title>" in dom  # the tab names the run
    assert "<details><summary>Counters" in dom


def opened_in_chromium(page: Path, tmp_path: Path, shot: Path) -> str:
    """The page's DOM after headless Chromium loaded it (every image decoded, no script
    error), and a screenshot kept as a test artifact."""
    browser = shutil.which("chromium")
    assert browser, "chromium is installed by scripts/setup"
    ARTIFACTS.mkdir(exist_ok=True)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    images = dom.stdout.count("<img")
    assert images >= 1, dom.stderr[-500:]
    assert f'data-loaded="ok:{images}"' in dom.stdout
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000
    return dom.stdout


@pytest.mark.integration
def test_a_compare_page_opens_in_chromium(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", noisy(1))
    b = make_run(tmp_path, "b", noisy(2, slow_cell="c-large", factor=1.3))
    page = tmp_path / "compare.html"
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "compare", str(a), str(b),
                           "--html", str(page)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 4, done.stderr
    dom = opened_in_chromium(page, tmp_path, ARTIFACTS / "compare.png")
    assert "<td>regression</td>" in dom


@pytest.mark.integration
def test_ours_beside_theirs_and_a_zoomable_timeline_open_in_chromium(tmp_path: Path) -> None:
    import pandas as pd

    from tests.report.test_reference import write_two_mode_run

    run = write_two_mode_run(tmp_path)
    (run / "captures").mkdir()
    pd.DataFrame({"side": ["host", "guest", "host", "guest", "host"],
                  "event": ["kvm:kvm_exit", "exceptions:page_fault_user", "kvm:kvm_exit",
                            "exceptions:page_fault_user", "kvm:kvm_page_fault"],
                  "tsc": pd.array([100, 1000, 1300, 5000, 5100], dtype="UInt64")}).to_parquet(
        run / "captures" / "shadow-128000-1.timeline.parquet")
    page = write_report([run], tmp_path / "out", tmp_path)
    dom = opened_in_chromium(page, tmp_path, ARTIFACTS / "report-reference.png")
    assert "Ours beside theirs: seed 000 (fork, fork_us)" in dom
    assert 'data-drawn="5"' in dom  # the canvas drew all five events
    assert "<canvas" in dom and "Zoom with the mouse wheel" in dom


def test_categorical_sweeps_become_bar_charts(tmp_path: Path) -> None:
    import pandas as pd

    from orchestrator.analysis.plots import metric_plots

    table = pd.DataFrame({
        "paging_mode": ["tdp", "tdp", "shadow", "shadow"], "guest": ["g"] * 4,
        "workload": ["fault"] * 4, "metric": ["ns_per_page"] * 4, "unit": ["ns"] * 4,
        "populate": ["none", "map-populate"] * 2, "pages": [1000] * 4,
        "median": [900.0, 300.0, 4000.0, 700.0], "ci_low": [np.nan] * 4,
        "ci_high": [np.nan] * 4})
    made = metric_plots(table, ["pages", "populate"], tmp_path)
    assert [p.name for p in made] == ["fault-ns_per_page-by-populate.png"]
    assert made[0].stat().st_size > 5_000


def test_the_report_names_the_kernels_measured() -> None:
    manifest = {"guests": {
        "tdp/small": {"kernel_release": "6.1.0-47-amd64", "kernel_id": "1a29e4786a77"},
        "shadow/small": {"kernel_release": "6.1.0-47-amd64", "kernel_id": "1a29e4786a77"},
        "tdp/small-rt": {"kernel_release": "6.1.0-47-rt-amd64", "kernel_id": ""}},
        "lab": {"l1_kernel": {"release": "6.8.0", "source": "built /src/bzImage",
                              "kernel_id": "bbbb33334444"}}}
    rows = dict(_provenance_rows(manifest))
    assert rows["guest small kernel"] == "6.1.0-47-amd64 (image 1a29e4786a77)"
    assert rows["guest small-rt kernel"] == "6.1.0-47-rt-amd64"
    assert rows["lab host (L1) kernel"] == "6.8.0 (built /src/bzImage, image bbbb33334444)"
    assert not any(what.startswith(("guest ", "lab host")) for what, _ in _provenance_rows({}))
