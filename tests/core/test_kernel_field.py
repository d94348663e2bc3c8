"""A guest's `kernel:` in the suite: its forms, a list sweeping it (one guest per kernel), and
what validate refuses (pure: nothing is fetched or read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import BadInput
from orchestrator.suite.kernel_choice import IMAGE_KERNEL, BuiltKernel, kind_of, label
from orchestrator.suite.loader import parse_suite
from orchestrator.suite.plan import make_plan, run_guests
from orchestrator.suite.schema import Suite

GENERIC, RT = "linux-image-6.1.0-47-amd64", "linux-image-6.1.0-47-rt-amd64"


def suite(guest: str, *, more: str = "") -> Suite:
    text = (f"name: k\npaging: [tdp, shadow]\nguests:\n  small: {guest}\n{more}"
            "workloads:\n  - {name: f, kind: fork-dirty, params: {pages: [1280, 12800]}}\n")
    return parse_suite(text, Path("suite.yaml")).suite


def refusal(guest: str, *, more: str = "") -> str:
    with pytest.raises(BadInput) as caught:
        suite(guest, more=more)
    return caught.value.one_line()


def test_the_default_is_the_image_own_kernel_and_names_stay() -> None:
    loaded = suite("{image: mini}")
    assert loaded.guests["small"].kernel == (IMAGE_KERNEL,)
    assert list(run_guests(loaded)) == ["small"]


@pytest.mark.parametrize(("written", "kind", "shown"), [
    ("image", "image", "image"),
    (GENERIC, "package", "6.1.0-47-amd64"),
    ("debs/linux-image-6.8.0-rc1_6.8.0-1_amd64.deb", "deb", "6.8.0-rc1"),
    ("{image: /src/linux-fork/arch/x86/boot/bzImage, modules: /tmp/m}", "built", "linux-fork"),
    ("{image: /k/bzImage, label: patched}", "built", "patched"),
])
def test_each_form(written: str, kind: str, shown: str) -> None:
    spec = suite(f"{{kernel: {written}}}").guests["small"].kernel[0]
    assert kind_of(spec) == kind
    assert label(spec) == shown


def test_one_kernel_keeps_the_guest_name_and_its_cells() -> None:
    """So `compare --allow guest-kernel` can judge a kernel against a baseline run."""
    base = make_plan(suite("{image: mini}"))
    chosen = make_plan(suite(f"{{kernel: {RT}}}"))
    assert [p.cell_id for p in base.points] == [p.cell_id for p in chosen.points]
    assert run_guests(suite(f"{{kernel: {RT}}}"))["small"].kernel == RT


def test_a_list_sweeps_one_guest_per_kernel_booted_once_per_mode() -> None:
    loaded = suite(f"{{kernel: [{GENERIC}, {RT}]}}")
    guests = run_guests(loaded)
    assert list(guests) == ["small-6.1.0-47-amd64", "small-6.1.0-47-rt-amd64"]
    assert [(g.base, g.kernel) for g in guests.values()] == [("small", GENERIC), ("small", RT)]
    plan = make_plan(loaded)
    assert [(g.mode.value, g.guest) for g in plan.groups] == [
        ("tdp", "small-6.1.0-47-amd64"), ("tdp", "small-6.1.0-47-rt-amd64"),
        ("shadow", "small-6.1.0-47-amd64"), ("shadow", "small-6.1.0-47-rt-amd64")]
    counts = plan.counts()
    assert counts["boots"] == 4 and counts["points"] == 8
    assert len({p.cell_id for p in plan.points}) == 8


def test_built_kernels_in_a_sweep_are_told_apart_by_label() -> None:
    loaded = suite("{kernel: [{image: /a/bzImage, label: base}, "
                   "{image: /b/bzImage, modules: /b/mods, label: patched}]}")
    assert list(run_guests(loaded)) == ["small-base", "small-patched"]
    patched = run_guests(loaded)["small-patched"].kernel
    assert isinstance(patched, BuiltKernel) and patched.modules == "/b/mods"


def test_the_resolved_suite_records_the_kernels() -> None:
    loaded = parse_suite(f"name: k\npaging: [tdp]\nguests:\n  g: {{kernel: [{GENERIC}, "
                         "{image: /k/bzImage, config: /k/.config}]}\nworkloads:\n  - {name: f, "
                         "kind: fork-dirty, params: {pages: 1280}}\n", Path("s.yaml"))
    assert loaded.resolved()["guests"]["g"]["kernel"] == [
        GENERIC, {"image": "/k/bzImage", "modules": None, "config": "/k/.config",
                  "label": None}]


# ---- refusals --------------------------------------------------------------------------------


def test_an_unknown_form_is_refused_at_its_line() -> None:
    error = refusal("{kernel: vmlinuz-6.1}")
    assert "suite.yaml:4:" in error and "kernel 'vmlinuz-6.1' is none of" in error
    assert "linux-image-6.1.0-47-amd64" in error


def test_a_built_kernel_needs_its_image_and_knows_its_keys() -> None:
    assert "missing required key 'image'" in refusal("{kernel: {modules: /m}}")
    assert "unknown key 'initrd'" in refusal("{kernel: {image: /b, initrd: /i}}")


def test_a_kernel_listed_twice_is_refused() -> None:
    assert "the sweep repeats a value" in refusal(f"{{kernel: [{RT}, {RT}]}}")


def test_an_empty_list_is_refused() -> None:
    assert "an empty sweep runs nothing" in refusal("{kernel: []}")


def test_two_kernels_with_one_label_are_refused() -> None:
    error = refusal("{kernel: [{image: /a/linux/arch/x86/boot/bzImage}, "
                    "{image: /b/linux/arch/x86/boot/bzImage}]}")
    assert "guest name 'small-linux' is made twice" in error and "label" in error


def test_a_swept_name_may_not_clash_with_another_guest() -> None:
    error = refusal(f"{{kernel: [{GENERIC}, {RT}]}}",
                    more="  small-6.1.0-47-amd64: {image: mini}\n")
    assert "'small-6.1.0-47-amd64' is made twice" in error


def test_a_swept_name_over_63_characters_is_refused() -> None:
    long = "g" * 50
    with pytest.raises(BadInput) as caught:
        parse_suite(f"name: k\npaging: [tdp]\nguests:\n  {long}: {{kernel: [{GENERIC}, {RT}]}}"
                    "\nworkloads:\n  - {name: f, kind: fork-dirty, params: {pages: 1280}}\n",
                    Path("s.yaml"))
    assert "over 63 characters" in caught.value.one_line()


def test_a_debian_guest_may_choose_its_kernel_too() -> None:
    """Its disk boots the chosen kernel through an initramfs made for it (debian_kernel.py)."""
    assert suite(f"{{image: debian, kernel: {RT}}}").guests["small"].kernel == (RT,)
    assert suite("{image: debian, kernel: image}").guests["small"].image == "debian"
