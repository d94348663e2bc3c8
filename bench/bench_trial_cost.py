"""Per-trial cost (issue #21): an empty trial (`noop`) through GuestSession, beside the floor
(one loopback TCP round trip + spawning `noop`), as ratios within one run. Figures printed, no
thresholds. Goals: < 5 ms median against a loopback sshd, within 2x of the floor.

Each row runs the empty trial three ways on the same machine, minute and server: through the
guest's orch-runner (what a run uses now), through the shell-loop runner with the guest's
`timeout` per command (what a guest without the helper gets), and the way ssh.py worked before
the issue (a channel per command on a socket without TCP_NODELAY).
Servers: OpenSSH's sshd and dropbear on 127.0.0.1 (bench/loopback_sshd.py); with --mini a
`mini` guest (dropbear, TCG) booted as plain QEMU and destroyed after; with --image DIR any
built image (e.g. a `debian` one, OpenSSH) the same way.

Run as root: .venv/bin/python -m bench.bench_trial_cost [--mini] [--image DIR] [--trials N]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import paramiko

from bench.loopback_sshd import SERVERS, available, loopback_sshd
from orchestrator.guests import ssh
from orchestrator.guests.guest import BASE_CMDLINE, booted_guest
from orchestrator.guests.images import GUEST_BIN, Image, build_mini, load_from, overlay
from orchestrator.guests.libvirt_domain import DEFAULT_URI
from orchestrator.guests.runner import HELPER
from orchestrator.guests.spec import DomainSpec, pick_free_port
from orchestrator.settings import current

Row = tuple[str, list[float], list[float], list[float]]  # name; orch-runner, shell, before (ms)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples)


def timed(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def round_trips(n: int) -> list[float]:
    """One byte there and back over loopback TCP (both ends TCP_NODELAY, one write each)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        peer, _ = listener.accept()
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := peer.recv(64):
            peer.sendall(data)
        peer.close()

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def once() -> None:
        client.sendall(b"x")
        client.recv(64)

    samples = timed(once, n)
    client.close()
    thread.join(timeout=5)
    listener.close()
    return samples


def spawns(program: Path, n: int) -> list[float]:
    quiet = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]

    def once() -> None:
        pid = os.posix_spawn(str(program), [str(program)], {}, file_actions=quiet)
        os.waitpid(pid, 0)

    return timed(once, n)


def old_way(port: int, key: Path, host_key: str, argv: list[str], n: int) -> list[float]:
    """What GuestSession.run did before #21: no TCP_NODELAY, a channel per command."""
    client = paramiko.SSHClient()
    client.get_host_keys().add(f"[127.0.0.1]:{port}", host_key.split()[0],
                               ssh._pinned(host_key))
    client.connect("127.0.0.1", port, username="root", key_filename=str(key),
                   look_for_keys=False, allow_agent=False, timeout=30)
    transport = client.get_transport()
    assert transport is not None
    command = " ".join(["timeout", "-s", "KILL", "30", *argv])
    try:
        return timed(lambda: ssh._exec_channel(transport, command, 45), n)
    finally:
        client.close()


def now_way(port: int, key: Path, host_key: str, argv: list[str], n: int,
            helper: str | None) -> list[float]:
    """GuestSession.run(argv) n times, through orch-runner at `helper` (None: the shell loop)."""
    with ssh.GuestSession("127.0.0.1", port, user="root", key=key, host_key=host_key,
                          connect_timeout=30) as session:
        if helper:
            session.use_helper(helper)
        # the runner starts on first use: not a trial's cost
        assert session.runner_kind() == ("orch-runner" if helper else "sh")
        return timed(lambda: session.run(argv, timeout=30), n)


def loopback_rows(n: int) -> list[Row]:
    noop = str(current().workloads_bin / "noop")
    rows = []
    for server in SERVERS:
        why = available(server)
        if why:
            print(f"(no loopback {server}: {why})")
            continue
        with tempfile.TemporaryDirectory() as tmp, loopback_sshd(Path(tmp), server) as running:
            args = (running.port, running.client_key, running.host_key, [noop])
            shell = "" if running.clean_shell else ", root's own login shell"
            helper = str(current().workloads_bin / HELPER)
            rows.append((f"loopback {server}{shell}", now_way(*args, n, helper),
                         now_way(*args, n, None), old_way(*args, n)))
    return rows


def guest_row(image: Image, n: int) -> Row:
    """An empty trial in a guest booted as plain QEMU under TCG (destroyed on every path)."""
    with tempfile.TemporaryDirectory() as tmp:
        key, public = ssh.new_run_key(Path(tmp))
        name = f"orch-bench-{uuid.uuid4().hex[:6]}"
        disk = overlay(image, Path(tmp), name) if image.disk else None
        spec = DomainSpec(name=name, run_id="bench", accel="tcg", vcpus=1, memory_mib=768,
                          hugepages="none", cpu_pins=None, kernel=image.kernel,
                          initrd=image.initrd,
                          cmdline=" ".join(filter(None, [BASE_CMDLINE, image.boot_args])),
                          ssh_port=pick_free_port(), console_log=Path(tmp) / "console.log",
                          disk=disk)
        with booted_guest(spec, image, key=key, public_key=public, uri=DEFAULT_URI,
                          boot_timeout=600, launcher="qemu") as (_, session):
            session.close()  # the two ways below open their own connections
            args = (spec.ssh_port, key, image.host_key_pub, [f"{GUEST_BIN}/noop"])
            return (f"{image.kind} guest (TCG)", now_way(*args, n, f"{GUEST_BIN}/{HELPER}"),
                    now_way(*args, n, None), old_way(*args, n))


def report(rows: list[Row], floor_ms: float) -> None:
    print(f"{'':34} {'orch-runner':>11} {'p90':>8} {'/floor':>7}   {'shell loop':>10} "
          f"{'/floor':>7}   {'before #21':>10} {'/floor':>7}")
    for name, now, shell, before in rows:
        p90 = sorted(now)[int(len(now) * 0.9)]
        m, sh, b = median_ms(now), median_ms(shell), median_ms(before)
        print(f"{name:34} {m:9.2f}ms {p90:6.2f}ms {m / floor_ms:6.1f}x   {sh:8.2f}ms "
              f"{sh / floor_ms:6.1f}x   {b:8.2f}ms {b / floor_ms:6.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--mini", action="store_true", help="also in a mini guest (TCG)")
    parser.add_argument("--image", type=Path, action="append", default=[],
                        help="also in a guest of this built image directory (TCG)")
    args = parser.parse_args()
    noop = current().workloads_bin / "noop"
    rtt, spawn = round_trips(args.trials * 5), spawns(noop, args.trials * 5)
    floor_ms = median_ms(rtt) + median_ms(spawn)
    print(f"floor: loopback round trip {median_ms(rtt):.3f} ms + spawn noop "
          f"{median_ms(spawn):.3f} ms = {floor_ms:.3f} ms")
    rows = loopback_rows(args.trials)
    images = ([build_mini()] if args.mini else []) + [load_from(d) for d in args.image]
    for image in images:
        rows.append(guest_row(image, max(20, args.trials // 4)))
    report(rows, floor_ms)
    print("medians of GuestSession.run([noop]): through orch-runner (the command killed at its "
          "deadline by the runner itself); through the shell loop (`timeout -s KILL` per "
          "command); before #21: a channel per command without TCP_NODELAY. Guests' ratios "
          "are to the host's floor (a TCG guest's own fork+exec is far slower).")


if __name__ == "__main__":
    main()
