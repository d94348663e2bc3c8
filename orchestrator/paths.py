"""Where this checkout is, and where its built workloads are: the two paths every stage may
need (images are built from them, the lab shares the checkout, provenance asks git)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def workloads_bin_dir() -> Path:
    """This checkout's built guest-workloads binaries: the default of $ORCH_WORKLOADS_BIN
    (settings.py reads it; callers are handed Settings.workloads_bin)."""
    return PROJECT_ROOT / "guest-workloads" / "bin"
