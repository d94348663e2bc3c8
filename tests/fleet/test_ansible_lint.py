"""The playbooks and roles pass ansible-lint and Ansible's own syntax check; collect.yml leaves
private keys on the runners."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.fleet.conftest import ROOT

ANSIBLE = ROOT / "ansible"
PLAYBOOKS = ["provision.yml", "nightly.yml", "collect.yml", "fleet-run.yml", "publish.yml"]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup installs it)")
    return path


@pytest.mark.slow  # lints every playbook and role: seconds
def test_ansible_lint_passes(tmp_path: Path) -> None:
    lint = _tool("ansible-lint")
    done = subprocess.run([lint, "--nocolor", "ansible/"], capture_output=True, text=True,
                          timeout=600, cwd=ROOT,
                          env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
                               "ANSIBLE_LOCAL_TEMP": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failure(s), 0 warning(s)" in done.stdout + done.stderr


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook: str, tmp_path: Path) -> None:
    ansible_playbook = _tool("ansible-playbook")
    done = subprocess.run(
        [ansible_playbook, "-i", str(ANSIBLE / "inventory.example.yml"), "--syntax-check",
         str(ANSIBLE / playbook)], capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
             "ANSIBLE_LOCAL_TEMP": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_example_inventory_has_the_runners_group(tmp_path: Path) -> None:
    inventory = _tool("ansible-inventory")
    done = subprocess.run([inventory, "-i", str(ANSIBLE / "inventory.example.yml"), "--graph",
                           "runners"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "lab1.example.org" in done.stdout and "lab2.example.org" in done.stdout


# ---- collect.yml never ships a private key off a runner --------------------------------------


def _fake_runs(results_dir: Path) -> list[str]:
    """Finished runs as a guest run leaves them: its SSH client key pair in ssh/."""
    names = []
    for name in ("fleet-a-20250101T000000", "fleet-b-20250102T000000"):
        run = results_dir / name
        (run / "ssh").mkdir(parents=True)
        (run / "manifest.json").write_text(json.dumps({"status": "done", "run_id": name,
                                                       "suite_name": "fleet"}))
        (run / "ssh" / "ssh_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n")
        (run / "ssh" / "ssh_key").chmod(0o600)
        (run / "ssh" / "ssh_key.pub").write_text("ssh-ed25519 AAAA orchestrator-run\n")
        names.append(name)
    return names


def _collected(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_collect_packs_runs_without_their_private_keys(tmp_path: Path) -> None:
    play = YAML(typ="safe").load((ANSIBLE / "collect.yml").read_text())[0]
    excludes = play["vars"]["collect_exclude"]
    pack = next(t for t in play["tasks"][-1]["block"] if t["name"].startswith("Pack"))
    assert "collect_exclude" in pack["ansible.builtin.command"]["argv"]
    runs = _fake_runs(tmp_path / "results")
    archive = tmp_path / "runs.tar.gz"
    # the argv the task builds: tar -C DIR -czf FILE --exclude=PATTERN... RUN...
    subprocess.run(["tar", "-C", str(tmp_path / "results"), "-czf", str(archive),
                    *(f"--exclude={p}" for p in excludes), *runs], check=True, timeout=60)
    listing = set(subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True,
                                 check=True, timeout=60).stdout.split())
    for run in runs:
        assert f"{run}/manifest.json" in listing and f"{run}/ssh/ssh_key.pub" in listing
        assert f"{run}/ssh/ssh_key" not in listing


@pytest.mark.slow
def test_the_collect_playbook_leaves_private_keys_on_the_runner(tmp_path: Path) -> None:
    """collect.yml for real, against this machine as a local "runner" (no SSH, no become)."""
    playbook = _tool("ansible-playbook")
    runs = _fake_runs(tmp_path / "runner-results")
    running = tmp_path / "runner-results" / "fleet-c-20250103T000000"  # not finished: stays
    running.mkdir()
    (running / "manifest.json").write_text(json.dumps({"status": "running", "suite_name": "fleet",
                                                       "run_id": running.name}))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"children": {"runners": {"hosts": {"here": {
        "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
        # the runner lists its runs with this checkout's orchestrator
        "orchestrator_python": sys.executable, "orchestrator_install_dir": str(ROOT),
        "orchestrator_results_dir": str(tmp_path / "runner-results"),
        "collect_results_root": str(tmp_path / "fleet")}}}}}}))
    done = subprocess.run(
        [playbook, "-i", str(inventory), str(ANSIBLE / "collect.yml"),
         "-e", "ansible_become=false"], capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
             "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local"),
             "ANSIBLE_REMOTE_TEMP": str(tmp_path / "remote"), "ANSIBLE_NOCOLOR": "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr
    assert "collected 2 run(s)" in done.stdout
    files = _collected(tmp_path / "fleet" / "here")
    assert {f"{run}/ssh/ssh_key.pub" for run in runs} | {f"{run}/manifest.json"
                                                         for run in runs} <= files
    assert not [f for f in files if f.endswith("/ssh_key")], files
    assert not [f for f in files if f.startswith(running.name)], files
