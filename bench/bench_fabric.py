"""Empty-trial overhead with fabric (issue #18) against the project's own runner.

The design card names fabric; the issue asks to use it where it removes hand-written code,
unless it costs per-trial overhead. Both sides here run `true` N times against one real OpenSSH
sshd on 127.0.0.1 (bench/loopback_sshd.py), over one connection each, with the same pinned host
key and client key:

- runner: `GuestSession.run(["true"])` (one long-lived runner channel, guests/runner.py);
- fabric: `Connection.run("timeout -s KILL N true", hide=True, warn=True)`, fabric's own
  paramiko client with our pinned host key (a channel per command, as fabric always does).

Prints the medians and their ratio, and the time of copying the guest workloads (SFTP) with
paramiko's SFTP and with fabric's `Connection.put`. Root only (sshd); fabric is not a
dependency of the project (the runner was 27x faster per empty trial here, and fabric's put is
paramiko's SFTP), so install it to run this: `.venv/bin/pip install fabric`.
    .venv/bin/python -m bench.bench_fabric [-n 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

from bench.loopback_sshd import available, loopback_sshd
from orchestrator.guests import ssh
from orchestrator.paths import workloads_bin_dir


def timed(call: Callable[[], object], n: int) -> float:
    costs = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        costs.append(time.perf_counter() - start)
    return statistics.median(costs)


def fabric_connection(port: int, key: Path, host_key: str) -> object:
    from fabric import Connection  # type: ignore[import-not-found, import-untyped, unused-ignore]  # optional

    conn = Connection("127.0.0.1", port=port, user="root",
                      connect_kwargs={"key_filename": str(key), "look_for_keys": False,
                                      "allow_agent": False})
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    kind, blob = host_key.split()[:2]
    conn.client.get_host_keys().add(f"[127.0.0.1]:{port}", kind, ssh._pinned(host_key))
    conn.open()
    return conn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="empty trials per side")
    args = parser.parse_args()
    why = available("openssh")
    try:
        import fabric  # noqa: F401 (not a dependency)
    except ImportError:
        why = why or "needs fabric (.venv/bin/pip install fabric)"
    if why:
        print(f"bench_fabric: {why}", file=sys.stderr)
        return 2
    bins = sorted(p for p in workloads_bin_dir().iterdir() if p.is_file())
    with tempfile.TemporaryDirectory() as tmp, loopback_sshd(Path(tmp)) as server:
        session = ssh.GuestSession("127.0.0.1", server.port, user="root",
                                   key=server.client_key, host_key=server.host_key,
                                   connect_timeout=10)
        conn = fabric_connection(server.port, server.client_key, server.host_key)
        try:
            session.run(["true"], timeout=30)
            conn.run("true", hide=True)  # type: ignore[attr-defined]
            ours = timed(lambda: session.run(["true"], timeout=30), args.n)
            theirs = timed(lambda: conn.run("timeout -s KILL 30 true",  # type: ignore[attr-defined]
                                            hide=True, warn=True), args.n)
            dest = Path(tmp) / "dest"
            dest.mkdir()
            put_ours = timed(lambda: session.put({p: str(dest / p.name) for p in bins}), 3)
            put_theirs = timed(lambda: [conn.put(str(p), str(dest / p.name))  # type: ignore[attr-defined]
                                        for p in bins], 3)
        finally:
            session.close()
            conn.close()  # type: ignore[attr-defined]
    print(f"empty trial (`true`), median of {args.n}, loopback OpenSSH sshd:")
    print(f"  runner (GuestSession.run):  {ours * 1e3:7.2f} ms")
    print(f"  fabric (Connection.run):    {theirs * 1e3:7.2f} ms  ({theirs / ours:.1f}x)")
    print(f"copying the {len(bins)} workloads, median of 3:")
    print(f"  paramiko SFTP (one session): {put_ours * 1e3:7.1f} ms")
    print(f"  fabric Connection.put:       {put_theirs * 1e3:7.1f} ms  "
          f"({put_theirs / put_ours:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
