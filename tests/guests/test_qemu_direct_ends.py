"""How a directly started QEMU's end is reported, and when its monitor counts as ready.

Real processes stand in for QEMU at the process boundary: what matters here is a child that
exits with a status and an error on its stderr, and a unix socket that exists before anything
listens on it (QEMU binds its monitor socket before it listens, and leaves the file behind when
it dies during start-up)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.errors import HarnessError
from orchestrator.guests.qemu_direct import (
    MonitorUnreachable,
    RunningQemu,
    _destination_failure,
    _wait_for_monitor,
    describe_end,
)
from orchestrator.guests.spec import DomainSpec


def _child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code])  # noqa: S603 - fixed argv


def _stale_socket(path: Path) -> None:
    """A socket file nobody listens on: connecting to it is refused."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))


def test_a_stale_monitor_socket_is_not_a_started_qemu(tmp_path: Path) -> None:
    console = tmp_path / "guest.log"
    console.with_suffix(".qemu.log").write_text(
        "qemu-system-x86_64: Could not set up host forwarding rule 'tcp:127.0.0.1:2222-:22'\n")
    monitor = tmp_path / "qmp.sock"
    _stale_socket(monitor)
    dead = _child("import sys; sys.exit(1)")
    with pytest.raises(HarnessError) as raised:
        _wait_for_monitor(monitor, dead, console)
    text = raised.value.one_line()
    assert "did not start" in text and "exited with status 1" in text
    assert "Could not set up host forwarding" in text and "\n" not in text


def test_the_monitor_is_ready_only_once_it_listens(tmp_path: Path) -> None:
    monitor = tmp_path / "qmp.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(monitor))  # the file exists from here on, like QEMU's between its calls
    listening_at: list[float] = []

    def listen_later() -> None:
        time.sleep(0.5)
        listening_at.append(time.monotonic())
        server.listen(1)

    alive = _child("import time; time.sleep(30)")
    thread = threading.Thread(target=listen_later)
    try:
        thread.start()
        _wait_for_monitor(monitor, alive, tmp_path / "guest.log")
        returned_at = time.monotonic()
        thread.join()
        assert listening_at and returned_at >= listening_at[0]
    finally:
        alive.kill()
        alive.wait()
        server.close()


def test_a_guest_that_ends_during_a_qmp_command_says_how(tmp_path: Path) -> None:
    console = tmp_path / "guest.log"
    console.write_text("[    5.1] Kernel panic - not syncing: Fatal exception\n")
    spec = DomainSpec(name="g", run_id="r", accel="kvm", vcpus=1, memory_mib=256,
                      hugepages="none", cpu_pins=None, kernel=tmp_path / "k",
                      initrd=tmp_path / "i", cmdline="", ssh_port=1, console_log=console)
    # a QEMU that has dropped its monitor and exits with 0 (a reset under -no-reboot)
    ending = _child("import time; time.sleep(0.5)")
    guest = RunningQemu("g", console, ending, spec, tmp_path / "gone.sock")
    with pytest.raises(HarnessError) as raised:
        guest.qmp("query-dirty-rate")
    text = raised.value.one_line()
    assert "g ended during QMP query-dirty-rate" in text
    assert "exited with status 0" in text and "Kernel panic" in text
    assert describe_end(ending, console).startswith("QEMU exited with status 0")


def test_a_destination_that_dies_after_its_monitor_accepted_is_reported_by_its_exit(
        tmp_path: Path) -> None:
    """The race CI saw: the monitor accepted, then QEMU failed its host forward and exited, and
    the QMP command met a reset connection. The warning names QEMU's exit and stderr."""
    console = tmp_path / "guest.log"
    console.with_suffix(".qemu.log").write_text(
        "qemu-system-x86_64: Could not set up host forwarding rule 'tcp:127.0.0.1:2222-:22'\n")
    dying = _child("import time, sys; time.sleep(0.3); sys.exit(1)")
    reset = MonitorUnreachable("QMP migrate-incoming failed: ConnectError reset by peer")
    text = _destination_failure(dying, console, reset)
    assert "did not start" in text and "exited with status 1" in text
    assert "Could not set up host forwarding" in text and "reset" not in text


def test_a_destination_still_running_is_reported_by_its_monitor_error(tmp_path: Path) -> None:
    alive = _child("import time; time.sleep(30)")
    try:
        refused = MonitorUnreachable("QMP migrate-incoming failed: timeout", hint="is it running?")
        assert _destination_failure(alive, tmp_path / "guest.log", refused) == (
            "QMP migrate-incoming failed: timeout (hint: is it running?)")
    finally:
        alive.kill()
        alive.wait()
