"""The research VM's seed check (ExecStartPre of condor), run for real as rendered.

kind: real (the rendered /bin/sh script runs here, against seed files in a temporary tree).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from condor.playbook import Run

pytestmark = pytest.mark.slow


def run_hook(  # type: ignore[no-untyped-def]
    render: Run, tmp_path: Path, vm_name: str | None, token: str | None, iface: str = "lo"
):
    seed = tmp_path / "seed"
    (seed / "condor").mkdir(parents=True)
    if vm_name is not None:
        (seed / "vm_name").write_text(vm_name + "\n")
    if token is not None:
        (seed / "condor/token").write_text(token)
    env = {
        **os.environ,
        "GRID_CONDOR_SEED_VM_NAME": str(seed / "vm_name"),
        "GRID_CONDOR_SEED_TOKEN": str(seed / "condor/token"),
        "GRID_CONDOR_TOKEN_DIR": str(tmp_path / "tokens.d"),
        # loopback always has an IPv4 address; a missing interface never gets one.
        "GRID_CONDOR_INTERFACE": iface,
        "GRID_CONDOR_INTERFACE_WAIT": "2",
    }
    hook = render.tree("condor-test-vm") / "usr/local/libexec/grid/condor-seed"
    return subprocess.run(
        ["/bin/sh", str(hook)], env=env, capture_output=True, text=True, check=False
    )


def test_matching_seed_installs_its_token_for_root_only(lab_render: Run, tmp_path: Path) -> None:
    proc = run_hook(lab_render, tmp_path, "its-u11-boinc-20120415", "eyJhbGciOi.token\n")
    assert proc.returncode == 0, proc.stderr
    assert "lo is up; joining the pool" in proc.stdout
    token = tmp_path / "tokens.d/research-vm"
    assert token.read_text() == "eyJhbGciOi.token\n"
    assert token.stat().st_mode & 0o777 == 0o600
    assert token.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in token.parent.iterdir()] == ["research-vm"]


@pytest.mark.parametrize(
    ("vm_name", "token", "expect"),
    [
        ("lab-el9-bulk-20261101", "t", "this image is built for 'its-u11-boinc-20120415'"),
        (None, "t", "the seed has no vm_name"),
        ("its-u11-boinc-20120415", None, "the seed has no HTCondor token"),
        ("its-u11-boinc-20120415", "", "the seed has no HTCondor token"),
    ],
    ids=["other-type", "no-vm-name", "no-token", "empty-token"],
)
def test_bad_seed_keeps_condor_from_starting(
    lab_render: Run, tmp_path: Path, vm_name: str | None, token: str | None, expect: str
) -> None:
    proc = run_hook(lab_render, tmp_path, vm_name, token)
    assert proc.returncode == 1
    assert expect in proc.stderr
    assert not (tmp_path / "tokens.d/research-vm").exists()


def test_no_tunnel_address_keeps_condor_from_starting(lab_render: Run, tmp_path: Path) -> None:
    proc = run_hook(lab_render, tmp_path, "its-u11-boinc-20120415", "t", iface="grid-none0")
    assert proc.returncode == 1
    assert "grid-none0 has no IPv4 address after 2 s" in proc.stderr
    # The token is installed before the wait; condor never starts, and the VM powers off.
    assert "matches and" not in proc.stdout
