"""Host stability checks read what pyperf's `system tune` checks, and warn about each noisy one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrator.host import host_prep, stability


def fake_host(root: Path, **values: str) -> Path:
    files = {
        "governor": "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
        "governor1": "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
        "boost": host_prep.BOOST[0], "no_turbo": host_prep.BOOST[1], "aslr": stability.ASLR,
        "thp": host_prep.THP, "defrag": stability.THP_DEFRAG, "ksm": stability.KSM,
        "nmi": stability.NMI_WATCHDOG,
    }
    for key, text in values.items():
        path = root / files[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def test_a_quiet_host_gets_no_warning(tmp_path: Path) -> None:
    root = fake_host(tmp_path, governor="performance", governor1="performance", boost="0",
                     aslr="2", thp="always [madvise] never", defrag="[madvise] never", ksm="0",
                     nmi="0")
    found = stability.settings(root)
    assert found == {"governor": "performance", "turbo": False, "aslr": "2", "thp": "madvise",
                     "thp_defrag": "madvise", "ksm": "0", "nmi_watchdog": "0"}
    assert stability.warnings({**found, "busy_processes": []}) == []


def test_each_noisy_setting_is_named_once_with_a_hint(tmp_path: Path) -> None:
    root = fake_host(tmp_path, governor="powersave", governor1="performance", no_turbo="0",
                     aslr="0", thp="[always] madvise never", ksm="1", nmi="1")
    found = stability.settings(root)
    assert found["governor"] == "performance,powersave" and found["turbo"] is True
    busy = [{"pid": 42, "name": "stress-ng", "cpu_share": 0.97}]
    lines = stability.warnings({**found, "busy_processes": busy})
    assert len(lines) == 7
    assert all("(hint: " in line and "\n" not in line for line in lines)
    joined = "\n".join(lines)
    for word in ("governor", "turbo", "ASLR is 0", "'always'", "KSM", "NMI watchdog",
                 "stress-ng (pid 42, 97% of a CPU)"):
        assert word in joined


def test_a_host_without_the_knobs_records_none_and_warns_about_nothing(tmp_path: Path) -> None:
    found = stability.settings(tmp_path)
    assert set(found.values()) == {None}
    assert stability.warnings({**found, "busy_processes": []}) == []


def test_a_process_spinning_beside_us_is_seen_as_busy() -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = stability.busy_processes(sample_s=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    mine = [p for p in busy if p["pid"] == spinner.pid]
    assert mine and mine[0]["cpu_share"] > 0.3
    assert all(p["pid"] != os.getpid() for p in busy)
