"""What the launchers share (guests/spec.py), and that the launchers libvirt cannot serve need
no libvirt at all: the nested lab exists because libvirt fails there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import HarnessError
from orchestrator.guests.spec import file_tail, nic_args, qmp_return

ROOT = Path(__file__).resolve().parents[2]


def test_the_lab_and_the_qemu_launcher_import_without_libvirt() -> None:
    code = ("import sys\n"
            "sys.modules['libvirt'] = None  # `import libvirt` now fails\n"
            "sys.modules['libvirt_qemu'] = None\n"
            "import orchestrator.lab.run, orchestrator.lab.l1, orchestrator.guests.qemu_direct\n"
            "try:\n"
            "    import orchestrator.guests.libvirt_domain\n"
            "except ImportError:\n"
            "    print('blocked')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "blocked"  # the shim works: libvirt really was unimportable


def test_the_nic_forwards_only_the_ssh_port_to_loopback() -> None:
    argv = nic_args(2222)
    assert argv[0] == "-netdev" and argv[2] == "-device"
    assert argv[1] == "user,id=orchnet,hostfwd=tcp:127.0.0.1:2222-:22"
    assert argv[3].startswith("virtio-net-pci,netdev=orchnet,")


def test_file_tail_gives_the_last_lines_or_nothing(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    assert file_tail(log, 3) == ""  # before QEMU has written it
    log.write_text("one\r\ntwo\nthree \nfour\n\n")
    assert file_tail(log, 2) == "three\nfour"
    assert file_tail(log, 3, sep=" | ") == "two | three | four"
    assert file_tail(log, 10).splitlines()[0] == "one"


def test_a_qmp_error_is_a_harness_error_with_qemus_words() -> None:
    assert qmp_return("query-status", {"return": {"status": "running"}}) == {"status": "running"}
    with pytest.raises(HarnessError, match="QMP migrate: Migration is disabled"):
        qmp_return("migrate", {"error": {"class": "GenericError",
                                         "desc": "Migration is disabled"}})
