"""A guest's `kernel:`: which kernel it boots, as the suite writes it, and the guest names a
sweep of kernels makes.

Four forms: `image` (the image's own kernel, the default), a Debian kernel package by name
(`linux-image-6.1.0-47-amd64`), a local `.deb`, or a kernel you built
(`{image: PATH/bzImage, modules: DIR, config: PATH/.config}`, `modules` being the
INSTALL_MOD_PATH of `make modules_install`). Only the form is checked here (the suite knows
nothing of hosts); orchestrator.guests.kernels fetches, unpacks and verifies them before a run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, Field

from orchestrator.suite.fields import Frozen

IMAGE_KERNEL = "image"
PACKAGE_RE = re.compile(r"linux-image-[a-z0-9][a-z0-9.+~-]*\Z")
LABEL_RE = r"^[a-z0-9][a-z0-9_.-]{0,40}\z"
NAME_MAX = 63  # suite NAME_RE: a guest name is at most 63 characters
FORMS = ("`image` (the image's own), a Debian package like linux-image-6.1.0-47-amd64, "
         "a path ending in .deb, or {image: PATH/bzImage, modules: DIR, config: PATH}")


def _kernel_word(value: str) -> str:
    if value == IMAGE_KERNEL or PACKAGE_RE.match(value) or value.endswith(".deb"):
        return value
    shown = repr(value) if len(value) <= 60 else repr(value[:60]) + "..."
    raise ValueError(f"kernel {shown} is none of: {FORMS}")


class BuiltKernel(Frozen):
    """A kernel you built: its bzImage, the tree `make modules_install INSTALL_MOD_PATH=DIR`
    made (DIR, holding lib/modules/RELEASE), and its .config (for provenance)."""

    image: Annotated[str, Field(min_length=1)]
    modules: Annotated[str, Field(min_length=1)] | None = None
    config: Annotated[str, Field(min_length=1)] | None = None
    label: Annotated[str, Field(pattern=LABEL_RE)] | None = None  # in guest names and reports


KernelSpec = Annotated[str, AfterValidator(_kernel_word)] | BuiltKernel


def kind_of(spec: str | BuiltKernel) -> str:
    """image | package | deb | built"""
    if isinstance(spec, BuiltKernel):
        return "built"
    if spec == IMAGE_KERNEL:
        return "image"
    return "deb" if spec.endswith(".deb") else "package"


def _clean(text: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-._") or "kernel"


def label(spec: str | BuiltKernel) -> str:
    """A short readable name of the kernel: what a swept guest's name ends with."""
    kind = kind_of(spec)
    if isinstance(spec, BuiltKernel):
        if spec.label:
            return spec.label
        path = PurePath(spec.image)
        parts = path.parts
        # PATH/arch/x86/boot/bzImage: the source tree's directory names it
        tree = parts[-5] if len(parts) >= 5 and parts[-4] == "arch" else path.parent.name
        return _clean(tree or path.name)[:40]
    if kind == "package":
        return _clean(spec.removeprefix("linux-image-"))[:40]
    if kind == "deb":
        stem = PurePath(spec).name.removesuffix(".deb").split("_")[0]
        return _clean(stem.removeprefix("linux-image-"))[:40]
    return IMAGE_KERNEL


class _HasKernels(Protocol):
    @property
    def kernel(self) -> tuple[str | BuiltKernel, ...]: ...


def guest_names(guests: Mapping[str, _HasKernels]) -> dict[str, tuple[str, str | BuiltKernel]]:
    """Run guest name -> (suite guest name, its one kernel). A guest with one kernel keeps its
    name; one sweeping kernels becomes one guest per kernel, named `NAME-LABEL`. Raises
    ValueError when two would share a name or a name grows past 63 characters."""
    names: dict[str, tuple[str, str | BuiltKernel]] = {}
    for name, guest in guests.items():
        swept = len(guest.kernel) > 1
        for spec in guest.kernel:
            run_name = f"{name}-{label(spec)}" if swept else name
            if len(run_name) > NAME_MAX:
                raise ValueError(f"guest {name!r} with kernel {label(spec)!r} makes the name "
                                 f"{run_name!r}, over {NAME_MAX} characters: give the "
                                 "kernel a shorter label: (built kernels) or the guest a "
                                 "shorter name")
            if run_name in names:
                other = names[run_name][0]
                raise ValueError(f"guest name {run_name!r} is made twice (guest {name!r}"
                                 f"{'' if other == name else f' and guest {other!r}'}): "
                                 "give the kernels distinct label:s or rename a guest")
            names[run_name] = (name, spec)
    return names


def spec_json(spec: str | BuiltKernel) -> Any:
    return spec.model_dump(exclude_none=True) if isinstance(spec, BuiltKernel) else spec
