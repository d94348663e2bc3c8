"""compare's guard: what makes two runs' numbers incomparable is named, one line each."""

from __future__ import annotations

import pandas as pd

from orchestrator.analysis.compatibility import differences


def trials(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["paging_requested", "paging_mode", "accel", "outcome"])


GUEST = {"accel": "kvm", "launcher": "libvirt", "kernel_release": "6.1.0", "image":
         {"recipe_hash": "abc"}, "meminfo_total": "1 GiB"}


def test_same_runs_have_no_difference() -> None:
    m = {"suite_hash": "h", "host": {"hostname": "lab1"}, "guests": {"tdp/small": GUEST}}
    t = trials([("tdp", "tdp", "kvm", "ok"), ("shadow", "shadow", "kvm", "ok")])
    assert differences(m, m, t, t) == []


def test_accelerator_and_verified_mode_per_requested_mode() -> None:
    base = trials([("tdp", "tdp", "kvm", "ok"), ("native", "native", "native", "ok")])
    new = trials([("tdp", "tcg", "tcg", "ok"), ("native", "native", "native", "ok"),
                  ("shadow", "shadow", "kvm", "ok")])  # a mode only one run has: its cells say so
    found = differences({}, {}, base, new)
    assert [(d.key, d.text) for d in found] == [
        ("accel", "accelerator for tdp: kvm vs tcg"),
        ("paging", "verified paging mode for tdp: tdp vs tcg")]


def test_errored_trials_do_not_decide_the_verified_mode() -> None:
    base = trials([("tdp", "tdp", "kvm", "ok")])
    new = trials([("tdp", "tdp", "kvm", "ok"), ("tdp", "", "", "error")])
    assert differences({}, {}, base, new) == []


def test_guest_kernel_and_configuration_are_named() -> None:
    other = {**GUEST, "kernel_release": "6.12.0", "image": {"recipe_hash": "def"}}
    found = differences({"guests": {"tdp/small": GUEST}}, {"guests": {"tdp/small": other}},
                        trials([]), trials([]))
    assert [(d.key, d.text) for d in found] == [
        ("guest", "guest tdp/small image: abc vs def"),
        ("guest-kernel", "guest tdp/small kernel_release: 6.1.0 vs 6.12.0")]


def test_another_guest_runner_is_named() -> None:
    """The harness's processes per trial are part of the measured machine: in the nested lab
    shadow paging's fork times at 2-16 PTEs per table halved with orch-runner."""
    found = differences({"guests": {"shadow/small": {**GUEST, "runner": "sh"}}},
                        {"guests": {"shadow/small": {**GUEST, "runner": "orch-runner"}}},
                        trials([]), trials([]))
    assert [(d.key, d.text) for d in found] == [
        ("guest", "guest shadow/small runner: sh vs orch-runner")]
