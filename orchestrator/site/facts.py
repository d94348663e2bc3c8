"""What the site needs of one run, read once and kept in the build state: who, when, how it
ended, its environment, and its run values (analysis/changepoints.py's run_values: one median
per cell and metric with its exact interval)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.analysis import changepoints
from orchestrator.errors import OrchestratorError
from orchestrator.store import reader

GOOD_STATUSES = ("done", "ok")  # fleet/nightly.py's is_good: finished, every trial ok/skipped
GOOD_OUTCOMES = {"ok", "skipped"}


def started(value: Any) -> datetime | None:
    """A manifest's started_at: ISO text, or seconds since the epoch (older runs, tests)."""
    if value in (None, ""):
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError):
        pass
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def environment(manifest: dict[str, Any]) -> dict[str, str]:
    """What, when it changes, makes a host's trend another series: host kernel, microcode,
    QEMU, accelerator and the guest kernels (manifest `host`, `tools`, `kernels`)."""
    host, tools, kernels = (_dict(manifest, k) for k in ("host", "tools", "kernels"))
    qemu = str(tools.get("qemu") or "-").splitlines()[0] if tools.get("qemu") else "-"
    guests = ", ".join(f"{name}: {k.get('release', '?')} ({k.get('kernel_id', '?')})"
                       for name, k in sorted(kernels.items()) if isinstance(k, dict))
    return {"host kernel": str(host.get("kernel_release", "?")),
            "microcode": str(host.get("microcode", "?")), "QEMU": qemu,
            "accelerator": str(host.get("guest_accel", "?")), "guest kernels": guests or "-"}


def _dict(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    value = manifest.get(key)
    return value if isinstance(value, dict) else {}


def is_good(status: str, outcomes: dict[str, Any]) -> bool:
    return status in GOOD_STATUSES and set(outcomes) <= GOOD_OUTCOMES


def runs_facts(paths: list[Path]) -> list[dict[str, Any]]:
    """The runs' facts (JSON-able), in order; a run that cannot be read is kept as broken,
    with why. Run values are computed for all of them at once (one groupby, not one a run)."""
    loaded: list[reader.RunTables] = []
    facts: list[dict[str, Any]] = []
    for path in paths:
        try:
            tables = reader.load(path, quiet=True)
        except OrchestratorError as exc:
            facts.append({"path": str(path), "run_id": path.name, "suite": "?",
                          "host": path.parent.name, "status": "unreadable",
                          "why": exc.one_line(), "outcomes": {}, "started": None, "env": {},
                          "report": None, "values": []})
            continue
        facts.append(_facts_of(path, tables.manifest))
        facts[-1]["_loaded"] = len(loaded)
        loaded.append(tables)
    values = changepoints.run_values(loaded)
    rows: dict[int, list[dict[str, Any]]] = {}
    if not values.empty:
        for row in values.to_dict("records"):
            rows.setdefault(int(row.pop("order")), []).append(
                {str(k): _plain(v) for k, v in row.items()})
    for f in facts:
        if "_loaded" in f:
            f["values"] = rows.get(f.pop("_loaded"), [])
    return facts


def _facts_of(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    host = _dict(manifest, "host")
    when = started(manifest.get("started_at"))
    report = path / "report" / "report.html"
    return {"path": str(path), "run_id": str(manifest["run_id"]),
            "suite": str(manifest["suite_name"]),
            "host": str(host.get("hostname") or path.parent.name),
            "status": str(manifest.get("status", "?")),
            "outcomes": dict(manifest.get("outcomes") or {}),
            "started": when.isoformat() if when else None, "env": environment(manifest),
            "report": str(report) if report.exists() else None, "values": []}


def _plain(value: Any) -> Any:
    """JSON-able: numpy scalars to Python, NaN to None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
