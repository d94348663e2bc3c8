"""compare across guest kernels: runs that differ only in the kernel a guest booted are
comparable with `--allow guest-kernel` (and refused without it); any other difference still
refuses."""

from __future__ import annotations

from typing import Any

import pandas as pd

from orchestrator.analysis.compatibility import differences

NO_TRIALS = pd.DataFrame(columns=["paging_requested", "paging_mode", "accel", "outcome"])


def manifest(kernel: Any, release: str, kernel_id: str | None, *, recipe: str,
             base: str = "b1", vcpus: int = 1) -> dict[str, Any]:
    guest: dict[str, Any] = {"image": "mini", "vcpus": vcpus, "kernel": kernel}
    facts: dict[str, Any] = {"accel": "tcg", "launcher": "qemu", "kernel_release": release,
                             "kernel_cmdline": "console=ttyS0", "meminfo_total": "1 GiB",
                             "pti": "default",
                             "image": {"recipe_hash": recipe, "base_hash": base}}
    if kernel_id:
        facts["kernel_id"] = kernel_id
    return {"suite_hash": f"{kernel}-{vcpus}", "suite": {"name": "s", "guests": {"small": guest}},
            "guests": {"tcg/small": facts}}


def keys(base: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str]]:
    return [(d.key, d.text) for d in differences(base, new, NO_TRIALS, NO_TRIALS)]


def test_a_kernel_change_alone_is_a_guest_kernel_difference() -> None:
    base = manifest(["image"], "6.1.0-57-amd64", "aaaa11112222", recipe="r1")
    new = manifest(["linux-image-6.1.0-47-rt-amd64"], "6.1.0-47-rt-amd64", "bbbb33334444",
                   recipe="r2")
    assert keys(base, new) == [
        ("guest-kernel", "suite: only its guests' kernel: differs"),
        ("guest-kernel", "guest tcg/small kernel_id: aaaa11112222 vs bbbb33334444"),
        ("guest-kernel", "guest tcg/small kernel_release: 6.1.0-57-amd64 vs 6.1.0-47-rt-amd64"),
    ]  # the images differ by their kernel alone (same base hash): no `guest` difference


def test_memory_follows_the_kernel_when_the_kernel_differs() -> None:
    """Seen here: a 1 GiB guest's MemTotal was 981736 kB under 6.1.0-47 and 981772 kB under
    its PREEMPT_RT build; the same difference under one kernel is still a `guest` one."""
    base = manifest(["image"], "6.1.0-47-amd64", "aaaa11112222", recipe="r1")
    new = manifest(["image"], "6.1.0-47-rt-amd64", "bbbb33334444", recipe="r1")
    new["guests"]["tcg/small"]["meminfo_total"] = "2 GiB"
    assert ("guest-kernel", "guest tcg/small meminfo_total: 1 GiB vs 2 GiB") in keys(base, new)
    same = manifest(["image"], "6.1.0-47-amd64", "aaaa11112222", recipe="r1")
    same["guests"]["tcg/small"]["meminfo_total"] = "2 GiB"
    assert keys(base, same) == [("guest", "guest tcg/small meminfo_total: 1 GiB vs 2 GiB")]


def test_two_builds_of_one_release_differ_by_kernel_id() -> None:
    base = manifest([{"image": "/a/bzImage"}], "6.8.0", "aaaa11112222", recipe="r1")
    new = manifest([{"image": "/a/bzImage"}], "6.8.0", "cccc55556666", recipe="r2")
    assert keys(base, new) == [
        ("guest-kernel", "guest tcg/small kernel_id: aaaa11112222 vs cccc55556666")]


def test_a_run_from_before_kernel_ids_is_not_refused_for_lacking_one() -> None:
    base = manifest(["image"], "6.1.0-57-amd64", None, recipe="r1")
    new = manifest(["image"], "6.1.0-57-amd64", "aaaa11112222", recipe="r1")
    assert keys(base, new) == []


def test_other_differences_still_refuse() -> None:
    base = manifest(["image"], "6.1.0-57-amd64", "aaaa11112222", recipe="r1")
    new = manifest(["linux-image-6.1.0-47-amd64"], "6.1.0-47-amd64", "bbbb33334444",
                   recipe="r2", base="b2", vcpus=2)
    found = keys(base, new)
    assert ("suite", "suite (its hash): ['image']-1 vs ['linux-image-6.1.0-47-amd64']-2") \
        in found
    assert ("guest", "guest tcg/small image: b1 vs b2") in found
