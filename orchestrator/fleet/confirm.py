"""Nightly's verdict from change points, and the confirmation rerun of just the affected cells.

A change point the nightly run just opened has too few runs after it to page anyone
(changepoints.CONFIRM_RUNS). Rather than wait for more nights, the nightly reruns only the
cells it affects, as many times as are missing, within its deadline: the suite reduced to those
cells (same name, so the reruns join the history; a cell's id depends only on its mode, guest,
workload and parameters, so the reduced suite's cells are the same cells). Then the change points
are found again: one that holds with enough runs after it is confirmed; a spike that the reruns
do not repeat is gone or stays unconfirmed, and does not alert.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from orchestrator.analysis import changepoints
from orchestrator.analysis.changepoints import ChangePoint
from orchestrator.analysis.history import History, history
from orchestrator.errors import BadInput

CONFIRM_DIR = ".nightly-confirm"


def verdict(root: Path, suite_name: str, threshold: float, host: str) -> History:
    """This host's change points of the suite under root, triage applied."""
    found = history(root, suite_name, threshold=threshold)
    mine = [c for c in found.change_points if c.host == host]
    return History(found.runs, mine, [p for p in found.platform_changes if p.host == host])


def pending(found: History) -> list[ChangePoint]:
    """Open regressions that want more runs after them before they may alert."""
    return [c for c in found.change_points
            if c.open_regression and not c.confirmed]


def reruns_needed(points: list[ChangePoint]) -> int:
    return max((changepoints.CONFIRM_RUNS - c.runs_after for c in points), default=0)


def reduced_suite(suite: Path, points: list[ChangePoint], out_dir: Path) -> Path:
    """The suite with only the workloads, and parameter values, of the points' cells."""
    data = YAML(typ="safe").load(suite.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("workloads"), list):
        raise BadInput(f"{suite}: no workloads to reduce", hint="the nightly's suite file")
    kept = []
    for workload in data["workloads"]:
        cells = [c.params for c in points if c.params.get("workload") == workload.get("name")]
        if cells:
            kept.append({**workload, "params": _narrowed(workload.get("params") or {}, cells)})
    data["workloads"] = kept
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / suite.name
    out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")  # JSON is YAML
    return out


def _narrowed(params: dict[str, Any], cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Each swept parameter cut to the values the cells have (the others left as they are)."""
    out = {}
    for name, values in params.items():
        if not isinstance(values, list):
            out[name] = values
            continue
        wanted = [v for v in values if any(_same(v, c.get(name)) for c in cells)]
        out[name] = wanted or values
    return out


def _same(a: Any, b: Any) -> bool:
    """Suite values against the table's (a parameter column may hold '4096' or 50.0)."""
    if str(a) == str(b):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False
