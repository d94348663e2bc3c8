"""Every bad suite gets `FILE:LINE:COL: what (hint: ...)`, exit 2, and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import BadInput
from orchestrator.suite.loader import load_suite, parse_suite
from orchestrator.suite.schema import RequestedMode

GOOD = """\
name: fork-dirty-pages
description: fork latency as the number of dirty anonymous pages grows
paging: [native, tdp, shadow]
guests:
  small: {image: mini, vcpus: 2, memory: 2GiB, hugepages: none, cmdline: "pti=on"}
workloads:
  - name: fork
    kind: fork-dirty
    params: {pages: [1280, 12800, 128000], ptes_per_table: [512]}
    trials: 10
    warmup: 2
trace: {host: ["kvm:kvm_exit", "kvmmmu:*"], guest: ["exceptions:page_fault_user"]}
timeouts: {boot: 300s, trial: 120s}
"""


def error_of(text: str) -> str:
    with pytest.raises(BadInput) as info:
        parse_suite(text, Path("suite.yaml"))
    return info.value.one_line()


def test_the_issue_example_is_valid_and_typed() -> None:
    suite = parse_suite(GOOD, Path("suite.yaml")).suite
    assert suite.paging == (RequestedMode.NATIVE, RequestedMode.TDP, RequestedMode.SHADOW)
    assert suite.guests["small"].memory == 2 << 30
    assert suite.workloads[0].params.pages == (1280, 12800, 128000)  # type: ignore[attr-defined]
    assert suite.timeouts.boot == 300.0
    assert suite.trace.host == ("kvm:kvm_exit", "kvmmmu:*")


def test_a_scalar_parameter_is_a_sweep_of_one() -> None:
    suite = parse_suite(GOOD.replace("[1280, 12800, 128000]", "4096"), Path("s.yaml")).suite
    assert suite.workloads[0].params.pages == (4096,)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    warmup: 2\n", "    warmup: 2\n    colour: red\n", "suite.yaml:12:5: workloads[0].colour: unknown key 'colour'"),
        ("trials: 10", "trials: ten", "suite.yaml:10:13: workloads[0].trials: Input should be a valid integer"),
        ("[1280, 12800, 128000]", "[]", "suite.yaml:9:14: workloads[0].params.pages: an empty sweep runs nothing"),
        ("[1280, 12800, 128000]", "[1280, 1280]", "the sweep repeats a value"),
        ("    warmup: 2\n", "    warmup: 2\n  - name: fork\n    kind: noop\n", "two workloads are named 'fork'"),
        ("shadow]", "shadowy]", "suite.yaml:3:23: paging[2]: Input should be"),
        ("memory: 2GiB", "memory: 2GB", "suite.yaml:5:42: guests.small.memory: ambiguous size '2GB': use binary units, e.g. 2GiB"),
        ("kind: fork-dirty", "kind: fork-clean", "suite.yaml:8:11: workloads[0].kind: Input tag 'fork-clean'"),
        ("boot: 300s", "boot: 300", "timeouts.boot: duration 300 needs a unit"),
        ("[512]", "[513]", "ptes_per_table[0]: Input should be less than or equal to 512"),
        ("paging: [native, tdp, shadow]", "paging: [native, native]", "the sweep repeats a value"),
        ("memory: 2GiB", "memory: 2GiB, dirty_ring: 3000", "suite.yaml:5:60: guests.small.dirty_ring: dirty_ring must be 0 (off) or a power of two from 1024 to 65536"),
        ("memory: 2GiB", "memory: 2GiB, dirty_ring: 131072", "dirty_ring must be 0 (off) or a power of two"),
        ('"kvmmmu:*"', '"kvm mmu"', "is not an event name"),
    ],
)
def test_bad_suites_point_at_the_line(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    message = error_of(GOOD.replace(old, new, 1))
    assert expected in message
    assert "(hint: " in message


def test_unknown_paging_mode_hint_lists_the_modes() -> None:
    assert "paging modes are: native, tdp, shadow, tdp-legacy" in error_of(
        GOOD.replace("shadow]", "ept]"))


def test_unknown_kind_hint_lists_the_kinds() -> None:
    assert "fork-dirty, mprotect, hugepage" in error_of(GOOD.replace("kind: fork-dirty", "kind: x"))


def test_virtual_modes_need_guests() -> None:
    text = GOOD.replace('guests:\n  small: {image: mini, vcpus: 2, memory: 2GiB, hugepages: none, cmdline: "pti=on"}\n', "")
    assert "no guests are defined" in error_of(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "suite.yaml:1:1: the suite is empty, not a mapping"),
        ("- a\n- b\n", "the suite is a list, not a mapping"),
        ("just words\n", "the suite is a scalar, not a mapping"),
        ("name: [x\n", "suite.yaml:2:1: YAML:"),
        ("name: x\nname: y\n", 'suite.yaml:2:1: YAML: found duplicate key "name"'),
        ("name: x\npaging: [native]\n", "missing required key 'workloads'"),
    ],
)
def test_malformed_files(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        load_suite(tmp_path / "nope.yaml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="is a directory"):
        load_suite(tmp_path)


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "suite.yaml"
    bad.write_text(GOOD.replace("memory: 2GiB", "memory: 2GB"))
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"orchestrate: error: {bad}:5:42: guests.small.memory: ambiguous")
    assert "Traceback" not in done.stderr


def test_every_error_is_listed_in_file_order_with_one_hint() -> None:
    text = (GOOD.replace("memory: 2GiB", "memory: 2GB")
            .replace("shadow]", "shadowy]")
            .replace("trials: 10", "trials: ten")
            .replace("    warmup: 2\n", "    warmup: 2\n    colour: red\n"))
    with pytest.raises(BadInput) as info:
        parse_suite(text, Path("suite.yaml"))
    assert info.value.message.splitlines() == [
        "suite.yaml:3:23: paging[2]: Input should be 'native', 'tdp', 'shadow' or 'tdp-legacy'",
        "suite.yaml:5:42: guests.small.memory: ambiguous size '2GB': use binary units, e.g. 2GiB",
        "suite.yaml:10:13: workloads[0].trials: Input should be a valid integer, unable to parse "
        "string as an integer",
        "suite.yaml:12:5: workloads[0].colour: unknown key 'colour'",
    ]
    # the first error's hint, once, after the last line
    assert info.value.one_line().endswith(
        "unknown key 'colour' (hint: paging modes are: native, tdp, shadow, tdp-legacy)")


def test_cli_prints_every_error_and_the_hint_once(tmp_path: Path) -> None:
    bad = tmp_path / "suite.yaml"
    bad.write_text(GOOD.replace("memory: 2GiB", "memory: 2GB").replace("trials: 10", "trials: 0"))
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith(f"orchestrate: error: {bad}:5:42: guests.small.memory: ambiguous")
    assert lines[1].startswith(f"{bad}:10:13: workloads[0].trials: Input should be greater than")
    assert len(lines) == 2 and done.stderr.count("(hint: ") == 1
    assert "Traceback" not in done.stderr


def test_errors_at_the_same_place_are_all_listed() -> None:
    with pytest.raises(BadInput) as info:
        parse_suite("name: x\n", Path("suite.yaml"))
    assert info.value.message.splitlines() == [
        "suite.yaml:1:1: (top level): missing required key 'paging'",
        "suite.yaml:1:1: (top level): missing required key 'workloads'",
    ]


def test_a_precision_target_and_an_order_are_read() -> None:
    text = GOOD.replace("trials: 10", "trials: {min: 5, max: 40, ci_halfwidth: 2.5%}") + \
        "order: interleaved\norder_seed: 7\n"
    suite = parse_suite(text, Path("suite.yaml")).suite
    target = suite.workloads[0].trials
    assert (target.min, target.max, target.ci_halfwidth, target.metric) == (  # type: ignore[union-attr]
        5, 40, 0.025, None)
    assert suite.workloads[0].max_trials == 40
    assert (suite.order.value, suite.order_seed) == ("interleaved", 7)
    fraction = GOOD.replace("trials: 10", "trials: {min: 5, max: 40, ci_halfwidth: 0.03, "
                                          "metric: fork_wait_us}")
    target = parse_suite(fraction, Path("s.yaml")).suite.workloads[0].trials
    assert (target.ci_halfwidth, target.metric) == (0.03, "fork_wait_us")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("trials", "expected"),
    [
        ("{min: 6, max: 5, ci_halfwidth: 2%}", "suite.yaml:10:5: workloads[0].trials: min (6) is more than max (5)"),
        ("{min: 0, max: 5, ci_halfwidth: 2%}", "suite.yaml:10:19: workloads[0].trials.min: Input should be greater than or equal to 1"),
        ("{min: 5, max: 9, ci_halfwidth: 100%}", "workloads[0].trials.ci_halfwidth: ci_halfwidth 1 must lie between 0 and 1"),
        ("{min: 5, max: 9, ci_halfwidth: 0}", "ci_halfwidth 0 must lie between 0 and 1"),
        ("{min: 5, max: 9, ci_halfwidth: two}", "cannot read fraction 'two' (write it like 2% or 0.02)"),
        ("{min: 5, max: 9}", "suite.yaml:10:5: workloads[0].trials: missing required key 'ci_halfwidth'"),
        ("{min: 5, max: 9, ci_halfwidth: 2%, level: 99%}", "workloads[0].trials.level: unknown key 'level'"),
        ("{min: 5, max: 9, ci_halfwidth: 2%, metric: 'a b'}", "workloads[0].trials.metric: String should match pattern"),
        ("{min: 5, max: 9, ci_halfwidth: 2%, metric: fork_usec}", "workloads[0]: trials.metric 'fork_usec': a fork-dirty trial reports no such metric (it reports fork_us, fork_wait_us, cow_us"),
        ("[5]", "suite.yaml:10:5: workloads[0].trials: Input should be a valid integer"),
        ("{min: 5, max: 2000000, ci_halfwidth: 2%}", "makes 18,000,018 trials (9 x 2,000,002 trials per point)"),
    ],
)
def test_a_bad_precision_target_is_one_line_with_a_hint(trials: str, expected: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_suite(GOOD.replace("trials: 10", f"trials: {trials}"), Path("suite.yaml"))
    assert len(info.value.message.splitlines()) == 1
    assert expected in info.value.message
    assert info.value.hint


@pytest.mark.parametrize(("line", "expected"), [
    ("order: random", "suite.yaml:14:8: order: Input should be 'contiguous' or 'interleaved'"),
    ("order_seed: x", "suite.yaml:14:13: order_seed: Input should be a valid integer"),
])
def test_a_bad_order_is_one_line_with_a_hint(line: str, expected: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_suite(GOOD + line + "\n", Path("suite.yaml"))
    assert info.value.message.startswith(expected)
    assert info.value.hint


def test_a_pinned_cpu_must_exist_in_every_guest() -> None:
    pinned = GOOD.replace("    warmup: 2\n", "    warmup: 2\n    cpu: 1\n")
    assert parse_suite(pinned, Path("suite.yaml")).suite.workloads[0].cpu == 1
    too_far = GOOD.replace("    warmup: 2\n", "    warmup: 2\n    cpu: 2\n")
    line = error_of(too_far)
    assert "pinned to cpu 2, but guest 'small' has 2 vCPU(s) (cpus count from 0)" in line
    assert "\n" not in line
