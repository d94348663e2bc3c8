"""The fleet site's build time: a year of nights of 10 hosts x 5 suites, from scratch and
after one more night.

    .venv/bin/python -m bench.bench_site [--hosts 10 --suites 5 --nights 365] [--keep DIR]

The data are real (minimal) run directories, written through the store's own journal writer:
a manifest (host, kernel, microcode, QEMU, status) and trials.jsonl with 4 cells x 5 trials of
one timed metric; no Parquet tables (a run killed before writing them looks the same: the
reader builds its tables from the journal). One cell of every host's first suite gets a 20 %
step halfway through the year, every third host a kernel update, and one host's last night
fails. Prints: synthesis time, from-scratch build, a rebuild with nothing new, and the build
after one more night; the site's size. No thresholds: figures to read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from orchestrator.model import Metric, Outcome, TrialRecord
from orchestrator.site.build import build
from orchestrator.store import rundir
from orchestrator.store.journal import Journal

FIRST_NIGHT = 1_767_225_600.0  # 2026-01-01 00:00 UTC
DAY = 86400.0
CELLS = {"small": 1280, "medium": 16384, "large": 128000, "huge": 262144}
TRIALS = 5


def night_run(root: Path, host: int, suite: int, night: int, nights: int,
              rng: np.random.Generator) -> Path:
    name = f"host{host:02d}"
    run_dir = root / name / f"{night:04d}-suite{suite}-{name}"
    rundir.RunDir(run_dir).logs.mkdir(parents=True)
    kernel = "6.8.0" if host % 3 == 0 and night >= nights * 2 // 3 else "6.6.0"
    failed = host == 1 and suite == 0 and night == nights - 1
    rundir.RunDir(run_dir).create_manifest({
        "run_id": run_dir.name, "suite_name": f"suite{suite}", "git_rev": "abc",
        "status": "failed" if failed else "done", "outcomes": {"ok": len(CELLS) * TRIALS},
        "started_at": str(FIRST_NIGHT + night * DAY + 3600 * host),
        "host": {"hostname": name, "kernel_release": kernel, "microcode": "0xa"},
        "tools": {"qemu": "8.2.2"}, "param_columns": {"pages": "int"}})
    host_load = rng.normal(1.0, 0.02)  # a neighbour moves every cell of a run together
    with Journal(run_dir) as journal:
        for cell, pages in CELLS.items():
            step = 1.2 if suite == 0 and cell == "large" and night >= nights // 2 else 1.0
            for trial in range(TRIALS):
                value = pages * 0.3 * host_load * step * rng.normal(1.0, 0.02)
                journal.append(TrialRecord(
                    cell_id=f"native-{cell}", trial=trial, warmup=False,
                    paging_requested="native", paging_mode="native", accel="native",
                    guest="host", workload="fork", kind="fork-dirty", params={"pages": pages},
                    outcome=Outcome.OK, reason="", metrics=(Metric("fork_us", value, "us"),),
                    started_at=FIRST_NIGHT + night * DAY + trial))
    return run_dir


def synthesize(root: Path, hosts: int, suites: int, nights: int) -> None:
    rng = np.random.default_rng(7)
    for night in range(nights):
        for host in range(hosts):
            for suite in range(suites):
                night_run(root, host, suite, night, nights + 1, rng)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the build's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--suites", type=int, default=5)
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep the data and site here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-site-"))
    root, site = work / "results", work / "site"
    began = time.perf_counter()
    synthesize(root, args.hosts, args.suites, args.nights)
    runs = args.hosts * args.suites * args.nights
    print(f"synthesized {runs} runs ({args.hosts} hosts x {args.suites} suites x "
          f"{args.nights} nights) in {time.perf_counter() - began:.1f} s")
    for label in ("from scratch", "nothing new"):
        cpu = _cpu()
        built = build(root, site, jobs=args.jobs)
        print(f"{label:>13}: {built.seconds:6.2f} s, {_cpu() - cpu:6.1f} s of CPU "
              f"({built.read} runs read, {len(built.written)} files written, "
              f"{len(built.kept)} unchanged, {built.summary['open']} open regressions)")
    rng = np.random.default_rng(8)
    for host in range(args.hosts):
        for suite in range(args.suites):
            night_run(root, host, suite, args.nights, args.nights + 1, rng)
    cpu = _cpu()
    built = build(root, site, jobs=args.jobs)
    print(f"{'a new night':>13}: {built.seconds:6.2f} s, {_cpu() - cpu:6.1f} s of CPU "
          f"({built.read} runs read, "
          f"{len(built.written)} files written, {len(built.kept)} unchanged)")
    files, total = size(site)
    state = (site / ".site-state.json").stat().st_size
    print(f"load average during the run: {os.getloadavg()[1]:.1f} (on {os.cpu_count()} CPUs: "
          "other work on the machine slows the wall-clock figures, not the CPU ones)")
    print(f"site: {files} files, {total / 1e6:.1f} MB (of which the build state "
          f"{state / 1e6:.1f} MB)")
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
