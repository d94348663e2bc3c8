"""The README's main job exactly as a new user types it: `orchestrate run` with no suite and
no --results-dir (so the relative ./results), and `scripts/setup`'s final step as CI would run
it. Guests included: libvirtd opens console logs from its own working directory, so a relative
path there once lost every guest trial of this very run while the tests stayed green."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.guests.images import Image
from orchestrator.store import reader, rundir

pytestmark = [pytest.mark.integration, pytest.mark.needs_root]
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TRIALS = 2 * 3 * 6  # [native, tdp] x 3 page counts x (1 warm-up + 5 trials)


def user_env() -> dict[str, str]:
    """The environment of a user who set nothing of ours (the tests' own lock stays)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("ORCH_") or k == "ORCH_LOCK"}


def assert_all_ok_with_guests(run_dir: Path) -> None:
    manifest = rundir.read_manifest(run_dir)
    assert manifest["status"] == "done", manifest.get("outcomes")
    assert manifest["outcomes"] == {"ok": DEFAULT_TRIALS}
    trials = reader.load(run_dir).trials
    assert set(trials["outcome"]) == {"ok"}
    guest_rows = trials[trials["guest"] != "host"]
    assert len(guest_rows) > 0 and set(guest_rows["accel"]) <= {"kvm", "tcg"}
    consoles = list((run_dir / "logs").glob("console-*.log"))
    assert consoles and all(c.stat().st_size > 0 for c in consoles)


def test_orchestrate_run_with_no_arguments_from_any_directory(
        libvirtd: str, mini_image: Image, tmp_path: Path, no_leftover_domains: None) -> None:
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run"], cwd=cwd,
                          env=user_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_all_ok_with_guests(cwd / "results" / "latest")
    shown = subprocess.run([sys.executable, "-m", "orchestrator.cli", "results", "latest"],
                           cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("status: done;")
    assert f"{DEFAULT_TRIALS} ok" in shown.stdout


@pytest.fixture()
def repo_results() -> Iterator[Path]:
    """The checkout's own ./results, put back as it was: only the run this test made goes."""
    root = ROOT / "results"
    latest = root / "latest"
    before = {p.name for p in root.iterdir()} if root.exists() else set()
    old_target = os.readlink(latest) if latest.is_symlink() else None
    yield root
    for path in root.iterdir():
        if path.name not in before:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    if old_target is not None:
        latest.unlink(missing_ok=True)
        latest.symlink_to(old_target)


def test_setup_final_step_as_ci_runs_it(libvirtd: str, mini_image: Image,
                                        repo_results: Path, no_leftover_domains: None) -> None:
    env = {**user_env(), "CI": "true"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup"), "--run-only"], cwd=ROOT,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = (repo_results / "latest").resolve()
    assert run_dir.parent == repo_results.resolve()
    assert_all_ok_with_guests(run_dir)
    assert "status: done;" in done.stdout  # setup shows `orchestrate results latest` at the end
