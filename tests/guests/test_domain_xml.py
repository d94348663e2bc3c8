"""domain_xml is pure: checked with awkward inputs, parsed back, never string-compared."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from orchestrator.guests.libvirt_domain import METADATA_NS, QEMU_NS, domain_xml
from orchestrator.guests.spec import DomainSpec


def spec(**over: object) -> DomainSpec:
    base: dict[str, object] = dict(
        name="orch-r-g-1", run_id="20261123-run", accel="tcg", vcpus=2, memory_mib=2048,
        hugepages="none", cpu_pins=None, kernel=Path("/k dir/vmlinuz"),
        initrd=Path("/k dir/in'it\"rd.img"), cmdline="console=ttyS0 pti=on; echo <&>",
        ssh_port=40022, console_log=Path("/r/logs/console.log"))
    base.update(over)
    return DomainSpec(**base)  # type: ignore[arg-type]


def parse(s: DomainSpec) -> ET.Element:
    return ET.fromstring(domain_xml(s))  # noqa: S314 - our own output, not untrusted input


def test_awkward_paths_and_cmdline_survive_exactly() -> None:
    root = parse(spec())
    assert root.findtext("os/kernel") == "/k dir/vmlinuz"
    assert root.findtext("os/initrd") == "/k dir/in'it\"rd.img"
    assert root.findtext("os/cmdline") == "console=ttyS0 pti=on; echo <&>"


def test_tcg_vs_kvm() -> None:
    tcg, kvm = parse(spec()), parse(spec(accel="kvm"))
    assert tcg.get("type") == "qemu" and tcg.find("cpu").get("mode") == "maximum"  # type: ignore[union-attr]
    assert kvm.get("type") == "kvm" and kvm.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]


def test_never_restarts_and_has_a_watchdog() -> None:
    root = parse(spec())
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        assert root.findtext(event) == "destroy"
    assert root.find("devices/watchdog").get("action") == "poweroff"  # type: ignore[union-attr]


def test_run_metadata_memory_vcpus_console() -> None:
    root = parse(spec())
    assert root.find(f"metadata/{{{METADATA_NS}}}run").get("id") == "20261123-run"  # type: ignore[union-attr]
    assert root.findtext("memory") == "2048" and root.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    assert root.findtext("vcpu") == "2"
    assert root.find("devices/serial/log").get("file") == "/r/logs/console.log"  # type: ignore[union-attr]
    assert root.find("memoryBacking") is None and root.find("cputune") is None


def test_user_network_forwards_only_loopback() -> None:
    args = [a.get("value") for a in parse(spec()).iter(f"{{{QEMU_NS}}}arg")]
    assert "user,id=orchnet,hostfwd=tcp:127.0.0.1:40022-:22" in args
    assert not any("interface" in (a or "") for a in args)
    assert parse(spec()).find("devices/interface") is None  # never libvirt's NAT network


def test_hugepages_and_pinning() -> None:
    root = parse(spec(hugepages="1G", cpu_pins=(3, 5)))
    page = root.find("memoryBacking/hugepages/page")
    assert page is not None and (page.get("size"), page.get("unit")) == ("1", "G")
    pins = [(p.get("vcpu"), p.get("cpuset")) for p in root.iter("vcpupin")]
    assert pins == [("0", "3"), ("1", "5")]


def test_nested_lab_rows_still_boot_kvm_domains(tmp_path: Path) -> None:
    from orchestrator.guests.guest import domain_spec
    from orchestrator.guests.images import Image
    from orchestrator.suite.schema import Guest

    image = Image("mini", tmp_path, tmp_path / "k", tmp_path / "i", "ssh-ed25519 AAAA", "6.1",
                  "h")
    for label, domain_type in (("nested-tcg", "kvm"), ("kvm", "kvm"), ("tcg", "qemu")):
        spec = domain_spec("orch-x", Guest(), image, run_id="r", accel=label, logs=tmp_path)
        assert parse(spec).get("type") == domain_type


def test_dirty_ring_only_on_kvm_guests_that_ask(tmp_path: Path) -> None:
    from orchestrator.guests.guest import domain_spec
    from orchestrator.guests.images import Image
    from orchestrator.suite.schema import Guest

    ring = parse(spec(accel="kvm", dirty_ring=4096)).find("features/kvm/dirty-ring")
    assert ring is not None and (ring.get("state"), ring.get("size")) == ("on", "4096")
    assert parse(spec(accel="kvm")).find("features/kvm") is None
    image = Image("mini", tmp_path, tmp_path / "k", tmp_path / "i", "ssh-ed25519 AAAA", "6.1",
                  "h")
    for label, size in (("nested-tcg", 4096), ("kvm", 4096), ("tcg", 0)):
        made = domain_spec("orch-x", Guest(dirty_ring=4096), image, run_id="r", accel=label,
                           logs=tmp_path)
        assert made.dirty_ring == size  # TCG has no dirty ring: never claimed there


def test_a_refused_guest_is_hinted_at_where_the_problem_is() -> None:
    from orchestrator.guests.libvirt_domain import refusal_hint

    opened = refusal_hint("Unable to open file: results/x/logs/console-orch-x.log: "
                          "No such file or directory")
    assert "path must be absolute" in opened and "doctor" not in opened
    assert "doctor" in refusal_hint("unsupported configuration: Emulator not found")
