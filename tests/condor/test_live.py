"""Live: the real HTCondor daemons, installed by the roles, run a job.

kind: live. Runs only when HTCONDOR_LIVE_HOST names a disposable host (ssh target, root or
passwordless sudo; Debian 12, Ubuntu 24.04 or EL9) that reaches HTCondor's repositories.
The host becomes a one-host pool (central manager, submit node and a research VM's execute
side), so use a throwaway machine: like a research VM, it powers off when HTCondor exits.
Without the variable the test is skipped, and the skip says why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from condor.playbook import FIXTURES, ROOT

pytestmark = [pytest.mark.live, pytest.mark.slow]

LIVE_HOST = os.environ.get("HTCONDOR_LIVE_HOST", "")


@pytest.mark.skipif(
    not LIVE_HOST,
    reason="HTCONDOR_LIVE_HOST is not set: no disposable host that reaches HTCondor's "
    "repositories to install and run the real daemons on",
)
def test_roles_install_a_pool_that_runs_a_job(tmp_path: Path) -> None:
    inventory = tmp_path / "live.yml"
    inventory.write_text(
        "all:\n  children:\n    condor_live:\n      hosts:\n"
        f"        {LIVE_HOST.split('@')[-1]}:\n"
        f"          ansible_user: {LIVE_HOST.split('@')[0] if '@' in LIVE_HOST else 'root'}\n"
        "    condor_central_manager:\n      children: {condor_live: {}}\n"
        "    condor_submit:\n      children: {condor_live: {}}\n"
    )
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(ROOT / "inventories/lab"),
            "-i",
            str(inventory),
            "--limit",
            "condor_live",
            str(FIXTURES / "live.yml"),
        ],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
