"""From the suites to the site's files: each page's data (its input digest) and its writing.

Paths inside the site: index.html, regressions.html, summary.json, suites/SUITE.html,
trends/SUITE/HOST/CELL-METRIC.svg, spark/HOST/SUITE.svg, compare/HOST/BASE__NEW.html. Runs
are linked where they lie (their report/report.html, else their manifest.json), relative to
the page, so the site opens from disk or from a server rooted above both.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.analysis.changepoints import ChangePoint
from orchestrator.site import pages, svg
from orchestrator.site.state import Writer
from orchestrator.site.suites import STATUSES, Suite, cell_name, headline, latest_night, status

SCHEMA = "orchestrate.site/2"


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def rel(target: str | Path, page_dir: Path) -> str:
    return Path(os.path.relpath(target, page_dir)).as_posix()


@functools.lru_cache(maxsize=64)
def _to_root(root: Path, page_dir: Path) -> str:
    return rel(root, page_dir)


def run_href(run: dict[str, Any], page_dir: Path, root: Path) -> str:
    """A run's report (else its manifest), relative to the page: the page's way to the root
    (computed once a page directory) and the run's path under it."""
    target = run["report"] or f"{run['path']}/manifest.json"
    under = os.path.relpath(target, root) if not target.startswith(str(root) + "/") \
        else target[len(str(root)) + 1:]
    return f"{_to_root(root, page_dir)}/{under}"


def trend_path(suite: str, host: str, cell: str, metric: str) -> str:
    return f"trends/{safe(suite)}/{safe(host)}/{safe(cell)}-{safe(metric)}.svg"


def step_text(cp: ChangePoint) -> str:
    state = cp.state(f"unconfirmed ({cp.runs_after} runs after)")
    return (f"{cp.last_before} -> {cp.at_run}: {cp.magnitude()}, "
            f"{'regression' if cp.regression else 'improvement'}, {state}, {cp.status}")


def write_suite(w: Writer, suite: Suite) -> dict[str, Any]:
    """The suite's trend charts and page; returns where each chart is (for the other pages)."""
    where: dict[str, str] = {}
    hosts = []
    runs_shown = _runs(suite)
    nights = {r["run_id"]: r["night"] for r in runs_shown}
    for host in suite.hosts:
        charts = []
        rows = suite.values[suite.values["host"] == host] if not suite.values.empty \
            else suite.values
        env = [e for e in suite.env_changes if e.host == host]
        for (cell, metric, unit), data in rows.groupby(["cell_id", "metric", "unit"]) \
                if not rows.empty else []:
            chart = _trend(w, suite, host, str(cell), str(metric), str(unit),
                           data.sort_values("order"), nights, env)
            where[f"{host}/{cell}/{metric}"] = chart["src"]
            charts.append({**chart, "src": "../" + chart["src"]})
        pages_dir = w.out / "suites"
        runs = [{"night": r["night"], "run_id": r["run_id"], "status": r["status"],
                 "href": run_href(r, pages_dir, w.root)} for r in runs_shown
                if r["host"] == host]
        hosts.append({"host": host, "anchor": "h-" + safe(host), "charts": charts,
                      "runs": runs,
                      "env": [vars(e) for e in env]})
    view = {"suite": suite.name, "hosts": hosts}
    w.page(f"suites/{safe(suite.name)}.html", view, lambda: pages.suite_page(view))
    return where


def _runs(suite: Suite) -> list[dict[str, Any]]:
    return [{"run_id": r["run_id"], "host": r["host"], "status": r["status"],
             "report": r["report"], "path": r["path"], "night": str(r["started"] or "?")[:10]}
            for r in suite.runs]


def _trend(w: Writer, suite: Suite, host: str, cell: str, metric: str, unit: str,
           data: pd.DataFrame, nights: dict[str, str], env: list[Any]) -> dict[str, Any]:
    found = [c for c in suite.points if (c.host, c.cell_id, c.metric) == (host, cell, metric)]
    points = [svg.Point(str(n), float(m), float(lo), float(hi)) for n, m, lo, hi in zip(
        data["night"], data["median"], data["low"], data["high"], strict=True)]
    cuts = sorted({nights[c.at_run] for c in found} | {e.night for e in env})
    ranges = [svg.Range(nights[c.last_before], nights[c.at_run],
                        f"x{c.ratio:.2f} p={c.pvalue:.1g}", step_text(c)) for c in found]
    title = f"{host}: {cell_name(str(data['params'].iloc[0]))} - {metric}"
    bands = _bands(points, cuts)
    markers = [(e.night, e.what) for e in env]
    inputs = {"points": [vars(p) for p in points], "bands": [vars(b) for b in bands],
              "ranges": [vars(r) for r in ranges],
              "env": markers, "title": title, "unit": unit}
    src = trend_path(suite.name, host, cell, metric)
    w.page(src, inputs, lambda: svg.trend(points, bands, ranges, markers, title,
                                          f"{metric} ({unit})"))
    return {"src": src, "title": title, "anchor": safe(f"{host}-{cell}-{metric}"),
            "n": len(points), "steps": [step_text(c) for c in found]}


def _bands(points: list[svg.Point], cuts: list[str]) -> list[svg.Band]:
    """The host's own noise per segment (cut at change points and environment changes):
    median +- 2 x 1.4826 x MAD of the segment's run medians (a robust 95 %)."""
    bands: list[svg.Band] = []
    segment: list[svg.Point] = []
    for p in [*points, None]:
        if p is None or (segment and any(segment[-1].night < c <= p.night for c in cuts)):
            values = np.array([s.median for s in segment if np.isfinite(s.median)])
            if len(values) >= 3:
                mid = float(np.median(values))
                spread = 2 * 1.4826 * float(np.median(np.abs(values - mid)))
                bands.append(svg.Band(segment[0].night, segment[-1].night, mid - spread,
                                      mid + spread))
            segment = []
        if p is not None:
            segment.append(p)
    return bands


def write_index(w: Writer, all_suites: list[Suite]) -> dict[str, Any]:
    """The sparklines, the index and the summary data (returned for summary.json)."""
    last = latest_night(all_suites)
    hosts = sorted({h for s in all_suites for h in s.hosts})
    cells: dict[str, dict[str, Any]] = {h: {} for h in hosts}
    heads = []
    for suite in all_suites:
        head = headline(suite)
        heads.append({"name": suite.name, "href": f"suites/{safe(suite.name)}.html",
                      "headline": f"{cell_name(head[0])} {head[1]}" if head else "-"})
        for host in hosts:
            cell = status(suite, host, last)
            last_run = suite.runs_of(host)[-1] if suite.runs_of(host) else None
            cells[host][suite.name] = {
                **cell, "href": f"suites/{safe(suite.name)}.html#h-{safe(host)}",
                "report": run_href(last_run, w.out, w.root) if last_run else None,
                "spark": _spark(w, suite, host, head), "n": len(suite.runs_of(host))}
    counts = {k: sum(c["status"] == k for h in cells.values() for c in h.values())
              for k in STATUSES}
    view = {"latest": last, "hosts": [{"name": h} for h in hosts], "suites": heads,
            "cells": cells, "counts": counts,
            "open": sum(len(s.open_regressions()) for s in all_suites)}
    w.page("index.html", view, lambda: pages.index(view))
    return view


def _spark(w: Writer, suite: Suite, host: str, head: tuple[str, str] | None) -> str | None:
    if head is None or suite.values.empty:
        return None
    v = suite.values
    rows = v[(v["host"] == host) & (v["params"] == head[0]) & (v["metric"] == head[1])]
    if rows.empty:
        return None
    rows = rows.sort_values("order")
    ids = list(rows["run_id"])
    marked = [ids.index(c.at_run) for c in suite.points if c.host == host
              and (c.metric, c.cell_id) == (head[1], rows["cell_id"].iloc[0]) and c.at_run in ids]
    values = [float(x) for x in rows["median"]]
    path = f"spark/{safe(host)}/{safe(suite.name)}.svg"
    w.page(path, [values, marked], lambda: svg.sparkline(values, marked))
    return path


def write_summary(w: Writer, index: dict[str, Any], steps: list[dict[str, Any]],
                  all_suites: list[Suite], threshold: float,
                  damaged: list[dict[str, str]]) -> None:
    """summary.json, for alerting: a stable shape (keys may be added, never removed)."""
    data = {"schema": SCHEMA, "latest_night": index["latest"],
            "threshold": threshold, "counts": index["counts"],
            "cells": [{"host": h, "suite": s, **{k: c[k] for k in (
                "status", "night", "run_id", "open", "alerts")}}
                for h, row in index["cells"].items() for s, c in row.items()],
            "open_regressions": steps,
            "environment_changes": [{"suite": s.name, **vars(e)} for s in all_suites
                                    for e in s.env_changes],
            "damaged_runs": damaged}
    w.page("summary.json", data,
           lambda: json.dumps(_clean(data), indent=1, default=str, allow_nan=False) + "\n")


def _clean(data: Any) -> Any:
    """JSON's null for NaN (alerting scripts parse strict JSON)."""
    if isinstance(data, dict):
        return {k: _clean(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_clean(v) for v in data]
    if isinstance(data, float) and not np.isfinite(data):
        return None
    return data
