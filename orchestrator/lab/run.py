"""`orchestrate lab run SUITE`: a whole suite inside the nested lab, labelled nested-tcg.

The orchestrator itself runs inside L1 (this checkout and its virtual environment, seen over
the read-only 9p root), so paging-mode switches, the run lock and guest lifecycles are the
ones a bare-metal lab host uses; only the guest launcher differs (QEMU directly, see
qemu_direct). The inner run is started in the background inside L1 and watched from here
through the shared directory, so no SSH channel has to live as long as the run. While it runs,
this side samples L1's npt parameter with L1's own clock: the run's rows can then be checked
against what sysfs said while they were measured, independently of the orchestrator's own
verification. When it ends, the run directory moves into the results root with a `lab`
section in its manifest (npt before and after, the samples).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import proc
from orchestrator.errors import BadInput, ExitCode, HarnessError
from orchestrator.guests.images import load_image, require_workloads
from orchestrator.guests.kernels import lab_host_kernel
from orchestrator.lab.l1 import (
    CONSOLE,
    L1_PATH,
    NPT,
    QEMU_LOG,
    HostKernel,
    Lab,
    LabLost,
    load_kvm,
    nested_lab,
)
from orchestrator.paths import PROJECT_ROOT
from orchestrator.settings import Settings
from orchestrator.store import rundir
from orchestrator.store.tables import finalize_tables
from orchestrator.suite.kernel_choice import IMAGE_KERNEL
from orchestrator.suite.loader import LoadedSuite, load_suite

log = logging.getLogger(__name__)

SHARE = Path("/mnt")  # the writable share, as L1 sees it
POLL_S = 2.0
STOP_GRACE_S = 300.0  # a stopped run still destroys its guest and reloads kvm_amd (slow in L1)

# Read from the run directory by `tests/lab` and `bench/`: what sysfs said and when.
Sample = dict[str, Any]  # {"t": L1 epoch seconds, "npt": "Y" | "N" | "-"}


@dataclass
class LabRunOutcome:
    exit_code: int
    run_dir: Path | None
    npt_before: str
    npt_after: str
    samples: list[Sample] = field(default_factory=list)


def stage_share(workdir: Path, loaded: LoadedSuite, image_cache: Path | None = None) -> None:
    """The suite and the guests' images (from `image_cache`, the settings' image cache), where
    L1 can read them (its /tmp is a tmpfs)."""
    (workdir / "suite.yaml").write_text(loaded.text)
    for kind in sorted({g.image for g in loaded.suite.guests.values()}):
        image = load_image(kind, image_cache)
        target = workdir / "images" / image.directory.name
        target.mkdir(parents=True, exist_ok=True)
        for item in image.directory.iterdir():
            _link_or_copy(item, target / item.name)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)  # staged by an earlier run in this lab
    try:
        os.link(src, dst)  # same file system: free, and a disk image is not copied
    except OSError:
        shutil.copy2(src, dst)


def inner_env(venv: Path) -> dict[str, str]:
    """The whole environment of an orchestrator command inside L1: L1's own settings (guests
    as QEMU processes, the images staged in the share), read by that command's front door."""
    return {
        "PATH": f"{venv}/bin:{L1_PATH}",
        "HOME": "/root", "ORCH_GUEST_LAUNCHER": "qemu",
        "ORCH_IMAGE_CACHE": f"{SHARE}/images", "NO_COLOR": "1", "TERM": "dumb",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def orchestrate_in_lab(lab: Lab, *args: str, timeout: float) -> proc.Completed:
    """Another `orchestrate` command inside L1, in the inner run's environment (e.g. the
    next command after a run there was killed)."""
    venv = PROJECT_ROOT / ".venv"
    env = [f"{k}={v}" for k, v in inner_env(venv).items()]
    return lab.run(["env", "-i", *env, f"{venv}/bin/orchestrate", *args], timeout=timeout,
                   check=False)


def inner_script(venv: Path, hostname: str) -> str:
    assignments = " ".join(f"{k}={v}" for k, v in inner_env(venv).items())
    # A background job of a non-interactive shell ignores SIGINT, so the run is stopped with
    # SIGTERM (which the orchestrator treats as Ctrl-C: guests destroyed, npt restored). L1's
    # KVM runs on emulated hardware: its rows say so (accel=nested-tcg, not kvm).
    return (f"#!/bin/sh\nhostname {hostname}\ncd {SHARE}\n"
            f"env -i {assignments} {venv}/bin/orchestrate run {SHARE}/suite.yaml "
            f"--results-dir {SHARE}/results --accel-label nested-tcg "
            f"> {SHARE}/inner.log 2>&1 &\n"
            f"echo $! > {SHARE}/inner.pid\nwait $!\necho $? > {SHARE}/inner.rc\n")


def sample_npt(lab: Lab) -> Sample:
    done = lab.run(["sh", "-c", f"date +%s.%N; cat {NPT} 2>/dev/null || echo -"], timeout=60,
                   idempotent=True)
    stamp, value = done.stdout.split()
    return {"t": float(stamp), "npt": value}


def start_inner(lab: Lab, loaded: LoadedSuite, image_cache: Path | None = None) -> str:
    """Start `orchestrate run` of the suite in the background inside L1 (its PID lands in
    the share's inner.pid, its exit status in inner.rc); L1's npt before it, as sysfs said."""
    workdir = lab.workdir
    for stale in ("inner.rc", "inner.pid", "inner.log"):
        (workdir / stale).unlink(missing_ok=True)
    stage_share(workdir, loaded, image_cache)
    venv = PROJECT_ROOT / ".venv"
    (workdir / "inner.sh").write_text(inner_script(venv, f"{socket.gethostname()}-lab"))
    npt_before = lab.sysfs_read(NPT)
    lab.run(["sh", "-c", f"setsid -f sh {SHARE}/inner.sh </dev/null >/dev/null 2>&1"],
            timeout=60)
    return npt_before


def run_in_lab(lab: Lab, loaded: LoadedSuite, results_root: Path, *,
               timeout: float = 3600.0, stop_when: Callable[[Path], bool] | None = None,
               image_cache: Path | None = None) -> LabRunOutcome:
    """Run a suite inside L1 and bring its run directory into results_root.

    `stop_when(share)` is asked at every poll; True stops the run as Ctrl-C would (tests use
    it to interrupt a run half way). Ctrl-C or SIGTERM here stops the inner run the same way,
    collects what it measured, and is then re-raised."""
    workdir = lab.workdir
    npt_before = start_inner(lab, loaded, image_cache)
    samples: list[Sample] = []
    interrupted = False
    try:
        try:
            _watch(lab, workdir, samples, timeout, stop_when)
        except KeyboardInterrupt:
            interrupted = True
            _stop_inner(lab, workdir, samples)
        npt_after = lab.sysfs_read(NPT)
    except LabLost as lost:
        # what was measured is on this side already (the share): keep it, then say how L1 died
        run_dir = _collect(workdir, results_root, {
            "npt_before": npt_before, "npt_samples": samples, "l1_host": socket.gethostname(),
            "l1_kernel": lab.kernel_facts, "lost": str(lost)})
        if run_dir is not None:
            _salvage(run_dir, str(lost))
        raise LabLost(f"{lost}; measured trials kept in {run_dir}", hint=lost.hint) from None
    rc = int((workdir / "inner.rc").read_text())
    run_dir = _collect(workdir, results_root, {
        "npt_before": npt_before, "npt_after": npt_after, "npt_samples": samples,
        "inner_exit_code": rc, "l1_host": socket.gethostname(), "l1_kernel": lab.kernel_facts})
    if interrupted:
        raise KeyboardInterrupt("lab run interrupted")
    return LabRunOutcome(rc, run_dir, npt_before, npt_after, samples)


def _watch(lab: Lab, workdir: Path, samples: list[Sample], timeout: float,
           stop_when: Callable[[Path], bool] | None) -> None:
    deadline = time.monotonic() + timeout
    stopping = False
    while not (workdir / "inner.rc").exists():
        samples.append(sample_npt(lab))
        if not stopping and stop_when is not None and stop_when(workdir):
            _signal_inner(lab, workdir)
            stopping = True
            deadline = time.monotonic() + STOP_GRACE_S
        if time.monotonic() > deadline:
            if stopping:
                raise HarnessError("the run inside the lab did not stop",
                                   hint=f"its log: {workdir / 'inner.log'}")
            _signal_inner(lab, workdir)
            stopping = True
            deadline = time.monotonic() + STOP_GRACE_S
        time.sleep(POLL_S)


def _signal_inner(lab: Lab, workdir: Path) -> None:
    pid = (workdir / "inner.pid").read_text().strip()
    log.info("stopping the run inside the lab (SIGTERM to %s)", pid)
    lab.run(["kill", "-TERM", pid], timeout=60, check=False, idempotent=True)


def _stop_inner(lab: Lab, workdir: Path, samples: list[Sample]) -> None:
    _signal_inner(lab, workdir)
    _watch(lab, workdir, samples, STOP_GRACE_S, None)


def _salvage(run_dir: Path, why: str) -> None:
    """A run whose host died before it could finish: its tables from the journal, and why."""
    finalize_tables(run_dir)
    rundir.mark_unfinished(run_dir, "error", error=why)


def _collect(workdir: Path, results_root: Path, lab_facts: dict[str, Any]) -> Path | None:
    inner_root = workdir / "results"
    runs = sorted(p for p in inner_root.glob("*") if p.is_dir() and not p.is_symlink()
                  ) if inner_root.exists() else []
    if not runs:
        tail = (workdir / "inner.log").read_text(errors="replace").strip().splitlines()[-3:]
        log.error("the run inside the lab left no run directory: %s", " | ".join(tail))
        return None
    results_root.mkdir(parents=True, exist_ok=True)
    run_dir = results_root / runs[-1].name
    shutil.move(runs[-1], run_dir)
    logs = rundir.RunDir(run_dir).logs
    logs.mkdir(exist_ok=True)
    for name in ("inner.log", CONSOLE, QEMU_LOG):
        if (workdir / name).exists():
            shutil.copy2(workdir / name, logs / f"lab-{name}")
    rundir.RunDir(run_dir).update_manifest(lab=lab_facts)
    rundir.update_latest(results_root, run_dir)
    return run_dir


# ---- the verb ---------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    lab = sub.add_parser("lab", help="the nested lab: real KVM (npt=1 / npt=0) inside a "
                                     "TCG-emulated lab host, for machines without VMX/SVM")
    verbs = lab.add_subparsers(dest="lab_verb", required=True)
    run = verbs.add_parser("run", help="run a suite inside the nested lab (rows labelled "
                                       "nested-tcg)")
    run.add_argument("suite", type=Path)
    run.add_argument("--results-dir", type=Path, default=None,
                     help="where the run directory goes (default: ./results or $ORCH_RESULTS)")
    run.add_argument("--memory-mib", type=int, default=4096, help="L1's memory (MiB)")
    run.add_argument("--smp", type=int, default=2, help="L1's vCPUs (TCG threads)")
    run.add_argument("--timeout", type=float, default=4 * 3600.0,
                     help="stop the run (as Ctrl-C would) after this many seconds")
    run.add_argument("--host-kernel", default=None, metavar="KERNEL",
                     help="boot L1 (the lab host, where KVM runs) on this kernel instead of "
                          "the installed one: a Debian package (linux-image-...), a .deb, or "
                          "a bzImage you built (with --host-kernel-modules)")
    run.add_argument("--host-kernel-modules", default=None, metavar="DIR",
                     help="the INSTALL_MOD_PATH of your kernel's `make modules_install`")
    run.set_defaults(func=cmd_lab_run)


def chosen_host_kernel(spec: str | None, modules: str | None, cache_root: Path
                       ) -> HostKernel | None:
    """--host-kernel resolved (fetched, unpacked, verified), or None for the installed one."""
    if spec is None:
        if modules is not None:
            raise BadInput("--host-kernel-modules without --host-kernel",
                           hint="give the bzImage with --host-kernel")
        return None
    kernel = lab_host_kernel(spec, modules=modules, base_dir=Path.cwd(), cache_root=cache_root)
    facts = {key: str(value) for key, value in kernel.provenance().items()}
    return HostKernel(kernel.release, kernel.image, kernel.modules_base, kernel.kernel_id,
                      tuple(sorted(facts.items())))


def cmd_lab_run(args: argparse.Namespace) -> int:
    settings: Settings = args.settings  # read once by the front door (cli/entry.py)
    loaded = load_suite(args.suite, budget=settings)
    chosen = sorted(n for n, g in loaded.suite.guests.items() if g.kernel != (IMAGE_KERNEL,))
    if chosen:  # L1 sees only the staged images, and has no apt to fetch a kernel with
        raise BadInput(f"the nested lab boots only the images' own kernels; guest "
                       f"{chosen[0]!r} chooses its kernel:",
                       hint="run it on a host with `orchestrate run`, or drop kernel:")
    if not (PROJECT_ROOT / ".venv" / "bin" / "orchestrate").exists():
        raise BadInput("the lab runs this checkout's .venv inside L1, and there is none",
                       hint="run scripts/setup first")
    require_workloads(settings.workloads_bin)
    host_kernel = chosen_host_kernel(args.host_kernel, args.host_kernel_modules,
                                     settings.image_cache)
    root = (args.results_dir or settings.results).resolve()  # QEMU gets absolute paths
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lab-", dir=root) as tmp, \
            nested_lab(Path(tmp), memory_mib=args.memory_mib, smp=args.smp,
                       host_kernel=host_kernel) as lab:
        load_kvm(lab, npt=True)  # a lab host's usual state: two-dimensional paging on
        outcome = run_in_lab(lab, loaded, root, timeout=args.timeout,
                             image_cache=settings.image_cache)
    print(json.dumps({"run_dir": str(outcome.run_dir), "npt_before": outcome.npt_before,
                      "npt_after": outcome.npt_after, "exit_code": outcome.exit_code}))
    if outcome.run_dir is None:
        return ExitCode.HARNESS_BROKE
    return outcome.exit_code
