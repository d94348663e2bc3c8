"""The pieces of `orchestrate lab run` that need no L1: the inner job and the collection of
its run directory (the real thing runs in test_lab_run.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from orchestrator import proc
from orchestrator.lab.l1 import L1_MODPROBE_S, Lab, load_kvm
from orchestrator.lab.run import _collect, inner_script
from orchestrator.store import rundir


def test_inner_job_is_labelled_nested_and_reports_its_exit_code() -> None:
    script = inner_script(Path("/src/.venv"), "box-lab")
    assert "env -i " in script  # nothing of the SSH session's environment leaks in
    assert "ORCH_GUEST_LAUNCHER=qemu" in script and "ORCH_IMAGE_CACHE=/mnt/images" in script
    # the label is an option of the run, not an environment variable
    assert "/src/.venv/bin/orchestrate run /mnt/suite.yaml --results-dir /mnt/results " \
           "--accel-label nested-tcg " in script
    assert "ORCH_ACCEL_LABEL" not in script
    assert script.rstrip().endswith("echo $? > /mnt/inner.rc")
    assert "hostname box-lab" in script


def test_collect_moves_the_run_and_records_the_lab(tmp_path: Path) -> None:
    share = tmp_path / "share"
    run = share / "results" / "20261128-100000-s-abcdef"
    (run / "logs").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"run_id": run.name, "status": "done"}))
    (share / "results" / "latest").symlink_to(run.name)
    (share / "inner.log").write_text("orchestrate: 1 trials to run\n")
    root = tmp_path / "root"
    moved = _collect(share, root, {"npt_before": "Y", "npt_after": "Y", "npt_samples": []})
    assert moved == root / run.name and not run.exists()
    manifest = rundir.read_manifest(moved)
    assert manifest["lab"]["npt_after"] == "Y" and manifest["status"] == "done"
    assert (moved / "logs" / "lab-inner.log").read_text().startswith("orchestrate:")
    assert (root / "latest").resolve() == moved.resolve()


def test_collect_without_a_run_directory_says_so(tmp_path: Path) -> None:
    (tmp_path / "inner.log").write_text("orchestrate: error: the mini image is not built\n")
    assert _collect(tmp_path, tmp_path / "root", {}) is None


class RecordingLab:
    """Lab.run's contract, recording each command L1 would run."""

    def __init__(self) -> None:
        self.commands: list[tuple[list[str], float, bool]] = []

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True,
            **_: Any) -> proc.Completed:
        self.commands.append((list(argv), timeout, check))
        return proc.Completed(tuple(argv), 0, "", "")


def test_kvm_is_reloaded_in_l1_as_on_a_host_with_l1s_patience() -> None:
    lab = RecordingLab()
    load_kvm(cast(Lab, lab), npt=False)
    assert lab.commands == [(["modprobe", "-r", "kvm_amd", "kvm"], L1_MODPROBE_S, False),
                            (["modprobe", "kvm", "tdp_mmu=1"], L1_MODPROBE_S, True),
                            (["modprobe", "kvm_amd", "npt=0"], L1_MODPROBE_S, True)]
