"""One build of the site: read what changed, detect, write what changed.

Runs whose fingerprint matches the build state keep their facts (no table is reread); a suite
whose runs did not change keeps its change points; a page whose inputs did not change is
neither rendered nor rewritten. A from-scratch build reads every run, in `jobs` processes.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.analysis import changepoints, triage
from orchestrator.errors import BadInput
from orchestrator.site import scan, state, suites, views
from orchestrator.site.facts import runs_facts
from orchestrator.site.regressions import write_regressions

log = logging.getLogger(__name__)

PARALLEL_FROM = 64  # fewer runs to read: not worth starting processes
CHUNK = 200  # runs read by one process at a time (their run values in one groupby)


@dataclass
class Built:
    out: Path
    runs: int
    read: int  # runs whose facts were (re)read
    seconds: float
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def check(root: Path, out: Path) -> None:
    """Bad input before anything is written: one line and a hint each."""
    if not root.is_dir():
        raise BadInput(f"results root {root} is not a directory",
                       hint="ROOT is where collect.yml gathers <host>/<run_id> "
                            "(or one host's runs)")
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file", hint="give a directory for the site")
    run = scan.inside_a_run(out)
    if run is not None:
        raise BadInput(f"--out {out} lies inside the run directory {run}",
                       hint="write the site beside the runs, e.g. --out ROOT/site")


def build(root: Path, out: Path, min_magnitude: float = changepoints.MIN_MAGNITUDE,
          jobs: int | None = None, compare: bool = True) -> Built:
    began = time.perf_counter()
    check(root, out)
    found = scan.find_runs(root.absolute(), skip=out)
    if not found:
        raise BadInput(f"no runs under {root.resolve()}",
                       hint="ROOT holds <host>/<run_id>/manifest.json (ansible/collect.yml) "
                            "or one host's <run_id>/manifest.json")
    out.mkdir(parents=True, exist_ok=True)
    st = state.load(out)
    facts, read = _facts(found, st, jobs)
    damaged = [f for f in facts if f["status"] == "unreadable"]
    if damaged:  # like `orchestrate results`: a damaged run never hides the others
        log.warning("skipped %d damaged run(s), e.g. %s", len(damaged), damaged[0]["why"])
    facts = [f for f in facts if f["status"] != "unreadable"]
    all_suites = suites.suites(facts, st, triage.load(root), min_magnitude,
                               jobs or os.cpu_count() or 1)
    w = state.Writer(out, st, root.absolute())
    charts = {s.name: views.write_suite(w, s) for s in all_suites}
    index = views.write_index(w, all_suites)
    steps = write_regressions(w, all_suites, charts, compare)
    views.write_summary(w, index, steps, all_suites, min_magnitude,
                        [{"path": f["path"], "why": f["why"]} for f in damaged])
    removed = w.prune()
    if read or w.written or removed:  # else the state on disk is this one
        state.save(out, st)
    return Built(out, len(found), read, time.perf_counter() - began, w.written, w.kept,
                 removed, {"latest": index["latest"], "counts": index["counts"],
                           "open": len(steps)})


def _facts(found: list[scan.Found], st: state.State, jobs: int | None
           ) -> tuple[list[dict[str, Any]], int]:
    """Every run's facts: from the state when its fingerprint is unchanged, else read."""
    stale = [f for f in found if st.runs.get(str(f.path), {}).get("fp") != f.fingerprint]
    workers = jobs or os.cpu_count() or 1
    chunks = [[f.path for f in stale[i:i + CHUNK]] for i in range(0, len(stale), CHUNK)]
    if len(stale) >= PARALLEL_FROM and workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            fresh = [f for chunk in pool.map(runs_facts, chunks) for f in chunk]
    else:
        fresh = [f for chunk in chunks for f in runs_facts(chunk)]
    for f, facts in zip(stale, fresh, strict=True):
        st.runs[str(f.path)] = {"fp": f.fingerprint, "facts": facts}
    present = {str(f.path) for f in found}
    for gone in set(st.runs) - present:
        del st.runs[gone]
    return [st.runs[str(f.path)]["facts"] for f in found], len(stale)
