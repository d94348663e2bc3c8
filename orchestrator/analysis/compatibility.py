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
    # two builds of one release (a KVM patch) differ only here: `lab run --host-kernel`
    ("host-kernel", "lab host kernel build", lambda m: _lab_kernel_id(m)),
    ("host-cmdline", "host kernel command line", lambda m: _get(m, "host", "kernel_cmdline")),
    ("kvm-module", "KVM module", lambda m: _get(m, "host", "kvm_module")),
    ("qemu", "QEMU version", lambda m: _get(m, "tools", "qemu")),
]
KEYS = ("accel", "paging", *dict.fromkeys(key for key, _, _ in _MANIFEST_FACTS), "guest-kernel",
        "guest")
# per guest: what makes two boots of "the same guest" the same machine; `runner` too: the
# harness's own processes per trial moved shadow paging's fork costs 2-2.5x (issue #21's note)
_GUEST_FACTS = ("accel", "launcher", "kernel_release", "kernel_cmdline", "meminfo_total",
                "pti", "runner")
# what a guest's kernel is: a difference in these is `guest-kernel`, not `guest`; kernel_id (a
# hash of the image: two builds of one release) only where both runs recorded it
_KERNEL_FACTS = ("kernel_release", "kernel_id")
# what differs with the kernel when the kernel does (seen: 981736 vs 981772 kB, 6.1.0-47
# generic vs PREEMPT_RT in a 1 GiB guest)
_KERNEL_FOLLOWS = ("meminfo_total",)


def _get(manifest: dict[str, Any], section: str, key: str) -> Any:
    value = manifest.get(section)
    return value.get(key) if isinstance(value, dict) else None


def _lab_kernel_id(manifest: dict[str, Any]) -> Any:
    """The id (image hash) of the kernel a nested lab host booted, where the run recorded one."""
    l1_kernel = _get(manifest, "lab", "l1_kernel")
    return l1_kernel.get("kernel_id") if isinstance(l1_kernel, dict) else None


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
            image = image if isinstance(image, dict) else {}
            # a mini image assembled around a chosen kernel differs from the image's own by
            # that kernel alone: its base hash is the rest of the recipe
            recipe = image.get("base_hash") or image.get("recipe_hash")
            config[str(name)] = {**{k: facts.get(k) for k in _GUEST_FACTS}, "image": recipe}
            if facts.get("kernel_id"):
                config[str(name)]["kernel_id"] = facts["kernel_id"]
    return config


def _guest_differences(base: dict[str, Any], new: dict[str, Any]) -> Iterable[Difference]:
    b, n = _guest_config(base), _guest_config(new)
    for guest in sorted(b.keys() & n.keys()):  # a guest missing on one side: its cells say so
        keys = [k for k in sorted(b[guest].keys() | n[guest].keys())
                if b[guest].get(k) != n[guest].get(k)
                and (k != "kernel_id" or (k in b[guest] and k in n[guest]))]
        # another kernel reserves its own memory: MemTotal follows the kernel
        follows = _KERNEL_FOLLOWS if any(k in _KERNEL_FACTS for k in keys) else ()
        for key in keys:
            kind = "guest-kernel" if key in _KERNEL_FACTS or key in follows else "guest"
            yield Difference(kind, f"guest {guest} {key}: {b[guest].get(key)} vs "
                                   f"{n[guest].get(key)}")


def _without_kernels(manifest: dict[str, Any]) -> Any:
    suite = manifest.get("suite")
    if not isinstance(suite, dict) or not isinstance(suite.get("guests"), dict):
        return None
    guests = {name: {k: v for k, v in guest.items() if k != "kernel"}
              if isinstance(guest, dict) else guest for name, guest in suite["guests"].items()}
    return {**suite, "guests": guests}


def _only_kernels_differ(base: dict[str, Any], new: dict[str, Any]) -> bool:
    """The two resolved suites (the manifests' `suite`) are one but for guests' `kernel:`."""
    stripped = _without_kernels(base)
    return stripped is not None and stripped == _without_kernels(new)


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
        if b != n and key == "suite" and _only_kernels_differ(base_manifest, new_manifest):
            found.append(Difference("guest-kernel", "suite: only its guests' kernel: differs"))
        elif b != n:
            found.append(Difference(key, f"{what}: {b} vs {n}"))
    found.extend(_guest_differences(base_manifest, new_manifest))
    return found
