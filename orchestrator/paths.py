"""Where this checkout is, and where its built workloads are: the two paths every stage may
need (images are built from them, the lab shares the checkout, provenance asks git)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def workloads_bin_dir() -> Path:
    """The built guest-workloads binaries on this machine (ORCH_WORKLOADS_BIN overrides)."""
    override = os.environ.get("ORCH_WORKLOADS_BIN")
    return Path(override).resolve() if override else PROJECT_ROOT / "guest-workloads" / "bin"
