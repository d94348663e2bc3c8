"""Workload benchmarks on this machine (figures printed, no thresholds):
the run-to-run spread (coefficient of variation) of fork-dirty at 128,000 pages over 10 trials,
and the cost of the measurement itself: an empty timed section inside `noop`, and the wall time
of spawning `noop` as a process (what every native trial pays).
Run: make -C guest-workloads && .venv/bin/python bench/bench_workloads.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time

from orchestrator.paths import workloads_bin_dir


def trial_values(argv: list[str], metric: str) -> list[float]:
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)  # noqa: S603
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    return [x["metrics"][metric]["value"] for x in lines
            if x["type"] == "trial" and not x["warmup"]]


def main() -> None:
    bins = workloads_bin_dir()
    fork = trial_values([str(bins / "fork-dirty"), "--pages", "128000", "--warmup", "2",
                         "--trials", "10"], "fork_us")
    mean = statistics.mean(fork)
    print(f"fork-dirty 128,000 pages: median {statistics.median(fork):.0f} us, "
          f"CV {statistics.stdev(fork) / mean * 100:.1f}% over {len(fork)} trials")
    noop = trial_values([str(bins / "noop"), "--trials", "1000"], "noop_ns")
    print(f"noop: empty timed section median {statistics.median(noop):.0f} ns")
    spawn = []
    for _ in range(100):
        t0 = time.perf_counter()
        subprocess.run([str(bins / "noop")], capture_output=True, check=True)  # noqa: S603
        spawn.append(time.perf_counter() - t0)
    print(f"noop: spawning the process median {statistics.median(spawn) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
