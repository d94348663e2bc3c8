"""The regressions page: every open regression across the fleet, newest first, each with its
trend, the compare page of its two runs (written into the site by analysis/compare.py's code,
trial-level tests) and both runs' reports."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.analysis import compatibility
from orchestrator.analysis.compare import compare_tables
from orchestrator.errors import OrchestratorError
from orchestrator.site import pages
from orchestrator.site.state import Writer
from orchestrator.site.suites import Suite, cell_name, night
from orchestrator.site.views import run_href, safe, step_text
from orchestrator.store import reader

log = logging.getLogger(__name__)


def write_regressions(w: Writer, all_suites: list[Suite], charts: dict[str, dict[str, str]],
                      compare: bool = True) -> list[dict[str, Any]]:
    """The page, the compare pages of its steps; returns the steps (for summary.json)."""
    steps = []
    for suite in all_suites:
        runs = {r["run_id"]: r for r in suite.runs}
        for cp in suite.open_regressions():
            before, after = runs[cp.last_before], runs[cp.at_run]
            page = _compare(w, cp.host, before, after) if compare else None
            steps.append({
                **cp.as_json(), "suite": suite.name, "night": night(after),
                "cell": f"{cell_name_of(cp)} {cp.metric}", "stats": step_text(cp),
                "suite_href": f"suites/{safe(suite.name)}.html",
                "trend": f"suites/{safe(suite.name)}.html#"
                         + safe(f"{cp.host}-{cp.cell_id}-{cp.metric}"),
                "chart": charts[suite.name].get(f"{cp.host}/{cp.cell_id}/{cp.metric}"),
                "compare": page, "before_href": run_href(before, w.out, w.root),
                "after_href": run_href(after, w.out, w.root)})
    steps.sort(key=lambda s: (s["night"], s["at_run"], s["key"]), reverse=True)
    view = {"steps": steps}
    w.page("regressions.html", view, lambda: pages.regressions(view))
    return steps


def cell_name_of(cp: Any) -> str:
    return cell_name(json.dumps(cp.params))


def _compare(w: Writer, host: str, before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """The two runs' compare page in the site (None when either run cannot be read)."""
    path = f"compare/{safe(host)}/{safe(before['run_id'])}__{safe(after['run_id'])}.html"
    fps = [w.state.runs.get(r["path"], {}).get("fp") for r in (before, after)]
    try:
        w.page(path, fps, lambda: _render(before, after))
    except OrchestratorError as exc:
        log.warning("no compare page for %s -> %s: %s", before["run_id"], after["run_id"],
                    exc.one_line())
        return None
    return path if (w.out / path).exists() else None


def _render(before: dict[str, Any], after: dict[str, Any]) -> str:
    from orchestrator.analysis.compare_page import write_page  # matplotlib when drawing

    base, new = reader.load(before["path"], quiet=True), reader.load(after["path"], quiet=True)
    params = sorted(set(base.manifest.get("param_columns", {}))
                    | set(new.manifest.get("param_columns", {})))
    changes = compare_tables(base.trials, new.trials, params)
    found = compatibility.differences(base.manifest, new.manifest, base.trials, new.trials)
    with tempfile.TemporaryDirectory() as scratch:
        page = write_page(Path(scratch) / "compare.html", before["run_id"], after["run_id"],
                          changes, found, [])
        return page.read_text(encoding="utf-8")
