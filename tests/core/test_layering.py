"""The data path flows one way: readers of tables never reach for guests, proc needs no one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"
TABLE_READERS = ["analysis/stats", "analysis/plots", "analysis/report", "analysis/compare",
                 "analysis/history", "analysis/summary", "store/rundir", "results"]
GUEST_SIDE = {"libvirt", "paramiko", "orchestrator.guests", "orchestrator.run",
              "orchestrator.lab"}


def imports_of(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("name", TABLE_READERS)
def test_table_readers_never_import_guest_machinery(name: str) -> None:
    module = PACKAGE / f"{name}.py"
    bad = {i for i in imports_of(module) if any(i == g or i.startswith(g + ".")
                                                 for g in GUEST_SIDE)}
    assert not bad, f"{name}.py imports {sorted(bad)}"


def test_proc_imports_nothing_of_the_package_but_errors() -> None:
    ours = {i for i in imports_of(PACKAGE / "proc.py") if i.startswith("orchestrator")}
    assert ours <= {"orchestrator.errors", "orchestrator.errors.HarnessError"}


def test_suite_model_knows_nothing_of_hosts_or_guests() -> None:
    ours = {i for i in imports_of(PACKAGE / "suite" / "schema.py")
            if i.startswith("orchestrator")}
    assert ours <= {"orchestrator.suite.units", "orchestrator.suite.units.parse_duration",
                    "orchestrator.suite.units.parse_size"}
