"""The pure parts of bringing your own image (#18): partition tables, the seed's user-data,
the QEMU command line of a guest booting its own loader, the console's diagnosis. The real
boots are in test_byo.py."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from orchestrator.errors import HarnessError
from orchestrator.guests.cloud_boot import diagnose
from orchestrator.guests.cloud_image import ESP_GUID, is_file_ref, partitions
from orchestrator.guests.cloud_init import user_data
from orchestrator.guests.qemu_direct import qemu_argv
from orchestrator.guests.spec import OVMF_CODE, DomainSpec

LINUX_GUID = bytes(range(16))


def mbr(kind: int) -> bytearray:
    head = bytearray(34 * 512)
    head[0x1BE + 4] = kind
    struct.pack_into("<II", head, 0x1BE + 8, 2048, 4096)
    head[510:512] = b"\x55\xaa"
    return head


def gpt(*kinds: bytes) -> bytes:
    head = mbr(0xEE)  # the protective MBR
    head[512:520] = b"EFI PART"
    struct.pack_into("<QII", head, 512 + 72, 2, 128, 128)
    for i, kind in enumerate(kinds):
        at = 2 * 512 + i * 128
        head[at:at + 16] = kind
        struct.pack_into("<QQ", head, at + 32, 2048 * (i + 1), 2048 * (i + 2) - 1)
    return bytes(head)


def test_partition_tables_tell_uefi_from_bios() -> None:
    assert partitions(bytes(34 * 512)) is None  # no signature: not a disk
    assert partitions(bytes(mbr(0x83))) == (False, [(False, 2048, 4096)])
    assert partitions(bytes(mbr(0xEF))) == (False, [(True, 2048, 4096)])
    is_gpt, found = partitions(gpt(ESP_GUID, LINUX_GUID)) or (False, [])
    assert is_gpt and found == [(True, 2048, 2048), (False, 4096, 2048)]


def test_user_data_pins_our_key_and_turns_off_slow_things() -> None:
    text = user_data("ssh-ed25519 CLIENT run", "PRIVATE\n", "ssh-ed25519 HOST")
    assert text.startswith("#cloud-config\n")
    config = json.loads(text.split("\n", 1)[1])
    assert config["ssh_keys"] == {"ed25519_private": "PRIVATE\n",
                                  "ed25519_public": "ssh-ed25519 HOST"}
    assert config["ssh_genkeytypes"] == [] and config["ssh_deletekeys"] is True
    assert config["ssh_authorized_keys"] == ["ssh-ed25519 CLIENT run"]
    assert config["package_upgrade"] is False and config["package_update"] is False


def spec(**changes: object) -> DomainSpec:
    base = DomainSpec(name="orch-x", run_id="r", accel="tcg", vcpus=1, memory_mib=512,
                      hugepages="none", cpu_pins=None, kernel=Path("/k"), initrd=Path("/i"),
                      cmdline="console=ttyS0", ssh_port=2222, console_log=Path("/tmp/c.log"),
                      disk=Path("/o.qcow2"))
    return DomainSpec(**{**base.__dict__, **changes})


def test_a_guest_with_its_own_loader_boots_no_kernel_and_gets_its_seed_after_its_disk() -> None:
    direct = qemu_argv(spec())
    assert "-kernel" in direct and "if=pflash" not in " ".join(direct)
    argv = " ".join(qemu_argv(spec(firmware="uefi", firmware_vars=Path("/v.fd"),
                                   seed=Path("/s.img"))))
    assert "-kernel" not in argv and "-append" not in argv
    assert f"readonly=on,file={OVMF_CODE}" in argv and "unit=1,file=/v.fd" in argv
    assert argv.index("file=/o.qcow2") < argv.index("file=/s.img,format=raw,if=virtio,readonly")
    bios = " ".join(qemu_argv(spec(firmware="bios", seed=Path("/s.img"))))
    assert "pflash" not in bios and "-kernel" not in bios


def test_the_console_says_why_a_guest_never_answered(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    error = HarnessError("no SSH from the guest within 20s")
    assert "wrote nothing on its serial console" in diagnose(error, log).one_line()
    log.write_text("BdsDxe: starting Boot0001\nerror: file `/vmlinuz' not found.\ngrub> \n")
    assert "no kernel starting" in diagnose(error, log).one_line()
    log.write_text("[0.0] Linux version 6.1.0\n[5.0] Run /init as init process\n")
    assert "the image has no cloud-init" in diagnose(error, log).one_line()
    log.write_text("Linux version 6.1\ncloud-init[340]: Cloud-init v. 22.4.2 running\n")
    assert "console's last lines" in diagnose(error, log).one_line()


def test_file_references_are_told_from_names() -> None:
    assert is_file_ref("disks/noble.img") and is_file_ref("noble.qcow2")
    assert not is_file_ref("noble")
