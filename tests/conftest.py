"""Every test gets its own run lock, so tests (and a developer's own runs) never collide."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_run_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lock = tmp_path / "orchestrator.lock"
    monkeypatch.setenv("ORCH_LOCK", str(lock))
    return lock
