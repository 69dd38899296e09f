"""Bad HTCondor inputs stop the run before any change, with a message naming the variable.

kind: real (the roles' validation through ansible-playbook). Each case must fail with its
message, write nothing under any host's tree and stop the play before a later task writes a
marker; the lab's good inputs must pass and write it (so the marker check is not vacuous).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from condor.playbook import Run, fresh_key, run

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    id: str
    expect: str
    vars: dict[str, object] = field(default_factory=dict)
    inventory: str = "lab"


CASES = [
    Case(
        "wrong-channel",
        "htcondor_channel must be one of: lts, feature",
        {"htcondor_channel": "beta"},
    ),
    Case(
        "version-not-in-channel",
        "htcondor_version: '25.3.1' does not fit htcondor_channel 'lts'",
        {"htcondor_version": "25.3.1"},
    ),
    # The example campus wires the key to vault_htcondor_pool_signing_key (docs/secrets.md) and
    # ships no vault.yml: the run stops on the vault variable, by name.
    Case(
        "missing-vault-key",
        "'vault_htcondor_pool_signing_key' is undefined",
        {},
        inventory="example",
    ),
    Case(
        "short-key",
        "htcondor_pool_signing_key is missing or shorter than 32",
        {"htcondor_pool_signing_key": "x" * 8},
    ),
    # The central manager's collector verifies research VMs' tokens (method seed) with it.
    Case(
        "missing-vm-key",
        "htcondor_vm_signing_key is empty or not 1 to 4096 printable ASCII characters on lab-cm",
        {"htcondor_install": True, "htcondor_vm_signing_key": ""},
    ),
    Case(
        "vm-key-with-a-space",
        "htcondor_vm_signing_key is empty or not 1 to 4096 printable ASCII characters on lab-cm",
        {"htcondor_install": True, "htcondor_vm_signing_key": "two words"},
    ),
    Case(
        "unroutable-without-ccb",
        "htcondor_ccb: false, but htcondor_research_network_routable is false",
        {"htcondor_ccb": False},
    ),
    Case(
        "unknown-vm-name",
        "research_vm_vm_name: 'its-u11-boinc20120415' is not a VM type in grid_vm_types",
        {"research_vm_vm_name": "its-u11-boinc20120415"},
    ),
    Case(
        "flock-to-not-a-host",
        "condor_submit_flock_to: 'cm ligo' is not a host[:port]",
        {"condor_submit_flock_to": ["cm ligo"]},
    ),
    Case(
        "http-mirror",
        "packages are never fetched over plain HTTP",
        {"htcondor_install": True, "htcondor_repo_url": "http://mirror.example.edu/htcondor"},
    ),
]


def run_case(tmp_path: Path, case: Case) -> tuple[Run, Path]:
    marker = tmp_path / "marker"
    extra: dict[str, object] = {
        "marker": str(marker),
        "condor_submit_vm_token_issuer_user": "",
        **({"htcondor_pool_signing_key": fresh_key()} if case.inventory == "lab" else {}),
        **case.vars,
    }
    overlay = "local.yml" if case.inventory == "lab" else "local-example.yml"
    result = run(
        "validate_then_change.yml",
        tmp_path / "root",
        extra,
        inventory=case.inventory,
        overlay=overlay,
    )
    return result, marker


def written(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_good_inputs_pass_and_the_play_goes_on(tmp_path: Path) -> None:
    result, marker = run_case(tmp_path, Case("good", ""))
    assert result.rc == 0, result.output
    assert marker.read_text() == "validated\n"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_stops_before_any_change(tmp_path: Path, case: Case) -> None:
    result, marker = run_case(tmp_path, case)
    assert result.rc != 0, result.output
    assert case.expect in result.output, result.output
    assert not marker.exists(), "a task after the checks ran although an input was bad"
    assert written(result.root) == [], "a role wrote a file although an input was bad"
