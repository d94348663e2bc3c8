"""The orchestrator's settings: every `ORCH_*` environment variable, read once, at the edge.

The front doors (`cli/entry.py`'s main, and nightly's main for cron) build one `Settings` from
the environment and hand it, or the one value a function needs, down explicitly: the run
request, the backend, image cache lookups, the lock and ledger paths, the guest launcher. No
module below reads the environment for a setting. A library caller that was handed none (a
notebook, a test) gets `current()`, the settings the environment gives at that moment.

    variable             field          default
    ORCH_RESULTS         results        ./results (made absolute where a verb uses it)
    ORCH_LIBVIRT_URI     libvirt_uri    qemu:///system
    ORCH_GUEST_LAUNCHER  guest_launcher libvirt (or qemu: guests as plain QEMU processes)
    ORCH_IMAGE_CACHE     image_cache    /var/cache/orchestrator/images as root, else
                                        $XDG_CACHE_HOME (~/.cache)/orchestrator/images
    ORCH_WORKLOADS_BIN   workloads_bin  guest-workloads/bin in the checkout
    ORCH_LOCK_DIR        lock_dir       /run/lock/orchestrator
    ORCH_LOCK            run_lock       $ORCH_LOCK_DIR/run.lock
    ORCH_NIGHTLY_LOCK    nightly_lock   $ORCH_LOCK_DIR/nightly.lock
    ORCH_STATE_DIR       state_dir      /run/orchestrator (the index of live runs)
    ORCH_MAX_POINTS      max_points     100,000 (the largest sweep a suite may make)
    ORCH_MAX_TRIALS      max_trials     1,000,000
    ORCH_CRASH_DIR       crash_dir      the temp directory (an internal error's traceback)

A value that cannot be right (an unknown launcher, a budget that is not a whole number) is
refused here, as bad input naming the variable, before any work.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import BadInput
from orchestrator.paths import workloads_bin_dir

RESULTS_ENV = "ORCH_RESULTS"
SYSTEM_IMAGE_CACHE = Path("/var/cache/orchestrator/images")
LIBVIRT_URI_ENV, DEFAULT_LIBVIRT_URI = "ORCH_LIBVIRT_URI", "qemu:///system"
LAUNCHER_ENV, LAUNCHERS = "ORCH_GUEST_LAUNCHER", ("libvirt", "qemu")
IMAGE_CACHE_ENV = "ORCH_IMAGE_CACHE"
WORKLOADS_BIN_ENV = "ORCH_WORKLOADS_BIN"
LOCK_DIR_ENV, DEFAULT_LOCK_DIR = "ORCH_LOCK_DIR", "/run/lock/orchestrator"
RUN_LOCK_ENV, RUN_LOCK_NAME = "ORCH_LOCK", "run.lock"
NIGHTLY_LOCK_ENV, NIGHTLY_LOCK_NAME = "ORCH_NIGHTLY_LOCK", "nightly.lock"
STATE_ENV, DEFAULT_STATE_DIR = "ORCH_STATE_DIR", "/run/orchestrator"
# the same names and defaults as suite/loader.py's (the suite stage imports no settings)
POINTS_ENV, DEFAULT_MAX_POINTS = "ORCH_MAX_POINTS", 100_000
TRIALS_ENV, DEFAULT_MAX_TRIALS = "ORCH_MAX_TRIALS", 1_000_000
CRASH_DIR_ENV = "ORCH_CRASH_DIR"


@dataclass(frozen=True)
class Settings:
    results: Path  # the results root of every verb, unless --results-dir says otherwise
    libvirt_uri: str  # libvirt connection for guests and `gc`
    guest_launcher: str  # one of LAUNCHERS
    image_cache: Path  # absolute: libvirtd and QEMU open images from their own directories
    workloads_bin: Path  # the built guest workloads (native runs, and what images carry)
    lock_dir: Path  # the directory we make (0700) for both locks
    run_lock: Path  # the host's run lock
    nightly_lock: Path  # the nightly wrapper's lock
    state_dir: Path  # the host-wide index of live runs (store/ledger.py)
    max_points: int  # the largest sweep a suite may make, in points (suite/loader.py)
    max_trials: int  # ... and in trials, warm-ups included
    crash_dir: Path  # where an internal error's traceback file goes

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], euid: int | None = None) -> Settings:
        """Every setting from these variables (unset ones take their defaults); BadInput for
        a value that cannot be right. Each keeps the meaning it always had: an empty
        ORCH_LOCK_DIR, ORCH_LOCK, ORCH_NIGHTLY_LOCK, ORCH_STATE_DIR, ORCH_WORKLOADS_BIN or budget
        is as good as unset."""
        lock_dir = Path(environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)
        bins = environ.get(WORKLOADS_BIN_ENV)
        return cls(
            results=Path(environ.get(RESULTS_ENV, "results")),
            libvirt_uri=environ.get(LIBVIRT_URI_ENV, DEFAULT_LIBVIRT_URI),
            guest_launcher=_launcher(environ.get(LAUNCHER_ENV, LAUNCHERS[0])),
            image_cache=Path(environ.get(IMAGE_CACHE_ENV) or default_image_cache(
                environ, os.geteuid() if euid is None else euid)).resolve(),
            workloads_bin=Path(bins).resolve() if bins else workloads_bin_dir(),
            lock_dir=lock_dir,
            run_lock=Path(environ.get(RUN_LOCK_ENV) or lock_dir / RUN_LOCK_NAME),
            nightly_lock=Path(environ.get(NIGHTLY_LOCK_ENV) or lock_dir / NIGHTLY_LOCK_NAME),
            state_dir=Path(environ.get(STATE_ENV) or DEFAULT_STATE_DIR),
            max_points=_budget(environ, POINTS_ENV, DEFAULT_MAX_POINTS),
            max_trials=_budget(environ, TRIALS_ENV, DEFAULT_MAX_TRIALS),
            crash_dir=Path(environ.get(CRASH_DIR_ENV, tempfile.gettempdir())),
        )


def default_image_cache(environ: Mapping[str, str], euid: int) -> Path:
    """Where images live unless ORCH_IMAGE_CACHE says: the system's cache as root, the user's
    XDG cache otherwise (as mkosi and systemd tools do), never the checkout, so every checkout
    of a host shares one cache (each image keyed by the hash of its recipe), and a `git clean`
    keeps downloaded kernels and imported images."""
    if euid == 0:
        return SYSTEM_IMAGE_CACHE
    xdg = environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg.startswith("/") else Path(environ.get("HOME") or Path.home()) / ".cache"
    return base / "orchestrator" / "images"


def current() -> Settings:
    """The settings of this process's environment now: the default of a library function whose
    caller passed none. Commands never use it: their edge built theirs once and passes it."""
    return Settings.from_environ(os.environ)


def _launcher(name: str) -> str:
    if name not in LAUNCHERS:
        raise BadInput(f"{LAUNCHER_ENV}={name!r} is not a guest launcher",
                       hint=f"use one of {', '.join(LAUNCHERS)}")
    return name


def _budget(environ: Mapping[str, str], env: str, default: int) -> int:
    raw = environ.get(env, "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"[0-9]{1,18}", raw, re.ASCII) or int(raw) < 1:
        raise BadInput(f"{env}={raw[:40]!r} is not a whole number of at least 1",
                       hint=f"unset it for the default, {default:,}")
    return int(raw)
