"""Can two runs be compared? What differs between them besides the change being judged.

A slowdown between two runs means something only when they ran the same suite, on the same
kind of host, under the same accelerator and paging modes, with the same kernels, QEMU and guest
configuration. `compare` refuses when any of these differ instead of blaming the change for a
different machine. The difference that *is* the change being judged (a patched host kernel, a
new QEMU) is named with `--allow KEY` and then shown as such; `--force` accepts every difference
and prints each loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Difference:
    key: str  # what `--allow` names: suite, host, cpu, microcode, host-kernel, ...
    text: str  # "host kernel: 6.1.0-57-amd64 vs 6.12.0"


# (key, what it is, how to read it from a manifest); the trials' own labels are checked apart
_MANIFEST_FACTS: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    ("suite", "suite (its hash)", lambda m: m.get("suite_hash")),
    ("host", "host", lambda m: _get(m, "host", "hostname")),
    ("cpu", "host CPU", lambda m: _get(m, "host", "cpu_model")),
    ("microcode", "host microcode", lambda m: _get(m, "host", "microcode")),
    ("host-kernel", "host kernel", lambda m: _get(m, "host", "kernel_release")),
    ("host-cmdline", "host kernel command line", lambda m: _get(m, "host", "kernel_cmdline")),
    ("kvm-module", "KVM module", lambda m: _get(m, "host", "kvm_module")),
    ("qemu", "QEMU version", lambda m: _get(m, "tools", "qemu")),
]
KEYS = ("accel", "paging", *(key for key, _, _ in _MANIFEST_FACTS), "guest-kernel", "guest")
# per guest: what makes two boots of "the same guest" the same machine
_GUEST_FACTS = ("accel", "launcher", "kernel_release", "kernel_cmdline", "meminfo_total",
                "pti")


def _get(manifest: dict[str, Any], section: str, key: str) -> Any:
    value = manifest.get(section)
    return value.get(key) if isinstance(value, dict) else None


def _verified(trials: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Requested paging mode -> (verified mode, accelerator), from the trials that ran."""
    need = {"paging_requested", "paging_mode", "accel", "outcome"}
    if not need <= set(trials.columns):
        return {}
    ran = trials[trials["outcome"] == "ok"]
    found: dict[str, tuple[str, str]] = {}
    for requested, rows in ran.groupby("paging_requested"):
        modes = ",".join(sorted({str(x) for x in rows["paging_mode"]}))
        accels = ",".join(sorted({str(x) for x in rows["accel"]}))
        found[str(requested)] = (modes, accels)
    return found


def _guest_config(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    guests = manifest.get("guests")
    if not isinstance(guests, dict):
        return {}
    config = {}
    for name, facts in guests.items():
        if isinstance(facts, dict):
            image = facts.get("image")
            recipe = image.get("recipe_hash") if isinstance(image, dict) else None
            config[str(name)] = {**{k: facts.get(k) for k in _GUEST_FACTS}, "image": recipe}
    return config


def _guest_differences(base: dict[str, Any], new: dict[str, Any]) -> Iterable[Difference]:
    b, n = _guest_config(base), _guest_config(new)
    for guest in sorted(b.keys() & n.keys()):  # a guest missing on one side: its cells say so
        for key in sorted(b[guest].keys() | n[guest].keys()):
            if b[guest].get(key) != n[guest].get(key):
                kind = "guest-kernel" if key == "kernel_release" else "guest"
                yield Difference(kind, f"guest {guest} {key}: {b[guest].get(key)} vs "
                                       f"{n[guest].get(key)}")


def differences(base_manifest: dict[str, Any], new_manifest: dict[str, Any],
                base_trials: pd.DataFrame, new_trials: pd.DataFrame) -> list[Difference]:
    """Every difference that makes the two runs' numbers incomparable, one line each."""
    found = []
    b_modes, n_modes = _verified(base_trials), _verified(new_trials)
    for requested in sorted(b_modes.keys() & n_modes.keys()):  # a lost mode: its cells say so
        (b_mode, b_accel), (n_mode, n_accel) = b_modes[requested], n_modes[requested]
        if b_accel != n_accel:
            found.append(Difference("accel", f"accelerator for {requested}: {b_accel} vs "
                                             f"{n_accel}"))
        if b_mode != n_mode:
            found.append(Difference("paging", f"verified paging mode for {requested}: "
                                              f"{b_mode} vs {n_mode}"))
    for key, what, read in _MANIFEST_FACTS:
        b, n = read(base_manifest), read(new_manifest)
        if b != n:
            found.append(Difference(key, f"{what}: {b} vs {n}"))
    found.extend(_guest_differences(base_manifest, new_manifest))
    return found
