"""playbooks/register_desktops.yml on a copy of the lab inventory, with real ansible-playbook."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible_run import ROOT, ansible_playbook

pytestmark = pytest.mark.slow


def run(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return ansible_playbook(
        ROOT / "playbooks/register_desktops.yml", [inventory], args=extra, timeout=300
    )


def registry(inventory: Path) -> list[dict[str, object]]:
    data = yaml.safe_load((inventory / "group_vars/all/desktop_registry.yml").read_text())
    return list(data["grid_desktop_registry"])


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    inv = tmp_path / "lab"
    shutil.copytree(ROOT / "inventories/lab", inv)
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    desktops = hosts["all"]["children"]["lab_containers"]["children"]["desktops"]
    # lab-desktop-1 leaves, two new desktops join.
    desktops["children"]["linux_desktops"]["hosts"] = {
        "lab-desktop-2": None,
        "lab-desktop-4": None,
        "lab-desktop-3": None,
    }
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    return inv


def test_new_desktops_get_free_indices_and_old_ones_keep_theirs(inventory: Path) -> None:
    before = (inventory / "group_vars/all/desktop_registry.yml").read_text()
    check = run(inventory, "--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "lab-desktop-3" in check.stdout  # the diff shows the change
    assert (inventory / "group_vars/all/desktop_registry.yml").read_text() == before

    first = run(inventory)
    assert first.returncode == 0, first.stdout + first.stderr
    assert registry(inventory) == [
        {"name": "lab-desktop-3", "index": 0},
        {"name": "lab-desktop-2", "index": 1},
        {"name": "lab-desktop-4", "index": 2},
    ]
    second = run(inventory)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "changed=0" in second.stdout


def test_an_invalid_model_leaves_the_registry_alone(inventory: Path) -> None:
    before = (inventory / "group_vars/all/desktop_registry.yml").read_text()
    result = run(inventory, "-e", "grid_research_network=10.64.0.0/29")
    assert result.returncode != 0
    assert "grid_vpn_instances" in result.stdout or "grid_research_network" in result.stdout
    assert (inventory / "group_vars/all/desktop_registry.yml").read_text() == before
