"""Shared helpers of the Windows tests: the example inventory and extra vars for offline runs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from ansible_run import ROOT, ansible_playbook

__all__ = [
    "ENROL_KEY",
    "EXAMPLE",
    "HOSTS",
    "ROOT",
    "SHA",
    "WHEELHOUSE",
    "build_wheelhouse",
    "offline_vars",
    "run",
]

EXAMPLE = ROOT / "inventories/example"
WHEELHOUSE = ROOT / ".cache/wheelhouse/windows"
ENROL_KEY = "test-enrol-key-0123456789abcdef-0123456789"
# The example desktops the render tests render the role for (tests/windows/conftest.py).
HOSTS = ("chem-lab-01.ad.example.edu", "phys-lab-03.ad.example.edu")
SHA = "0" * 63 + "1"


def build_wheelhouse() -> Path:
    """The real Windows wheelhouse (scripts/wheelhouse.sh windows; kept when up to date)."""
    subprocess.run(["bash", str(ROOT / "scripts/wheelhouse.sh"), "windows"], cwd=ROOT, check=True)
    return WHEELHOUSE


def offline_vars(**over: Any) -> dict[str, Any]:
    """What a site adds to the example inventory (vault values, checksums), for offline runs."""
    base: dict[str, Any] = {
        "vault_windows_deploy_password": "deploy-password-not-used",
        "vault_windows_desktop_service_password": "service-password-not-used",
        "grid_coordinator_enrol_key": ENROL_KEY,
        "windows_desktop_virtualbox_checksum": SHA,
        "windows_desktop_python_checksum": SHA,
        "windows_desktop_wheelhouse": str(WHEELHOUSE),
    }
    base.update(over)
    return base


def run(
    playbook: Path, tmp_path: Path, extra: dict[str, Any], *args: str
) -> subprocess.CompletedProcess[str]:
    return ansible_playbook(
        playbook, [EXAMPLE], extra=extra, extra_file=tmp_path / "extra.json", args=args
    )
