"""Ours beside theirs: a seed suite's published figures (its manifest's `suite.reference`) set
beside what this run measured, as shapes, since era and platform differ.

For reference series (their values against a swept parameter, each played by one of our paging
modes): their value and our median (95% interval, n) at each of their parameter values; the
growth factor of each curve between the ends both measured; the ratio between their two
mechanisms and between our two modes (ours with its BCa interval) at each shared value; the
break-even (where two curves cross, interpolated on a log axis) as published, as computed from
their table, and as measured. For reference ratios (one parameter's two settings): theirs
beside ours per mode and setting of the other parameters. Rows whose paging mode is not one the
reference names (TCG rows are `tcg`) are not ours to compare, and the table says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from orchestrator.analysis.intervals import ratio_interval
from orchestrator.analysis.page import Block, Figure, Heading, Items, Table, Text
from orchestrator.analysis.stats import crossings, measured

RowDict = dict[str, Any]


def references(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct references of the runs' suites, in order."""
    seen: dict[str, dict[str, Any]] = {}
    for manifest in manifests:
        for ref in (manifest.get("suite") or {}).get("reference") or []:
            seen.setdefault(repr(sorted(ref.items())), ref)
    return list(seen.values())


def _theirs(series: dict[str, Any]) -> dict[float, float]:
    # JSON object keys are strings: the axis values come back as "1280.0"
    return {float(k): float(v) for k, v in series["values"].items()}


def _ours(table: pd.DataFrame, ref: dict[str, Any], mode: str) -> pd.DataFrame:
    """Our summary rows of the reference's metric in one mode, with their axis value as _x;
    none when several rows share an axis value (other swept settings, guests or runs: which
    one plays their curve is not ours to pick; the section's figures show them all)."""
    if table.empty or ref["axis"] not in table:
        return pd.DataFrame(columns=["_x", "median", "ci_low", "ci_high", "n"])
    rows = table[(table["workload"] == ref["workload"]) & (table["metric"] == ref["metric"])
                 & (table["paging_mode"] == mode)]
    rows = rows.assign(_x=rows[ref["axis"]].astype(float)).sort_values("_x")
    unique: bool = rows["_x"].is_unique
    ours: pd.DataFrame = rows if unique else rows.iloc[0:0]
    return ours


def _at(rows: pd.DataFrame, x: float) -> pd.Series | None:
    hit = rows[np.isclose(rows["_x"].astype(float), x)]
    return hit.iloc[0] if len(hit) == 1 else None


def _num(value: float) -> str:
    """813 and 37,552 as the threads print them; small values to 3 significant digits."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _ours_text(row: pd.Series | None) -> str:
    if row is None:
        return "not measured"
    return (f"{_num(row['median'])} [{_num(row['ci_low'])}, {_num(row['ci_high'])}] "
            f"(n={int(row['n'])})")


def values_table(table: pd.DataFrame, ref: dict[str, Any]) -> pd.DataFrame:
    """Per value of their axis: each of their series and the mode of ours that plays it."""
    columns: dict[str, list[str]] = {}
    xs = sorted({x for s in ref["series"] for x in _theirs(s)})
    for series in ref["series"]:
        theirs, ours = _theirs(series), _ours(table, ref, series["like"])
        columns[f"theirs: {series['label']}"] = [
            _num(theirs[x]) if x in theirs else "" for x in xs]
        columns[f"ours: {series['like']}"] = [_ours_text(_at(ours, x)) for x in xs]
    return pd.DataFrame({ref["axis"]: [f"{x:,g}" for x in xs], **columns})


def _growth(points: dict[float, float]) -> tuple[float, float, float] | None:
    if len(points) < 2:
        return None
    low, high = min(points), max(points)
    return low, high, points[high] / points[low]


def shape_table(table: pd.DataFrame, ratios: pd.DataFrame, ref: dict[str, Any]) -> pd.DataFrame:
    """Growth of each curve over their span (ours: its measured values inside it), native's
    for scale when no series plays it, then the ratio of the two mechanisms."""
    rows: list[RowDict] = []
    span = sorted({x for s in ref["series"] for x in _theirs(s)})
    curves = [(f"theirs: {s['label']}", _theirs(s)) for s in ref["series"]]
    modes = [s["like"] for s in ref["series"]]
    modes += ["native"] if "native" not in modes else []
    for mode in modes:
        ours = _ours(table, ref, mode)
        inside = ours[(ours["_x"] >= span[0]) & (ours["_x"] <= span[-1])]
        if mode == "native" and inside.empty:
            continue
        curves.append((f"ours: {mode}" + (" (for scale)" if mode not in
                                           [s["like"] for s in ref["series"]] else ""),
                       dict(zip(inside["_x"], inside["median"], strict=True))))
    for who, points in curves:
        grown = _growth(points)
        rows.append({"curve": who, "what": "growth (last / first)",
                     "between": f"{grown[0]:g} .. {grown[1]:g}" if grown else "",
                     "value": f"{grown[2]:.3g}x" if grown else
                     "not measured at two of their values or between them"})
    if len(ref["series"]) == 2:
        rows += _ratio_rows(table, ratios, ref)
    return pd.DataFrame(rows, columns=["curve", "what", "between", "value"])


def _ratio_rows(table: pd.DataFrame, ratios: pd.DataFrame, ref: dict[str, Any]) -> list[RowDict]:
    low, high = ref["series"]  # their cheaper mechanism first, as the suite lists them
    theirs_low, theirs_high = _theirs(low), _theirs(high)
    name = f"{high['like']}/{low['like']}"
    ours = ratios[(ratios["workload"] == ref["workload"]) & (ratios["metric"] == ref["metric"])
                  & (ratios["ratio"] == name)] if not ratios.empty else ratios
    rows: list[RowDict] = []
    for x in sorted(set(theirs_low) & set(theirs_high)):
        rows.append({"curve": f"theirs: {high['label']} / {low['label']}", "what": "ratio",
                     "between": f"{ref['axis']}={x:g}",
                     "value": f"{theirs_high[x] / theirs_low[x]:.3g}x"})
        hit = ours[np.isclose(ours[ref["axis"]].astype(float), x)] if not ours.empty else ours
        rows.append({"curve": f"ours: {name}", "what": "ratio (95% BCa interval)",
                     "between": f"{ref['axis']}={x:g}",
                     "value": (f"{hit.iloc[0]['value']:.3g}x [{hit.iloc[0]['ci_low']:.3g}, "
                               f"{hit.iloc[0]['ci_high']:.3g}]") if len(hit) == 1
                     else "not measured"})
    return rows


def break_even_lines(table: pd.DataFrame, ref: dict[str, Any]) -> list[str]:
    """Where their two curves cross (published, computed) and where ours do, if they do."""
    if len(ref["series"]) != 2:
        return []
    low, high = ref["series"]
    lines = []
    if ref.get("break_even"):
        lines.append(f"Theirs, as published: near {ref['axis']}={ref['break_even']:g}.")
    shared = sorted(set(_theirs(low)) & set(_theirs(high)))
    if len(shared) >= 2:
        lines.append("Theirs, from their table: " + _crossing_text(
            ref["axis"], shared, [_theirs(low)[x] for x in shared],
            [_theirs(high)[x] for x in shared]))
    ours_low, ours_high = _ours(table, ref, low["like"]), _ours(table, ref, high["like"])
    xs = sorted(set(ours_low["_x"]) & set(ours_high["_x"]))
    if len(xs) >= 2:
        a = [float(_at(ours_low, x)["median"]) for x in xs]  # type: ignore[index]
        b = [float(_at(ours_high, x)["median"]) for x in xs]  # type: ignore[index]
        lines.append(f"Ours ({high['like']} vs {low['like']}, medians): "
                     + _crossing_text(ref["axis"], xs, a, b))
    else:
        lines.append(f"Ours: {low['like']} and {high['like']} were not both measured at two "
                     f"or more values of {ref['axis']}: no break-even can be computed.")
    return lines


def _crossing_text(axis: str, xs: list[float], low: list[float], high: list[float]) -> str:
    found = crossings(np.log(np.asarray(xs)), np.asarray(low), np.asarray(high))
    if found:
        return ", ".join(f"{axis}={np.exp(x):.3g}" for x in found) + " (log-linear)."
    ratio = np.asarray(high) / np.asarray(low)
    return (f"no crossing between {axis}={xs[0]:g} and {xs[-1]:g}; the ratio goes from "
            f"{ratio[0]:.3g}x to {ratio[-1]:.3g}x.")


def ratio_claims(trials: pd.DataFrame, ref: dict[str, Any], params: list[str]) -> pd.DataFrame:
    """Their published ratios beside ours: per mode, guest and setting of the other params."""
    data = measured(trials)
    data = data[(data["workload"] == ref["workload"]) & (data["metric"] == ref["metric"])]
    rows: list[RowDict] = []
    for claim in ref.get("ratios") or []:
        param = claim["param"]
        others = [p for p in params if p != param and p in data and data[p].nunique() > 1]
        for key, group in data.groupby(["paging_mode", "guest", *others], sort=True):
            num = group.loc[group[param].astype(str) == str(claim["numerator"]), "value"]
            den = group.loc[group[param].astype(str) == str(claim["denominator"]), "value"]
            where = dict(zip(["paging_mode", "guest", *others], key, strict=True))
            rows.append({**where, "ratio": f"{claim['numerator']}/{claim['denominator']}",
                         "theirs": f"{claim['value']:g}x ({claim['label']})",
                         "ours": _ratio_text(num.to_numpy(float), den.to_numpy(float))})
    return pd.DataFrame(rows)


def _ratio_text(num: NDArray[Any], den: NDArray[Any]) -> str:
    if not len(num) or not len(den) or not np.median(den):
        return "not measured"
    interval = ratio_interval(num, den)
    return (f"{np.median(num) / np.median(den):.3g}x [{interval.low:.3g}, {interval.high:.3g}] "
            f"(n={len(num)}/{len(den)})")


Curve = tuple[str, int, bool, NDArray[Any], NDArray[Any]]


def growth_curves(table: pd.DataFrame, ref: dict[str, Any]) -> list[Curve]:
    """(label, series index, is theirs, x, value / value at the first of their x) for the
    figure: shapes only; a series and the mode of ours that plays it share an index (a
    colour)."""
    curves: list[Curve] = []
    for index, series in enumerate(ref["series"]):
        theirs = _theirs(series)
        xs = np.asarray(sorted(theirs))
        curves.append((f"theirs: {series['label']}", index, True, xs,
                       np.asarray([theirs[x] for x in xs]) / theirs[xs[0]]))
        ours = _ours(table, ref, series["like"])
        if len(ours) >= 2:
            ox, ys = ours["_x"].to_numpy(float), ours["median"].to_numpy(float)
            # both start at 1 where their table starts, if we measured there or beyond
            anchor = int(np.argmax(ox >= xs[0])) if (ox >= xs[0]).any() else 0
            curves.append((f"ours: {series['like']}", index, False, ox, ys / ys[anchor]))
    return curves


def blocks(table: pd.DataFrame, ratios: pd.DataFrame, trials: pd.DataFrame,
           params: list[str], ref: dict[str, Any], figure: Any) -> list[Block]:
    """The section of one reference; `figure` is the growth plot's PNG, or None."""
    out: list[Block] = [
        Heading(f"Ours beside theirs: seed {ref['seed']} ({ref['workload']}, {ref['metric']})"),
        Text(f"Source: {ref['source']}."), Text(f"Caveats: {ref['caveats']}"),
    ]
    if ref.get("series"):
        out += [Text(f"{ref['metric']} ({ref['unit']}) at their values of {ref['axis']}: "
                     "their figure, and our median with its 95% interval and n (only rows "
                     "whose verified paging mode is the one named: TCG rows play no part)."),
                Table(values_table(table, ref), empty="no reference values"),
                *([Figure(figure)] if figure is not None else []),
                Text("Shapes: growth of each curve between the first and last value it was "
                     "measured at, and the ratio of the costlier mechanism to the cheaper."),
                Table(shape_table(table, ratios, ref), empty="nothing to compare"),
                Items(tuple(["Break-even: " + line for line in break_even_lines(table, ref)]))]
    if ref.get("ratios"):
        out += [Text("Their published ratio beside ours (ratio of medians, 95% BCa interval), "
                     "per paging mode, guest and setting of the other swept parameters."),
                Table(ratio_claims(trials, ref, params), empty="not measured in these runs")]
    return out
