"""The pool signing key and the research VMs' key (RESEARCH_VM) travel through ansible-vault
and never reach the output.

kind: real (ansible-vault encrypts a vars file; ansible-playbook at -vvv decrypts it and the
roles install the key; the output is searched for the key).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from condor.playbook import FIXTURES, ROOT, fresh_key, run

pytestmark = pytest.mark.slow

ANSIBLE_VAULT = str(Path(sys.executable).parent / "ansible-vault")


def test_vaulted_key_is_installed_and_never_logged(tmp_path: Path) -> None:
    key = fresh_key()
    vm_key = fresh_key()
    password = tmp_path / "vault-pass"
    password.write_text(fresh_key() + "\n")
    vars_file = tmp_path / "vault.yml"
    vars_file.write_text(f"htcondor_pool_signing_key: {key}\nhtcondor_vm_signing_key: {vm_key}\n")
    subprocess.run(
        [ANSIBLE_VAULT, "encrypt", "--vault-password-file", str(password), str(vars_file)],
        check=True,
        capture_output=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
    )
    assert key not in vars_file.read_text()
    assert vm_key not in vars_file.read_text()
    assert vars_file.read_text().startswith("$ANSIBLE_VAULT;")

    result = run(
        "render.yml",
        tmp_path / "root",
        {"condor_submit_vm_token_issuer_user": ""},
        args=["-e", f"@{vars_file}", "--vault-password-file", str(password), "-vvv"],
    )
    assert result.rc == 0, result.output
    for host in ("lab-cm", "lab-submit"):
        assert (result.tree(host) / "etc/condor/passwords.d/POOL").read_text() == key
    assert key not in result.output
    # The research VMs' key: on the central manager only (its collector verifies their tokens).
    research_vm = result.tree("lab-cm") / "etc/condor/passwords.d/RESEARCH_VM"
    assert research_vm.read_text() == vm_key
    assert research_vm.stat().st_mode & 0o777 == 0o600
    assert not (result.tree("lab-submit") / "etc/condor/passwords.d/RESEARCH_VM").exists()
    assert vm_key not in result.output
    assert FIXTURES.is_dir()
