"""The Ansible playbooks against a real runner: sshd in a private network namespace.

The "runner" is this machine seen through a namespace-local sshd on 127.0.0.1:2222 (same
filesystem, own loopback): provision.yml pushes the checkout into a temporary install dir and
makes its own venv there (packages, KVM, libvirtd and the image build are switched off; pip
installs the orchestrator itself offline, its dependencies come from this checkout's .venv
through a .pth file), nightly.yml installs the wrapper and the cron entry, one nightly run of
suites/native-smoke.yaml runs on the runner, and collect.yml pulls it into a controller
results root that `orchestrate results` lists with its host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.store import reader, rundir
from tests.fleet.conftest import QUICK_SUITE, ROOT, write_suite

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.needs_root]

ANSIBLE = ROOT / "ansible"
PORT = 2222
HOST = "runner-ns"
# pip's build backend (setuptools) without the internet: a local wheel directory

SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
"""


@dataclass(frozen=True)
class Runner:
    netns: str
    key: Path


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None and not Path(t).exists()]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (scripts/setup installs them)")
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, sshd)")


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    _need("ip", "nc", "ssh", "ssh-keygen", "/usr/sbin/sshd", "ansible-playbook")
    ssh_dir = tmp_path / "ssh"
    ssh_dir.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(ssh_dir / name)], check=True, timeout=30)
    shutil.copy(ssh_dir / "client_key.pub", ssh_dir / "authorized_keys")
    (ssh_dir / "sshd_config").write_text(SSHD_CONFIG.format(port=PORT, dir=ssh_dir))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    netns = f"orchfleet{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True, timeout=30)
    sshd: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True, timeout=30)
        with (ssh_dir / "sshd.log").open("wb") as log:
            sshd = subprocess.Popen(
                ["ip", "netns", "exec", netns, "/usr/sbin/sshd", "-D", "-e",
                 "-f", str(ssh_dir / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
        _wait_listening(netns, sshd, ssh_dir / "sshd.log")
        yield Runner(netns, ssh_dir / "client_key")
    finally:
        if sshd is not None:
            sshd.terminate()
            try:
                sshd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sshd.kill()
                sshd.wait()
        _kill_namespace_processes(netns)  # sessions kept open by ssh's ControlPersist
        subprocess.run(["ip", "netns", "del", netns], check=False, timeout=30)


def _kill_namespace_processes(netns: str) -> None:
    for _ in range(50):
        listed = subprocess.run(["ip", "netns", "pids", netns], capture_output=True,
                                text=True, timeout=30)
        pids = [int(p) for p in listed.stdout.split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def _wait_listening(netns: str, sshd: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(100):
        if sshd.poll() is not None:
            raise AssertionError(f"sshd exited: {log.read_text()}")
        probe = subprocess.run(["ip", "netns", "exec", netns, "nc", "-z", "127.0.0.1",
                                str(PORT)], capture_output=True, timeout=10)
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"sshd never listened: {log.read_text()}")


@pytest.fixture
def cron_file() -> Iterator[Path]:
    """The cron entry the nightly role installs; removed on every path."""
    path = Path(f"/etc/cron.d/orchestrator-nightly-test{os.getpid()}")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _inventory(tmp_path: Path, runner: Runner, cron: Path) -> Path:
    target = tmp_path / "runner"
    site = sysconfig.get_paths()["purelib"]  # this venv's: the runner's venv borrows its deps
    host_vars = {
        "ansible_host": "127.0.0.1", "ansible_port": PORT, "ansible_user": "root",
        "ansible_ssh_private_key_file": str(runner.key),
        "ansible_ssh_common_args": (
            f"-o ProxyCommand='ip netns exec {runner.netns} nc 127.0.0.1 {PORT}' "
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes"),
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    group_vars = {
        "orchestrator_src": str(ROOT),
        "orchestrator_install_dir": str(target / "opt" / "orchestrator"),
        "orchestrator_results_dir": str(target / "results"),
        "orchestrator_log_dir": str(target / "log"),
        "orchestrator_run_lock": str(target / "run.lock"),
        "orchestrator_nightly_lock": str(target / "nightly.lock"),
        "provision_packages": False, "provision_kvm": False, "provision_libvirt": False,
        "provision_images": False, "provision_venv": True, "provision_workloads": True,
        # the runner's namespace has no route out: pip builds with the setuptools reached
        # through the extra site path instead of fetching a build backend
        "provision_pip_args": "--no-deps --no-index --no-build-isolation",
        "provision_venv_site_paths": [site],
        "nightly_suite": "suites/native-smoke.yaml", "nightly_keep": 3,
        "nightly_deadline": "15m", "nightly_hour": "3", "nightly_minute": "17",
        "nightly_cron_file": cron.name,
        "nightly_wrapper": str(target / "bin" / "orchestrator-nightly"),
        "collect_results_root": str(tmp_path / "controller" / "fleet"),
    }
    inventory = {"all": {"children": {"runners": {"hosts": {HOST: host_vars},
                                                  "vars": group_vars}}}}
    path = tmp_path / "inventory.yml"
    path.write_text(json.dumps(inventory))  # JSON is YAML
    return path


def _ansible(tmp_path: Path, *argv: str, timeout: float = 900) -> str:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp"),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stdout[-6000:]}\n{done.stderr}"
    return done.stdout


def _playbook(tmp_path: Path, inventory: Path, name: str) -> str:
    return _ansible(tmp_path, "ansible-playbook", "-i", str(inventory), str(ANSIBLE / name))


def test_provision_nightly_collect_on_a_runner_in_a_namespace(
        tmp_path: Path, runner: Runner, cron_file: Path) -> None:
    inventory = _inventory(tmp_path, runner, cron_file)
    install = tmp_path / "runner" / "opt" / "orchestrator"

    _playbook(tmp_path, inventory, "provision.yml")
    assert (install / "orchestrator" / "fleet" / "nightly.py").is_file()
    assert (install / "guest-workloads" / "bin" / "fork-dirty").is_file()
    assert not (install / "results").exists()  # local state is never pushed
    assert (install / ".venv" / "pyvenv.cfg").is_file()
    where = subprocess.run([str(install / ".venv" / "bin" / "python"), "-c",
                            "import orchestrator; print(orchestrator.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd="/", check=True)
    assert where.stdout.strip() == str(install / "orchestrator" / "__init__.py")

    _playbook(tmp_path, inventory, "nightly.yml")
    wrapper = tmp_path / "runner" / "bin" / "orchestrator-nightly"
    entry = cron_file.read_text()
    assert f"17 3 * * * root {wrapper} >/dev/null 2>&1" in entry
    assert "suites/native-smoke.yaml" in wrapper.read_text()

    # cron's job, started on the runner (through its sshd) the way cron would
    _ansible(tmp_path, "ansible", "-i", str(inventory), "runners", "-m", "command",
             "-a", str(wrapper))
    log = (tmp_path / "runner" / "log" / "nightly.log").read_text()
    assert "nightly exits 0 (ok)" in log, log[-3000:]
    [made] = reader.list_runs(tmp_path / "runner" / "results")

    out = _playbook(tmp_path, inventory, "collect.yml")
    assert "collected 1 run(s)" in out
    fleet = tmp_path / "controller" / "fleet"
    collected = fleet / HOST / made["run_id"]
    assert rundir.read_manifest(collected)["status"] == "done"
    assert (collected / rundir.TRIALS).is_file()
    out = _playbook(tmp_path, inventory, "collect.yml")  # nothing new: nothing fetched
    assert "collected 1 run(s)" not in out and "ok=" in out

    # an on-demand run of another suite on the whole fleet, collected at once
    quick = write_suite(tmp_path, QUICK_SUITE)
    out = _ansible(tmp_path, "ansible-playbook", "-i", str(inventory),
                   str(ANSIBLE / "fleet-run.yml"), "-e", f"suite={quick}")
    assert "exit 0 (ok)" in out and "collected 1 run(s)" in out
    [quick_run] = [r for r in reader.list_runs(fleet) if r["suite_name"] == "fleet-quick"]
    assert quick_run["collected_from"] == HOST and quick_run["status"] == "done"

    listing = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "results", "--results-dir", str(fleet)],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert listing.returncode == 0, listing.stderr
    [row] = [line for line in listing.stdout.splitlines() if made["run_id"] in line]
    assert row.split()[:2] == [f"{HOST}/{made['run_id']}", HOST]
    assert " done " in row
