"""Guest benchmarks (figures printed, no thresholds): boot-to-SSH through the orchestrator vs
a raw qemu-system-x86_64 boot of the same kernel/initramfs to the same point (SSH answering
with the pinned key), and the per-trial overhead of an empty workload over the persistent SSH
connection. Goals from the issue: orchestrator <= 1.2x raw; overhead < 10 ms median.
Run as root with libvirtd up: .venv/bin/python bench/bench_guest.py
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from orchestrator.guests.guest import BASE_CMDLINE, booted_guest
from orchestrator.guests.images import build_mini
from orchestrator.guests.libvirt_domain import DEFAULT_URI
from orchestrator.guests.spec import DomainSpec, nic_args, pick_free_port
from orchestrator.guests.ssh import kernel_key_arg, new_run_key, wait_for_ssh

ROUNDS = 3


def orchestrated_boot(tmp: Path, key: Path, public: str) -> tuple[float, list[float]]:
    image = build_mini()
    spec = DomainSpec(name=f"orch-bench-{time.time_ns() % 10**6}", run_id="bench", accel="tcg",
                      vcpus=1, memory_mib=768, hugepages="none", cpu_pins=None,
                      kernel=image.kernel, initrd=image.initrd, cmdline=BASE_CMDLINE,
                      ssh_port=pick_free_port(), console_log=tmp / "console.log")
    start = time.monotonic()
    with booted_guest(spec, image, key=key, public_key=public, uri=DEFAULT_URI,
                      boot_timeout=300) as (_, session):
        boot = time.monotonic() - start
        overhead = []
        for _ in range(100):
            t0 = time.perf_counter()
            session.run(["/opt/workloads/bin/noop"], timeout=30)
            overhead.append(time.perf_counter() - t0)
    return boot, overhead


def raw_boot(key: Path, public: str) -> float:
    image = build_mini()
    port = pick_free_port()
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "768", "-machine",
            "q35", "-nographic", "-no-reboot", "-kernel", str(image.kernel), "-initrd",
            str(image.initrd), "-append", f"{BASE_CMDLINE} {kernel_key_arg(public)}",
            *nic_args(port)]
    start = time.monotonic()
    qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        session = wait_for_ssh("127.0.0.1", port, user="root", key=key,
                               host_key=image.host_key_pub, deadline_s=300,
                               alive=lambda: qemu.poll() is None, console=lambda: "")
        elapsed = time.monotonic() - start
        session.close()
        return elapsed
    finally:
        qemu.kill()
        qemu.wait()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        key, public = new_run_key(Path(tmp))
        raw, orch, overhead = [], [], []
        for _ in range(ROUNDS):  # interleaved, so drift on a shared machine hits both
            raw.append(raw_boot(key, public))
            boot, per_trial = orchestrated_boot(Path(tmp), key, public)
            orch.append(boot)
            overhead += per_trial
    r, o = statistics.median(raw), statistics.median(orch)
    print(f"boot to SSH (TCG, mini): raw QEMU {r:.2f} s, orchestrator via libvirt {o:.2f} s, "
          f"ratio {o / r:.2f} (goal <= 1.2) over {ROUNDS} rounds")
    print(f"empty workload over the persistent SSH connection: median "
          f"{statistics.median(overhead) * 1e3:.1f} ms, p90 "
          f"{sorted(overhead)[int(len(overhead) * 0.9)] * 1e3:.1f} ms (goal < 10 ms; "
          "the guest runs under TCG here)")


if __name__ == "__main__":
    main()
