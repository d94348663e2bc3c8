"""`orchestrate site`: the fleet's static site from a results root (orchestrator/site/).

A synthetic history of two hosts (runs written through the real store) with a step planted in
one cell of one host, a kernel update on the other and its last night broken; the real-run
test adds real native runs of two hosts and opens the site in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from orchestrator.analysis import changepoints
from orchestrator.analysis.changepoints import ChangePoint
from orchestrator.site import suites
from orchestrator.site.build import build
from orchestrator.site.views import SCHEMA
from tests.fleet.conftest import QUICK_SUITE, write_suite
from tests.fleet.site_helpers import (
    broken_links,
    mtimes,
    night_run,
    summary,
    undecodable_images,
)

NIGHTS, STEP_AT, KERNEL_AT = 24, 14, 10
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SVG = "{http://www.w3.org/2000/svg}"


def fleet(root: Path) -> Path:
    """lab1: c-large 30 % slower from night STEP_AT on; lab2: steady, a new kernel from
    KERNEL_AT on, and its last night failed."""
    for night in range(NIGHTS):
        night_run(root, "lab1", night, factor=1.3 if night >= STEP_AT else 1.0)
        night_run(root, "lab2", night, kernel="6.2.0" if night >= KERNEL_AT else "6.1.0",
                  status="failed" if night == NIGHTS - 1 else "done")
    for night in range(3):
        night_run(root, "lab2", night, suite="other")
    return root


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fleet(tmp_path_factory.mktemp("fleet") / "results")


def planted_step_is_shown(site: Path) -> None:
    open_steps = summary(site)["open_regressions"]
    planted = [s for s in open_steps if s["host"] == "lab1" and s["cell_id"] == "tdp-c-large"]
    assert len(planted) == 1, open_steps
    step = planted[0]
    assert step["last_before"].startswith(f"lab1-n{STEP_AT - 1:03d}")
    assert step["at_run"].startswith(f"lab1-n{STEP_AT:03d}")
    assert step["key"] in (site / "regressions.html").read_text()
    chart = site / step["chart"]
    drawn = ET.parse(chart).getroot()  # noqa: S314 - our own chart
    steps = drawn.findall(f".//{SVG}rect[@class='step']")
    assert len(steps) == 1
    ratio = re.search(r" x(\d\.\d+) ", steps[0].findtext(f"{SVG}title") or "")
    assert ratio and 1.25 < float(ratio.group(1)) < 1.35
    suite_page = (site / "suites" / "nightly.html").read_text()
    assert step["at_run"] in suite_page and "p=" in suite_page
    assert not [s for s in open_steps if s["host"] == "lab2"]  # the other host is not pooled


def test_the_site_shows_the_planted_step_the_broken_host_and_the_kernel_update(
        synthetic: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    built = build(synthetic, site)
    assert built.read == built.runs == 2 * NIGHTS + 3
    assert broken_links(site) == [] and undecodable_images(site) == []
    planted_step_is_shown(site)
    data = summary(site)
    assert data["schema"] == SCHEMA
    cells = {(c["host"], c["suite"]): c for c in data["cells"]}
    assert cells["lab2", "nightly"]["status"] == "broke"
    assert cells["lab1", "nightly"]["status"] == "regression"
    assert cells["lab1", "other"]["status"] == "missing"
    assert cells["lab2", "other"]["status"] == "missing"  # its last run is nights old
    index = (site / "index.html").read_text()
    assert 'class="broke"' in index and "harness broke" in index
    changes = [e for e in data["environment_changes"] if e["host"] == "lab2"]
    assert [e["night"] for e in changes] == ["2026-10-01"] and "6.1.0 -> 6.2.0" in changes[0]["what"]
    lab2_trends = sorted((site / "trends" / "nightly" / "lab2").glob("*.svg"))
    assert lab2_trends and all('class="env"' in p.read_text() for p in lab2_trends)


def test_a_rebuild_rewrites_only_what_a_new_night_changed(tmp_path: Path) -> None:
    root = fleet(tmp_path / "results")
    site = tmp_path / "site"
    build(root, site)
    before = mtimes(site)
    again = build(root, site)
    assert again.read == 0 and again.written == [] and mtimes(site) == before

    night_run(root, "lab1", NIGHTS, factor=1.3)
    after = build(root, site)
    assert after.read == 1
    written = set(after.written)
    assert {"index.html", "summary.json", "suites/nightly.html",
            "spark/lab1/nightly.svg"} <= written
    assert any(w.startswith("trends/nightly/lab1/") for w in written)
    untouched = [w for w in written if "lab2" in w or "other" in w]
    assert untouched == [], "pages of another host or suite were rewritten"
    assert broken_links(site) == []


def test_a_new_detector_redoes_the_change_points_the_site_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The site keeps each suite's change points until its runs change; a detector that may
    find others on the same runs (DETECTOR_VERSION) makes it find them again."""
    root = fleet(tmp_path / "results")
    site = tmp_path / "site"
    build(root, site)
    detected: list[list[str]] = []
    real = suites._detect

    def counting(stale: list[suites.Suite], *rest: Any) -> list[list[ChangePoint]]:
        detected.append([s.name for s in stale])
        return real(stale, *rest)

    monkeypatch.setattr(suites, "_detect", counting)
    build(root, site)
    monkeypatch.setattr(changepoints, "DETECTOR_VERSION", changepoints.DETECTOR_VERSION + 1)
    build(root, site)
    assert detected == [[], ["nightly", "other"]]
    planted_step_is_shown(site)


def test_a_damaged_run_is_listed_and_hides_nothing(tmp_path: Path) -> None:
    root = tmp_path / "results"
    for night in range(3):
        night_run(root, "lab1", night)
    damaged = night_run(root, "lab1", 3)
    (damaged / "manifest.json").write_text("{not json")
    site = tmp_path / "site"
    built = build(root, site)
    assert built.runs == 4
    data = summary(site)
    assert [d["path"] for d in data["damaged_runs"]] == [str(damaged.absolute())]
    assert [c["suite"] for c in data["cells"]] == ["nightly"]
    assert broken_links(site) == []


@pytest.mark.parametrize("case", ["missing root", "no runs", "out is a file", "out in a run"])
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    root = tmp_path / "results"
    run = night_run(root, "lab1", 0) if case == "out in a run" else None
    if case == "no runs":
        root.mkdir()
    out = {"out is a file": tmp_path / "file", "out in a run": (run or root) / "site"}.get(
        case, tmp_path / "site")
    if case == "out is a file":
        night_run(root, "lab1", 0)
        out.write_text("x")
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "site",
                           str(root if case != "missing root" else tmp_path / "nowhere"),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "hint:" in done.stderr


@pytest.mark.integration
def test_real_runs_of_two_hosts_open_in_chromium(built_workloads: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    suite = write_suite(tmp_path, QUICK_SUITE)
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(suite),
                               "--results-dir", str(real)], capture_output=True, text=True,
                              timeout=600, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
    runs = sorted(p for p in real.iterdir() if (p / "manifest.json").exists())
    report = subprocess.run([sys.executable, "-m", "orchestrator.cli", "report", str(runs[0])],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert report.returncode == 0, report.stderr[-2000:]
    root = fleet(tmp_path / "results")
    for host, run, status in (("runner-a", runs[0], "done"), ("runner-b", runs[1], "failed")):
        copy = root / host / run.name  # the same real run, relabelled as another runner's
        shutil.copytree(run, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["host"]["hostname"] = host
        manifest["status"] = status
        (copy / "manifest.json").write_text(json.dumps(manifest))
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "site", str(root),
                           "--out", str(site)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert broken_links(site) == [] and undecodable_images(site) == []
    planted_step_is_shown(site)
    cells = {(c["host"], c["suite"]): c["status"] for c in summary(site)["cells"]}
    assert cells["runner-b", "fleet-quick"] == "broke"
    assert cells["runner-a", "fleet-quick"] in ("ok", "missing")
    index = (site / "index.html").read_text()
    assert (root / "runner-a" / runs[0].name / "report" / "report.html").exists()
    assert f"../results/runner-a/{runs[0].name}/report/report.html" in index
    shots = tmp_path / "shots"
    shots.mkdir()
    dom = in_chromium(site / "index.html", tmp_path, shots / "site-index.png")
    assert "runner-b" in dom and "harness broke" in dom
    assert "Open regressions" in in_chromium(site / "regressions.html", tmp_path,
                                             shots / "site-regressions.png")
    assert 'class="step"' not in in_chromium(site / "suites" / "nightly.html", tmp_path,
                                             shots / "site-trends.png")  # charts are <img>s
    ARTIFACTS.mkdir(exist_ok=True)
    for shot in shots.iterdir():
        shutil.copy(shot, ARTIFACTS / shot.name)



def in_chromium(page: Path, tmp_path: Path, shot: Path) -> str:
    """tests/report's Chromium check: every image decoded, a screenshot kept."""
    from tests.report.test_report import opened_in_chromium

    return opened_in_chromium(page, tmp_path, shot)
