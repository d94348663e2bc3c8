"""`orchestrate reproduce SEED` natively, end to end through the CLI (#16)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SUITES = Path(__file__).resolve().parents[2] / "suites"


def test_reproduce_natively_end_to_end(tmp_path: Path, bin_dir: Path) -> None:
    """A one-point seed suite of our own, run through the CLI: the native rows are measured,
    and the report's section says which modes were not."""
    suites = tmp_path / "suites"
    suites.mkdir()
    text = (SUITES / "pte-density.yaml").read_text()
    text = text.replace("[1, 2, 4, 8, 16, 64, 256, 512]", "[2, 8]")
    text = text.replace("trials: {min: 10, max: 20, ci_halfwidth: 2%}", "trials: 3")
    (suites / "tiny.yaml").write_text(text.replace("name: pte-density", "name: tiny"))
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "reproduce", "000",
                           "--suites", str(suites), "--results-dir", str(tmp_path / "r"),
                           "--where", "native"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "reproduce 000: tiny -> native (as asked (--where native))" in done.stdout
    [run] = [p for p in (tmp_path / "r").iterdir() if p.is_dir() and not p.is_symlink()]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["suite"]["paging"] == ["native"]
    assert manifest["suite"]["reference"][0]["seed"] == "000"
    report = (run / "report" / "report.md").read_text()
    assert "| ours: native (for scale) | growth (last / first) | 2 .. 8 |" in report
    assert "Ours: tdp and shadow were not both measured" in report
    assert f"report: {run / 'report' / 'report.html'}" in done.stdout
