"""`orchestrate compare BASE NEW`: per cell and metric, did the new run get worse?

Only comparable runs are compared (`compatibility`: same suite, host, accelerator, verified
paging modes, kernels, QEMU and guests, unless `--allow` names the difference being judged or
`--force` accepts them all, loudly). Every cell of either run is accounted for: one measured on
both sides gets statistics; one that ran ok in the base and not in the new run (errors, skips,
missing) is `lost`, a failure like a regression; one only in the new run is `new`.

A change is flagged only when all of these hold:
- significant after controlling the false-discovery rate over every cell tested
  (Benjamini-Hochberg q < 0.05). The p-value asks the question that matters: is the new run's
  median one this host produces anyway? When the results directory holds at least three
  earlier finished runs of the suite on this host, it is a run-level test against their
  medians (`noise.History`: Student t on log medians; trials within a run agree more closely
  than runs do, so a trial-level test would call every between-run shift significant);
  otherwise a two-sided Mann-Whitney test on the two runs' trials (`p_basis` says which);
- the 95% BCa bootstrap interval of the ratio of medians (new/base) excludes 1;
- larger than `--threshold`.
`noise` shows the host's run-to-run noise: the relative half-width of a 99% prediction
interval for a run's median from that history.
Times (ns..s) are worse higher, rates (pages/s, ...) worse lower; counts and other units are
`changed`, never a regression; counters that are zero on both sides are `no signal`.
Exit 0: nothing worse; 4: a regression or a lost cell; 2: the runs are not comparable.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from orchestrator.analysis import compatibility, noise
from orchestrator.analysis.intervals import ratio_interval
from orchestrator.analysis.stats import higher_is_worse, measured, shown
from orchestrator.analysis.summary import print_json
from orchestrator.errors import BadInput, ExitCode
from orchestrator.store import reader

log = logging.getLogger(__name__)

ALPHA = 0.05
MIN_TRIALS = 3
SCHEMA = "orchestrate.compare/1"
TESTED = ("regression", "improvement", "unchanged", "changed")
WORSE = ("regression", "lost")


@dataclass(frozen=True)
class Change:
    cell_id: str
    paging_mode: str
    guest: str
    workload: str
    metric: str
    unit: str
    params: str
    base_n: int
    new_n: int
    base_median: float
    new_median: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    p_basis: str  # "runs (n=9)": against this host's earlier runs; "trials": Mann-Whitney
    q_value: float  # Benjamini-Hochberg over every cell tested in this comparison
    noise: float  # this host's run-to-run noise: a 99% prediction half-width; NaN: no history
    verdict: str  # regression | improvement | unchanged | changed | no signal | too few trials
    #               | no ratio (base median 0) | lost | new


def _describe(row: pd.Series, params: list[str]) -> str:
    return " ".join(f"{p}={shown(row[p])}" for p in params if p in row and pd.notna(row[p]))


def _blank(rows: pd.DataFrame, params: list[str], verdict: str, base_n: int = 0,
           new_n: int = 0) -> Change:
    first = rows.iloc[0]
    nan = float("nan")
    return Change(str(first["cell_id"]), str(first["paging_mode"]), str(first["guest"]),
                  str(first["workload"]), str(first["metric"]), str(first["unit"]),
                  _describe(first, params), base_n, new_n, nan, nan, nan, nan, nan, nan, "",
                  nan, nan, verdict)


def _tested(bv: NDArray[Any], nv: NDArray[Any], rows: pd.DataFrame, params: list[str],
            history: noise.History | None) -> Change:
    from scipy.stats import mannwhitneyu  # slow to import: only when comparing

    change = _blank(rows, params, "unchanged", len(bv), len(nv))
    bm, nm = float(np.median(bv)), float(np.median(nv))
    interval = ratio_interval(nv, bv)
    if history is not None:
        p, basis = history.p_value(nm), f"runs (n={len(history.medians)})"
        spread = history.halfwidth()
    else:
        p, basis = float(mannwhitneyu(bv, nv, alternative="two-sided").pvalue), "trials"
        spread = float("nan")
    return replace(change, base_median=bm, new_median=nm, ratio=nm / bm, ci_low=interval.low,
                   ci_high=interval.high, p_value=p, p_basis=basis, noise=spread)


def _cell(base: pd.DataFrame, new: pd.DataFrame, params: list[str],
          history: noise.History | None) -> Change:
    """One (cell, metric): tested, or why it cannot be."""
    bv = base["value"].to_numpy(float) if not base.empty else np.array([])
    nv = new["value"].to_numpy(float) if not new.empty else np.array([])
    rows = new if not new.empty else base
    if base.empty:
        return _blank(rows, params, "new", 0, len(nv))
    if new.empty:
        return _blank(rows, params, "lost", len(bv), 0)
    if not np.any(bv) and not np.any(nv):
        return _blank(rows, params, "no signal", len(bv), len(nv))
    if min(len(bv), len(nv)) < MIN_TRIALS:
        return _blank(rows, params, "too few trials", len(bv), len(nv))
    if np.median(bv) == 0:  # a counter mostly at zero: no ratio to speak of
        return _blank(rows, params, "no ratio", len(bv), len(nv))
    return _tested(bv, nv, rows, params, history)


def _identities(trials: pd.DataFrame) -> pd.DataFrame:
    """Every (cell, metric) the run planned and reached a metric for, ok or not."""
    known = trials[trials["metric"].fillna("") != ""]
    return known.drop_duplicates(["cell_id", "metric"])


def compare_tables(base: pd.DataFrame, new: pd.DataFrame, params: list[str],
                   threshold: float = 0.05,
                   history: dict[tuple[str, str], noise.History] | None = None) -> list[Change]:
    b, n = measured(base), measured(new)
    keys = pd.concat([_identities(base)[["cell_id", "metric"]],
                      _identities(new)[["cell_id", "metric"]]]).drop_duplicates()
    b_groups = dict(tuple(b.groupby(["cell_id", "metric"])))
    n_groups = dict(tuple(n.groupby(["cell_id", "metric"])))
    empty = b.iloc[0:0]
    changes = []
    for cell, metric in keys.itertuples(index=False):
        key = (cell, metric)
        base_rows, new_rows = b_groups.get(key, empty), n_groups.get(key, empty)
        if base_rows.empty and new_rows.empty:
            continue  # never measured on either side (a skipped or failed cell both times)
        changes.append(_cell(base_rows, new_rows, params, (history or {}).get(key)))
    return judge(changes, threshold)


def judge(changes: list[Change], threshold: float) -> list[Change]:
    """q-values over the tested cells, then each tested cell's verdict."""
    from scipy.stats import false_discovery_control

    tested = [i for i, c in enumerate(changes) if c.verdict in TESTED]
    if not tested:
        return changes
    q = false_discovery_control([changes[i].p_value for i in tested], method="bh")
    out = list(changes)
    for i, q_value in zip(tested, q, strict=True):
        c = replace(out[i], q_value=float(q_value))
        out[i] = replace(c, verdict=_verdict(c, threshold))
    return out


def _verdict(c: Change, threshold: float) -> str:
    excludes_one = c.ci_low > 1 or c.ci_high < 1
    if not (c.q_value < ALPHA and excludes_one and abs(c.ratio - 1) > threshold):
        return "unchanged"
    worse = higher_is_worse(c.unit)
    if worse is None:
        return "changed"
    return "regression" if (c.ratio > 1) == worse else "improvement"


def smallest_possible_p(n_base: int, n_new: int) -> float:
    """A two-sided Mann-Whitney test on n and m trials can never go below 2 / C(n+m, n)."""
    from math import comb

    return 2 / comb(n_base + n_new, n_base)


# ---- the verb ------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("compare", help="flag significant changes between two runs")
    cmd.add_argument("base", help="the baseline run (directory, name or 'latest')")
    cmd.add_argument("new", help="the run to judge")
    cmd.add_argument("--threshold", type=float, default=0.05,
                     help="smallest relative change worth flagging (default 0.05 = 5%%)")
    cmd.add_argument("--allow", action="append", default=[], choices=compatibility.KEYS,
                     metavar="KEY", help="a difference between the runs that is the change "
                     "being judged, e.g. host-kernel or qemu (repeatable; keys: "
                     + ", ".join(compatibility.KEYS) + ")")
    cmd.add_argument("--force", action="store_true",
                     help="compare runs that differ in more than the judged change (warns)")
    cmd.add_argument("--json", action="store_true", help="machine-readable output")
    cmd.add_argument("--html", type=Path, default=None, metavar="PAGE",
                     help="also write the comparison as one self-contained HTML page")
    cmd.add_argument("--results-dir", default=None,
                     help="where run names and earlier runs (for the noise) are looked up")
    cmd.set_defaults(func=cmd_compare)


def _checked_differences(args: argparse.Namespace, base: reader.RunTables,
                         new: reader.RunTables) -> list[compatibility.Difference]:
    found = compatibility.differences(base.manifest, new.manifest, base.trials, new.trials)
    unexpected = [d for d in found if d.key not in args.allow]
    if unexpected and not args.force:
        raise BadInput("the runs differ in more than the change being judged: "
                       + "; ".join(d.text for d in unexpected),
                       hint="name the judged change with --allow KEY ("
                       + ", ".join(sorted({d.key for d in unexpected}))
                       + "), or --force to compare anyway")
    for d in unexpected:
        log.warning("comparing anyway (--force): %s", d.text)
    return found


def cmd_compare(args: argparse.Namespace) -> int:
    if not 0 <= args.threshold < 10:
        raise BadInput(f"--threshold {args.threshold} is not a fraction",
                       hint="5%% is --threshold 0.05")
    root = Path(args.settings.results if args.results_dir is None else args.results_dir)
    base, new = reader.load(args.base, root), reader.load(args.new, root)
    found = _checked_differences(args, base, new)
    params = sorted(set(base.manifest.get("param_columns", {}))
                    | set(new.manifest.get("param_columns", {})))
    history = noise.host_history(root, base.manifest, exclude={new.manifest["run_id"]})
    changes = compare_tables(base.trials, new.trials, params, args.threshold, history)
    worse = [c for c in changes if c.verdict in WORSE]
    if args.json:
        print_json({"schema": SCHEMA, "base": base.manifest["run_id"],
                    "new": new.manifest["run_id"], "threshold": args.threshold,
                    "alpha_fdr": ALPHA, "differences": [asdict(d) for d in found],
                    "regressions": sum(c.verdict == "regression" for c in changes),
                    "lost": sum(c.verdict == "lost" for c in changes),
                    "unreadable_lines": {"base": base.unreadable, "new": new.unreadable},
                    "changes": [asdict(c) for c in changes]})
    else:
        _print(changes, base.manifest["run_id"], new.manifest["run_id"], found, args.allow)
    if args.html:
        from orchestrator.analysis.compare_page import write_page  # matplotlib when drawing

        page = write_page(args.html, base.manifest["run_id"], new.manifest["run_id"], changes,
                          found, args.allow)
        log.info("page: %s", page)
    return ExitCode.REGRESSION if worse else ExitCode.OK


def _print(changes: list[Change], base: str, new: str,
           found: list[compatibility.Difference], allowed: list[str]) -> None:
    tested = [c for c in changes if c.verdict in TESTED]
    runs = next((c.p_basis for c in tested if c.p_basis.startswith("runs")), "")
    basis = (f"tested against this host's earlier {runs}" if runs else
             "no history of this suite on this host: trial-level tests only")
    print(f"compare {base} -> {new}: {len(changes)} cell metrics, {len(tested)} tested "
          f"(Benjamini-Hochberg q < {ALPHA}, 95% BCa interval of the ratio of medians; "
          f"{basis})")
    for d in found:
        judged = "the change being judged" if d.key in allowed else "DIFFERS (--force)"
        print(f"  {judged}: {d.text}")
    for c in changes:
        if c.verdict in ("unchanged", "no signal", "no ratio"):
            continue
        print("  " + _line(c))
    _power_note(tested)
    counts = {v: sum(c.verdict == v for c in changes) for v in ("regression", "lost", "new")}
    print(f"{counts['regression']} regression(s), {counts['lost']} lost cell(s), "
          f"{counts['new']} new cell(s)")


def _line(c: Change) -> str:
    where = f"{c.paging_mode}/{c.guest} {c.workload} {c.params} {c.metric}".replace("  ", " ")
    if c.verdict in ("lost", "new", "too few trials"):
        return f"{c.verdict:12} {where} (trials measured: base {c.base_n}, new {c.new_n})"
    noise_text = f", host noise +-{c.noise:.1%}" if np.isfinite(c.noise) else ""
    return (f"{c.verdict:12} {where}: {c.base_median:.4g} -> {c.new_median:.4g} {c.unit} "
            f"(x{c.ratio:.3f}, 95% CI {c.ci_low:.3f}..{c.ci_high:.3f}, p={c.p_value:.2g} "
            f"vs {c.p_basis}, q={c.q_value:.2g}{noise_text})")


def _power_note(tested: list[Change]) -> None:
    """Say when the trial counts make a single cell's change undetectable after the FDR."""
    tested = [c for c in tested if c.p_basis == "trials"]  # run-level tests have their own n
    if not tested:
        return
    n_base = min(c.base_n for c in tested)
    n_new = min(c.new_n for c in tested)
    best_q = smallest_possible_p(n_base, n_new) * len(tested)
    if best_q >= ALPHA:
        print(f"  note: with {n_base} vs {n_new} trials a cell's p-value is at least "
              f"{smallest_possible_p(n_base, n_new):.2g}; over {len(tested)} tested cells a "
              "change in one cell alone cannot reach q < 0.05: run more trials")
