"""Real libvirtd and a real `mini` image for guest tests (both made here if missing)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.images import Image, build_mini
from orchestrator.libvirt_domain import DEFAULT_URI, DomainSpec, pick_free_port

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
def no_leftover_domains(libvirtd: str) -> Iterator[None]:
    before = set(project_domains(libvirtd))
    yield
    # benchmarks run by hand may boot their own guests meanwhile: only tests' guests count
    left = {n for n in project_domains(libvirtd) if not n.startswith("orch-bench-")}
    assert left <= before, f"a test left a guest behind: {sorted(left - before)}"


def spec_for(image: Image, tmp_path: Path, *, cmdline: str = "console=ttyS0 panic=-1 quiet",
             accel: str = "tcg") -> DomainSpec:
    name = f"orch-test-{uuid.uuid4().hex[:6]}"
    return DomainSpec(name=name, run_id="test-run", accel=accel, vcpus=1, memory_mib=768,
                      hugepages="none", cpu_pins=None, kernel=image.kernel, initrd=image.initrd,
                      cmdline=cmdline, ssh_port=pick_free_port(),
                      console_log=tmp_path / f"{name}.log")
