"""One timeline from host and guest trace lines: parsing both formats, the TSC conversion KVM's
debugfs describes, and the guest wrapper, run by a real shell against a tracefs-shaped tree
(this machine's kernel cannot enable ftrace; tests/lab runs it against real tracefs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from orchestrator.tracing import timeline
from orchestrator.tracing.timeline import TscMap

# the guest's tracefs `trace` on the TSC clock (flags column, integer stamps)
GUEST_TRACE = """\
# tracer: nop
#
# entries-in-buffer/entries-written: 2/2   #P:1
#
#                                _-----=> irqs-off/BH-disabled
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
      fork_dirty-201     [000] d....  1000500: page_fault_user: address=0x7f0000001000 ip=0x401136 error_code=0x6
      fork_dirty-201     [000] d....  1000900: page_fault_user: address=0x7f0000002000 ip=0x401136 error_code=0x6
"""
# trace-cmd 3.1.6's report of a host capture on the TSC clock, as recorded in the nested lab
# (no flags column, no space before the stamp); stamps shortened
HOST_REPORT = """\
cpus=2
 qemu-system-x86-225   [001]400: kvm_exit:             reason EXIT_MSR rip 0xffffffffb1a7e914 info 1 0
 qemu-system-x86-225   [001]420: kvm_page_fault:       vcpu 0 rip 0x401136 address 0x00007f0000001000 error_code 0x6
 qemu-system-x86-225   [001]850: kvm_page_fault:       vcpu 0 rip 0x401136 address 0x00007f0000002000 error_code 0x6
"""
HOST_EVENTS = ["kvm:kvm_exit", "kvm:kvm_page_fault"]
GUEST_EVENTS = ["exceptions:page_fault_user"]


def test_both_formats_parse_with_full_event_names() -> None:
    guest = list(timeline.parse_events(GUEST_TRACE, "guest", GUEST_EVENTS))
    host = list(timeline.parse_events(HOST_REPORT, "host", HOST_EVENTS))
    assert [(e.event, e.tsc, e.task, e.pid, e.cpu) for e in guest] == [
        ("exceptions:page_fault_user", 1000500, "fork_dirty", 201, 0),
        ("exceptions:page_fault_user", 1000900, "fork_dirty", 201, 0)]
    assert [(e.event, e.tsc, e.task) for e in host] == [
        ("kvm:kvm_exit", 400, "qemu-system-x86"), ("kvm:kvm_page_fault", 420, "qemu-system-x86"),
        ("kvm:kvm_page_fault", 850, "qemu-system-x86")]
    assert host[1].detail == "vcpu 0 rip 0x401136 address 0x00007f0000001000 error_code 0x6"


def test_stamps_of_a_nanosecond_clock_are_not_taken_for_tsc() -> None:
    local = "  fork_dirty-201 [000] d.... 12.000500: page_fault_user: address=0x1\n"
    assert list(timeline.parse_events(local, "guest", GUEST_EVENTS)) == []


def test_guest_stamps_move_onto_the_host_tsc() -> None:
    frame = timeline.merge(HOST_REPORT, HOST_EVENTS, GUEST_TRACE, GUEST_EVENTS,
                           TscMap({0: 1_000_000}))
    assert list(frame["side"]) == ["host", "host", "guest", "host", "guest"]
    guest = frame[frame["side"] == "guest"]
    assert list(guest["tsc"]) == [500, 900] and list(guest["guest_tsc"]) == [1000500, 1000900]
    assert frame["guest_tsc"][frame["side"] == "host"].isna().all()


def test_tsc_conversion_wraps_and_scales_like_kvm() -> None:
    host_tsc = 5_000_000_000
    # a guest started long after the host: a negative offset, stored as a u64 by KVM
    negative = TscMap({0: -4_000_000_000})
    assert negative.to_host(host_tsc - 4_000_000_000) == host_tsc
    # guest = (host * ratio >> 48) + offset, ratio 1.5 in 16.48 fixed point
    scaled = TscMap({0: 1000}, ratio=3 << 47, frac_bits=48)
    assert scaled.to_host(host_tsc * 3 // 2 + 1000) == host_tsc
    # 64-bit values survive the table (never through float)
    frame = timeline.merge("", [], "  w-1 [000] ....  18446744073709551000: e: x\n", ["s:e"],
                           TscMap({0: 0}))
    assert int(frame["tsc"].iloc[0]) == 18446744073709551000


def test_the_offset_is_read_from_kvm_debugfs(tmp_path: Path) -> None:
    vcpu = tmp_path / "4242-11" / "vcpu0"
    vcpu.mkdir(parents=True)
    (vcpu / "tsc-offset").write_text("-123456789\n")
    assert timeline.tsc_map(4242, tmp_path) == TscMap({0: -123456789})
    (vcpu / "tsc-scaling-ratio").write_text(str(1 << 48))
    (vcpu / "tsc-scaling-ratio-frac-bits").write_text("48")
    assert timeline.tsc_map(4242, tmp_path) == TscMap({0: -123456789}, 1 << 48, 48)
    assert timeline.tsc_map(999, tmp_path) is None  # not a KVM guest's QEMU


def _tracefs(root: Path, events: list[str]) -> Path:
    root.mkdir()
    for name in ("tracing_on", "trace"):
        (root / name).write_text("")
    (root / "trace_clock").write_text("[local] global counter uptime perf mono x86-tsc\n")
    (root / "buffer_size_kb").write_text("1408 (expanded: 1408)\n")
    for event in events:
        (root / "events" / event.replace(":", "/")).mkdir(parents=True)
        (root / "events" / event.replace(":", "/") / "enable").write_text("0")
    return root


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603


def test_the_guest_traces_the_workload_and_is_put_back(tmp_path: Path) -> None:
    tracefs = _tracefs(tmp_path / "tracing", GUEST_EVENTS)
    saved = str(tmp_path / "saved")
    enable = tracefs / "events/exceptions/page_fault_user/enable"
    setup = _run(timeline.guest_setup(GUEST_EVENTS, tracefs=str(tracefs), saved=saved))
    assert setup.returncode == 0, setup.stderr
    assert (tracefs / "trace_clock").read_text().strip() == "x86-tsc"
    assert (tracefs / "buffer_size_kb").read_text().strip() == str(timeline.BUFFER_KB)
    assert enable.read_text().strip() == "1"
    assert (tracefs / "tracing_on").read_text().strip() == "0"  # not yet: the trial turns it on
    # the workload sees tracing on, and writes "its" events
    workload = ["sh", "-c", f"cat {tracefs}/tracing_on; echo '  w-7 [000] d.... 99: "
                f"page_fault_user: address=0x1' > {tracefs}/trace; echo out; exit 3"]
    done = _run(timeline.guest_wrap(workload, tracefs=str(tracefs)))
    assert done.returncode == 3 and done.stdout.split() == ["1", "out"]
    assert (tracefs / "tracing_on").read_text().strip() == "0"
    collected = _run(timeline.guest_collect(GUEST_EVENTS, tracefs=str(tracefs), saved=saved))
    assert [e.tsc for e in timeline.parse_events(collected.stdout, "guest", GUEST_EVENTS)] \
        == [99]
    assert enable.read_text().strip() == "0"
    assert (tracefs / "trace_clock").read_text().strip() == "local"  # as they were
    assert (tracefs / "buffer_size_kb").read_text().strip() == "1408"
    assert (tracefs / "trace").read_text() == ""


def test_a_guest_that_cannot_trace_the_events_fails_the_setup(tmp_path: Path) -> None:
    tracefs = _tracefs(tmp_path / "tracing", [])  # the event does not exist in this kernel
    setup = _run(timeline.guest_setup(GUEST_EVENTS, tracefs=str(tracefs),
                                      saved=str(tmp_path / "saved")))
    assert setup.returncode != 0 and "page_fault_user" in setup.stderr


def test_no_kvm_offset_means_no_timeline(tmp_path: Path) -> None:
    info, problem = timeline.build(tmp_path / "x.dat", HOST_EVENTS, GUEST_TRACE, GUEST_EVENTS,
                                   None)
    assert info == {} and "tsc-offset" in problem
    assert not list(tmp_path.iterdir())


def test_offsets_kvm_rewrites_mid_trial_are_followed_per_vcpu() -> None:
    """Where the host's TSC is unstable KVM rewrites a vCPU's offset each time its thread is
    scheduled in, so that the guest's TSC does not jump: guest time stops while the thread
    is off the CPU. Each guest stamp converts with the offset in force when it was taken."""
    u64 = 1 << 64
    report = (
        # vCPU 0 descheduled from host 1,000 to 5,000: its offset drops by 4,000
        f" qemu-system-x86-9   [000]5000: kvm_write_tsc_offset: vcpu=0 prev={u64 - 100} "
        f"next={u64 - 4100}\n"
        f" qemu-system-x86-9   [001]6000: kvm_write_tsc_offset: vcpu=1 prev=0 next=7\n")
    guest = ("  w-1 [000] d....  850: e: before\n"    # host 950
             "  w-1 [000] d....  900: e: after\n"     # host 5,000 (resumed where it stopped)
             "  w-1 [000] d....  1400: e: later\n"    # host 5,500
             "  w-1 [001] d....  6007: e: other\n")   # vCPU 1's own offset: host 6,000
    frame = timeline.merge(report, [timeline.WRITE_TSC_OFFSET], guest, ["s:e"],
                           TscMap({0: -100, 1: 0}))
    stamps = frame[frame["side"] == "guest"].set_index("detail")["tsc"].to_dict()
    assert stamps == {"before": 950, "after": 5000, "later": 5500, "other": 6000}
