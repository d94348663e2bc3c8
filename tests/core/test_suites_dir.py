"""Every suite shipped in suites/ and the embedded default is valid and plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli.run import DEFAULT_SUITE
from orchestrator.suite.loader import load_suite
from orchestrator.suite.plan import make_plan

SUITES = sorted((Path(__file__).resolve().parents[2] / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", [*SUITES, DEFAULT_SUITE], ids=lambda p: p.name)
def test_shipped_suite_is_valid(path: Path) -> None:
    suite = load_suite(path).suite
    assert make_plan(suite).counts()["trials"] > 0


def test_there_are_seed_suites() -> None:
    names = {p.stem for p in SUITES}
    assert {"fork-dirty-pages", "pte-density", "hugepage-fork", "fault-around",
            "mprotect-ranges"} <= names
