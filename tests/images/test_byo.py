"""Bring your own guest image (#18), for real: a cloud image built here from Debian packages
(images/cloud/build-test-image: GRUB on an ESP, Debian's kernel, cloud-init, openssh-server,
nothing of this project) is imported and runs a fork-dirty suite under TCG through
`orchestrate run`: booted by OVMF from a per-guest overlay, our host key pinned, the workloads
shipped over SFTP. And the refusals: not a disk image, another architecture, a disk that
never boots, an image without cloud-init.

The built disk is cached in the image cache under test-cloud/, keyed by the hash of the build
script, so a CI machine builds it once (about 2 minutes here)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import results
from orchestrator.guests.images import build_mini
from orchestrator.settings import current

ROOT = Path(__file__).resolve().parents[2]
BUILDER = ROOT / "images/cloud/build-test-image"

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.needs_root]

SUITE = """\
name: byo-test
paging: [tdp]
accel: auto
guests:
  cloud: {{image: {image}, vcpus: 1, memory: 1GiB}}
trace: {{guest: ["exceptions:page_fault_user"]}}
workloads:
  - name: fork
    kind: fork-dirty
    params: {{pages: 1280}}
    trials: 2
    warmup: 0
timeouts: {{boot: {boot}, trial: 120s}}
"""


def orchestrate(*argv: str, cache: Path, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCH_IMAGE_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def cloud_disk() -> Path:
    """The test cloud image, built once per recipe (the build script's hash) per machine."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mmdebstrap and the guests")
    digest = hashlib.sha256(BUILDER.read_bytes()).hexdigest()[:16]
    out = current().image_cache / "test-cloud" / f"cloud-{digest}.qcow2"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(BUILDER), str(out)], check=True, timeout=1800)
    return out


def leftovers(cache: Path) -> list[Path]:
    """Overlays, seeds and firmware variables left in the cache's overlays/."""
    directory = cache / "overlays"
    return sorted(directory.iterdir()) if directory.exists() else []


def write_suite(tmp_path: Path, image: str, boot: str = "900s") -> Path:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(image=image, boot=boot))
    return suite


def test_imported_cloud_image_runs_a_suite(cloud_disk: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    done = orchestrate("image", "import", "testcloud", str(cloud_disk), cache=cache)
    assert done.returncode == 0, done.stderr
    meta = json.loads((cache / "cloud/testcloud/image.json").read_text())
    assert meta["firmware"] == "uefi"
    assert meta["sha256"] == hashlib.sha256(cloud_disk.read_bytes()).hexdigest()
    listed = orchestrate("image", "list", cache=cache)
    assert "testcloud" in listed.stdout and "cloud (uefi)" in listed.stdout
    disk = cache / "cloud/testcloud/disk.qcow2"
    stamp = disk.stat().st_mtime_ns
    done = orchestrate("run", str(write_suite(tmp_path, "testcloud")), "--results-dir",
                       str(tmp_path / "r"), cache=cache)
    assert done.returncode == 0, done.stderr
    run = results.load(tmp_path / "r" / "latest")
    assert set(run.trials["outcome"]) == {"ok"} and run.trials["trial"].nunique() == 2
    assert set(run.trials["accel"]) == {"tcg"}
    facts = run.manifest["guests"]["tcg/cloud"]
    assert facts["workloads_dir"].startswith("/var/tmp/orch-") and facts["cloud_init"]
    assert facts["runner"] == "orch-runner"  # the shipped helper carries the trials
    # the host key SSH pinned is the one made for this guest, handed in by the seed
    assert facts["image"]["host_key_pub"].startswith("ssh-ed25519 ")
    assert facts["image"]["firmware"] == "uefi"
    print(f"boot to SSH {facts['boot_to_ssh_s']} s, cloud-init wait "
          f"{facts['cloud_init_wait_s']} s, shipping {facts['ship_s']} s")
    # the test image has no perf: its events are unavailable (NaN), never 0
    guest = run.events[run.events["event"] == "exceptions:page_fault_user"]
    assert len(guest) == 2 and not guest["available"].any()
    assert all(math.isnan(v) for v in guest["count"])
    assert disk.stat().st_mtime_ns == stamp  # the guest wrote only to its overlay
    assert not leftovers(cache)  # overlay, seed, OVMF vars: all gone
    assert orchestrate("image", "rm", "testcloud", cache=cache).returncode == 0
    assert not (cache / "cloud/testcloud").exists()


def test_not_a_disk_image_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.img"
    text.write_text("not a disk\n" * 100)
    done = orchestrate("image", "import", "notes", str(text), cache=tmp_path / "cache")
    assert done.returncode == 2
    assert "not a bootable disk image" in done.stderr and len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr
    done = orchestrate("image", "import", "mini", str(text), cache=tmp_path / "cache")
    assert done.returncode == 2 and "cannot name an imported image" in done.stderr
    done = orchestrate("validate", str(write_suite(tmp_path, "../nowhere.qcow2")),
                       cache=tmp_path / "cache")
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_disk_that_never_boots_times_out_with_its_console(tmp_path: Path) -> None:
    """A partition table and no boot loader: SeaBIOS finds nothing to boot, SSH never comes."""
    disk = tmp_path / "blank.raw"
    with disk.open("wb") as out:
        out.truncate(4 << 20)
    subprocess.run(["sfdisk", "-q", str(disk)], input="label: dos\nstart=2048, type=83\n",
                   text=True, check=True, timeout=60)
    done = orchestrate("run", str(write_suite(tmp_path, str(disk), boot="20s")),
                       "--results-dir", str(tmp_path / "r"), cache=tmp_path / "cache")
    assert done.returncode != 0
    assert "wrote nothing on its serial console" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not leftovers(tmp_path / "cache")


def efi_disk(tmp: Path, kernel: Path, initrd: Path, out: Path) -> None:
    """A UEFI disk (GPT, ESP with a standalone GRUB) booting kernel + initrd: no cloud-init."""
    cfg = tmp / "grub.cfg"
    cfg.write_text("set timeout=0\ninsmod part_gpt\ninsmod fat\n"
                   "search --no-floppy --set=root --file /vmlinuz\n"
                   "linux /vmlinuz console=ttyS0 panic=-1\ninitrd /initrd.img\nboot\n")
    loader = tmp / "BOOTX64.EFI"
    subprocess.run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(loader),
                    f"boot/grub/grub.cfg={cfg}"], check=True, timeout=300)
    esp_disk(tmp, {"EFI/BOOT/BOOTX64.EFI": loader, "vmlinuz": kernel, "initrd.img": initrd},
             out, esp_mib=62)


def esp_disk(tmp: Path, files: dict[str, Path], out: Path, *, esp_mib: int) -> None:
    """A GPT disk whose one partition is an EFI system partition holding these files (made
    with mkfs.vfat and mtools, no mounts), 2 MiB larger than the partition."""
    esp = tmp / "esp.img"
    subprocess.run(["mkfs.vfat", "-n", "ESP", "-C", str(esp), str(esp_mib * 1024)], check=True,
                   timeout=60, capture_output=True)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"], check=True, env=env,
                   timeout=60)
    for name, source in files.items():
        subprocess.run(["mcopy", "-i", str(esp), str(source), f"::/{name}"], check=True,
                       env=env, timeout=120)
    with out.open("wb") as disk:
        disk.truncate((esp_mib + 2) << 20)
    subprocess.run(["sfdisk", "-q", str(out)], text=True, check=True, timeout=60,
                   input=f"label: gpt\nstart=1MiB, size={esp_mib}MiB, "
                         "type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n")
    subprocess.run(["dd", f"if={esp}", f"of={out}", "bs=1M", "seek=1", "conv=notrunc",
                    "status=none"], check=True, timeout=120)

def test_image_without_cloud_init_is_said_so(tmp_path: Path) -> None:
    """The mini image's kernel and initramfs behind GRUB on a UEFI disk: it boots and its
    dropbear answers, with its own host key, not the one the seed offered."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    mini = build_mini()
    disk = tmp_path / "nocloud.raw"
    efi_disk(tmp_path, mini.kernel, mini.initrd, disk)
    cache = tmp_path / "cache"
    done = orchestrate("image", "import", "nocloud", str(disk), cache=cache)
    assert done.returncode == 0, done.stderr
    done = orchestrate("run", str(write_suite(tmp_path, "nocloud", boot="300s")),
                       "--results-dir", str(tmp_path / "r"), cache=cache)
    assert done.returncode != 0
    assert "the image has no cloud-init" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not leftovers(cache)


def test_an_image_for_another_architecture_is_refused(tmp_path: Path) -> None:
    """An ESP whose fallback loader is arm64's (BOOTAA64.EFI): refused at import."""
    loader = tmp_path / "BOOTAA64.EFI"
    loader.write_bytes(b"MZ" + bytes(510))
    disk = tmp_path / "arm64.img"
    esp_disk(tmp_path, {"EFI/BOOT/BOOTAA64.EFI": loader}, disk, esp_mib=30)
    done = orchestrate("image", "import", "arm", str(disk), cache=tmp_path / "cache")
    assert done.returncode == 2 and "for aarch64, not x86_64" in done.stderr, done.stderr
    assert not (tmp_path / "cache/cloud/arm").exists()
