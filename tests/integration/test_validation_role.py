"""Every bad-model case through the real `grid` role with ansible-playbook.

Each case must fail with its own message and stop the play before the next task writes a
marker file; the good lab model must pass and write it (so the marker check is not vacuous).
A case with `role_expect` is refused by meta/argument_specs.yml before the gate runs; the
others pass the argument spec (tests/unit/test_gate_parity.py checks that too), so the gate's
own message must appear.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_run import ROOT, ansible_playbook
from validation_cases import CASES, Case

pytestmark = pytest.mark.slow


def run_validation(tmp_path: Path, extra: dict[str, object]) -> tuple[int, str, Path]:
    marker = tmp_path / "marker"
    proc = ansible_playbook(
        ROOT / "tests/fixtures/validate_then_change.yml",
        [ROOT / "inventories/lab", ROOT / "tests/fixtures/desktops.yml"],
        extra={**extra, "marker": str(marker)},
        extra_file=tmp_path / "extra.json",
        timeout=300,
    )
    return proc.returncode, proc.stdout + proc.stderr, marker


def test_lab_model_passes_and_the_play_goes_on(tmp_path: Path) -> None:
    rc, out, marker = run_validation(tmp_path, {})
    assert rc == 0, out
    assert marker.read_text() == "validated\n"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_model_stops_before_any_change(tmp_path: Path, case: Case) -> None:
    extra: dict[str, object] = dict(case.vars)
    if case.hosts:
        extra["grid_desktop_group"] = case.hosts
    rc, out, marker = run_validation(tmp_path, extra)
    assert rc != 0, out
    assert (case.role_expect or case.expect) in out, out
    assert not marker.exists(), "a task after the grid role ran although the model was invalid"


@pytest.mark.parametrize(
    ("pki_host", "expect"),
    [
        ("pki.nowhere.example.edu", "grid_vpn_pki_host: 'pki.nowhere.example.edu' must name"),
        # The lab's first submit node is a host of the inventory, but a pfSense gateway is not
        # a Linux host that can keep the PKI: made one here with vpn_gateway_backend.
        ("lab-gateway", "grid_vpn_pki_host: 'lab-gateway' must name a Linux host"),
    ],
    ids=["not-in-inventory", "a-pfsense-gateway"],
)
def test_the_pki_host_must_be_a_linux_host_of_the_inventory(
    tmp_path: Path, pki_host: str, expect: str
) -> None:
    """The one rule of the gate that needs the inventory, so it exists at the role level only."""
    extra: dict[str, object] = {"grid_vpn_pki_host": pki_host}
    if pki_host == "lab-gateway":
        extra["vpn_gateway_backend"] = "pfsense"
    rc, out, marker = run_validation(tmp_path, extra)
    assert rc != 0, out
    assert expect in " ".join(out.split()), out
    assert not marker.exists()
