"""Real libvirtd and a real `mini` image for guest tests (both made here if missing)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.guests.images import Image, build_mini
from orchestrator.guests.libvirt_domain import DEFAULT_URI
from orchestrator.guests.spec import DomainSpec, pick_free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def libvirtd() -> str:
    subprocess.run(["bash", str(ROOT / "scripts/libvirtd-up")], check=True, timeout=120)
    return DEFAULT_URI


@pytest.fixture(scope="session")
def mini_image() -> Image:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest-workloads")], check=True, timeout=300)
    return build_mini()


def project_domains(uri: str) -> list[str]:
    done = subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True,
                          text=True, timeout=60, check=True)
    return [n for n in done.stdout.split() if n.startswith("orch-")]


@pytest.fixture()
def no_leftover_domains(libvirtd: str, tmp_path: Path) -> Iterator[None]:
    """No guest of this test survives it: its own `orch-test-*` domains and those its runs
    (under tmp_path) recorded. Other processes on a shared machine may boot guests meanwhile."""
    before = set(project_domains(libvirtd))
    yield
    ours = {n for n in project_domains(libvirtd) if n not in before
            and (n.startswith("orch-test-") or n in recorded_domains(tmp_path))}
    assert not ours, f"a test left a guest behind: {sorted(ours)}"


def recorded_domains(root: Path) -> set[str]:
    names = set()
    for manifest in root.rglob("manifest.json"):
        data = json.loads(manifest.read_text())
        names |= {g.get("domain", "") for g in data.get("guests", {}).values()}
    return names


def spec_for(image: Image, tmp_path: Path, *, cmdline: str = "console=ttyS0 panic=-1 quiet",
             accel: str = "tcg") -> DomainSpec:
    name = f"orch-test-{uuid.uuid4().hex[:6]}"
    return DomainSpec(name=name, run_id="test-run", accel=accel, vcpus=1, memory_mib=768,
                      hugepages="none", cpu_pins=None, kernel=image.kernel, initrd=image.initrd,
                      cmdline=cmdline, ssh_port=pick_free_port(),
                      console_log=tmp_path / f"{name}.log")
