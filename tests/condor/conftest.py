"""Renders shared by the condor tests: each playbook run takes seconds, so it runs once."""

from __future__ import annotations

from pathlib import Path

import pytest
from condor.playbook import Run, fresh_key, run

# Cross-pool settings rendered in the lab run, so the tests see FLOCK_TO, FLOCK_FROM and
# Condor-C through the parser (the lab itself flocks nowhere).
LAB_EXTRA: dict[str, object] = {
    "condor_submit_flock_to": ["cm.ligo.example.org", "cm.osg.example.org:9618"],
    "htcondor_flock_from": ["submit.ligo.example.org"],
    "condor_submit_condor_c_remotes": [
        {
            "name": "ligo",
            "schedd": "schedd.ligo.example.org",
            "collector": "cm.ligo.example.org:9618",
        }
    ],
    # visudo is not on this machine; the sudo rule is validated and checked in molecule.
    "condor_submit_vm_token_issuer_user": "",
}


@pytest.fixture(scope="session")
def lab_key() -> str:
    return fresh_key()


@pytest.fixture(scope="session")
def lab_render(tmp_path_factory: pytest.TempPathFactory, lab_key: str) -> Run:
    root = tmp_path_factory.mktemp("lab") / "root"
    result = run("render.yml", root, {**LAB_EXTRA, "htcondor_pool_signing_key": lab_key})
    assert result.rc == 0, result.output
    return result


@pytest.fixture(scope="session")
def example_render(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The example campus (12,000 desktops), installation off, rendered the same way."""
    root = tmp_path_factory.mktemp("example") / "root"
    result = run(
        "render.yml",
        root,
        {
            "htcondor_install": False,
            # What a site puts in group_vars/all/vault.yml (docs/secrets.md).
            "vault_htcondor_pool_signing_key": fresh_key(),
            "vault_htcondor_vm_signing_key": fresh_key(),
            "condor_submit_vm_token_issuer_user": "",
        },
        inventory="example",
        overlay="local-example.yml",
    )
    assert result.rc == 0, result.output
    return result


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return Path(__file__).resolve().parent / "fixtures"
