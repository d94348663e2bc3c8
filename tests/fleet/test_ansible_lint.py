"""The playbooks and roles pass ansible-lint and Ansible's own syntax check."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fleet.conftest import ROOT

ANSIBLE = ROOT / "ansible"
PLAYBOOKS = ["provision.yml", "nightly.yml", "collect.yml", "fleet-run.yml"]


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup installs it)")
    return path


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
