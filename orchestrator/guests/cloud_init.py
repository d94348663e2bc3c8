"""The cloud-init NoCloud seed of one guest: user-data and meta-data on a vfat volume labelled
CIDATA (cloud-init's NoCloud finds it by that label), attached as a read-only disk.

It hands the guest the run's client key (root's authorized key) and an ed25519 host key made
here for this guest alone, which the orchestrator then pins: nothing is trusted on first use.
It turns off what slows a first boot (package updates and upgrades, the other host key types,
growing the root file system). vfat rather than ISO: mkfs.vfat and mcopy (dosfstools,
mtools) make it from files without a mount, as the test image's ESP is made.

The seed holds the guest's host private key: it is made under umask 077 and kept private
like the images' key-holding files (images.private_mode).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from orchestrator import proc
from orchestrator.guests.images import private_mode, private_umask, qemu_gid

SEED_KIB = 1024
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


def host_key() -> tuple[str, str]:
    """A fresh ed25519 host key: (private key file text, public line "ssh-ed25519 AAAA...")."""
    with tempfile.TemporaryDirectory(prefix="orch-hostkey-") as tmp:  # 0700
        key = Path(tmp) / "key"
        proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "orch-guest", "-f",
                  str(key)], timeout=60)
        public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
        return key.read_text(), public


def user_data(client_key: str, private: str, public: str) -> str:
    """#cloud-config (JSON is YAML): keys in, first-boot slowness out."""
    config = {
        "disable_root": False,  # root logs in with the run's key (perf and dirty need root)
        "ssh_authorized_keys": [client_key],
        "ssh_pwauth": False,
        "ssh_deletekeys": True,  # any host key the image shipped with goes
        "ssh_genkeytypes": [],  # and none is generated: ours is the only one
        "ssh_keys": {"ed25519_private": private, "ed25519_public": public},
        "package_update": False,
        "package_upgrade": False,
        "package_reboot_if_required": False,
        "locale": False,  # minimal images lack the locales it would generate (and it is slow)
        "growpart": {"mode": "off"},
        "resize_rootfs": False,
    }
    return "#cloud-config\n" + json.dumps(config, indent=1) + "\n"


def make_seed(path: Path, *, instance: str, hostname: str, client_key: str) -> str:
    """The seed volume at `path`; returns the host key's public line, to pin."""
    private, public = host_key()
    with private_umask(), tempfile.TemporaryDirectory(prefix="orch-seed-") as tmp:
        files = Path(tmp)
        (files / "user-data").write_text(user_data(client_key, private, public))
        (files / "meta-data").write_text(f"instance-id: {instance}\nlocal-hostname: "
                                         f"{hostname}\n")
        path.unlink(missing_ok=True)
        proc.run(["mkfs.vfat", "-n", "CIDATA", "-C", str(path), str(SEED_KIB)], timeout=60)
        proc.run(["mcopy", "-i", str(path), str(files / "user-data"), str(files / "meta-data"),
                  "::/"], timeout=60, env=MTOOLS_ENV)
    private_mode(path, qemu_gid())
    return public
