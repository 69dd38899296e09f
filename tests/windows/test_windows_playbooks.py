"""Bad input stops the Windows playbooks before any desktop is contacted or anything changes.

Real ansible-playbook runs of playbooks/desktops.yml, expand_pool.yml and remove_desktop.yml
against the example inventory (and copies of it). Every case here fails (or ends) in the
controller-side checks, so no WinRM connection is ever attempted: the recap shows no host
unreachable and no task of the role past its checks ran.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_run import ansible_playbook
from windows.windows_run import EXAMPLE, ROOT, build_wheelhouse, offline_vars, run

pytestmark = pytest.mark.slow
DESKTOPS = ROOT / "playbooks/desktops.yml"


@pytest.fixture(scope="module", autouse=True)
def wheelhouse() -> None:
    build_wheelhouse()


def output(result: subprocess.CompletedProcess[str]) -> str:
    return " ".join((result.stdout + result.stderr).split())


def assert_stopped_before_any_desktop(result: subprocess.CompletedProcess[str]) -> None:
    text = output(result)
    assert result.returncode != 0, text
    assert "UNREACHABLE" not in text
    assert "Read the preflight report" not in text
    assert "unreachable=1" not in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"windows_desktop_virtualbox_checksum": ""},
            "windows_desktop_virtualbox_checksum is missing",
        ),
        (
            {"windows_desktop_python_checksum": "abc"},
            "windows_desktop_python_checksum is missing or not a SHA-256",
        ),
        (
            {"windows_desktop_virtualbox_url": "http://mirror/vbox.exe"},
            "windows_desktop_virtualbox_url is empty",
        ),
        (
            {"windows_desktop_python_version": "3.12.1"},
            "windows_desktop_python_version 3.12.1 is not 3.11.x",
        ),
        ({"windows_desktop_service_password": ""}, "windows_desktop_service_password is empty"),
        ({"windows_desktop_service_user": "Administrator"}, "is a built-in or reserved account"),
        ({"windows_desktop_trusted_keys": []}, "windows_desktop_trusted_keys is empty"),
        ({"ansible_winrm_scheme": "http"}, "ansible_winrm_scheme is http (plain HTTP)"),
        ({"ansible_port": 5985, "ansible_winrm_scheme": "http"}, "insecure WinRM connection"),
        (
            {"ansible_winrm_transport": "basic"},
            "ansible_winrm_transport basic includes basic or plaintext",
        ),
        ({"ansible_winrm_transport": ["ntlm", "plaintext"]}, "includes basic or plaintext"),
        (
            {"ansible_winrm_transport": "credssp"},
            "ansible_winrm_transport credssp includes credssp",
        ),
        ({"ansible_winrm_transport": ["kerberos", "CredSSP"]}, "includes credssp"),
        ({"ansible_winrm_transport": ""}, "ansible_winrm_transport is not set"),
        (
            {"ansible_connection": "psrp", "ansible_psrp_auth": "credssp"},
            "ansible_psrp_auth is credssp",
        ),
        (
            {"ansible_winrm_server_cert_validation": "ignore"},
            "ansible_winrm_server_cert_validation is ignore",
        ),
        (
            {"ansible_winrm_message_encryption": "never"},
            "ansible_winrm_message_encryption is never",
        ),
        (
            {"ansible_connection": "psrp", "ansible_psrp_protocol": "http"},
            "ansible_psrp_protocol is http",
        ),
        (
            {"windows_desktop_wheelhouse": "/nonexistent"},
            "run `scripts/wheelhouse.sh windows` on the controller",
        ),
        ({"windows_desktop_image_budget_mb": "lots"}, "windows_desktop_image_budget_mb"),
        ({"windows_desktop_allow_insecure_winrm": "maybe"}, "windows_desktop_allow_insecure_winrm"),
    ],
)
def test_bad_input_stops_desktops_yml(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    result = run(DESKTOPS, tmp_path, offline_vars(**extra))
    assert_stopped_before_any_desktop(result)
    assert message in output(result)


def test_the_example_inventory_alone_asks_for_the_installer_checksums(tmp_path: Path) -> None:
    # As shipped, the example leaves the checksums to the site: the run refuses to start.
    extra = offline_vars()
    del extra["windows_desktop_virtualbox_checksum"]
    del extra["windows_desktop_python_checksum"]
    result = run(DESKTOPS, tmp_path, extra)
    assert_stopped_before_any_desktop(result)
    text = output(result)
    assert "windows_desktop_virtualbox_checksum is missing" in text
    assert "windows_desktop_python_checksum is missing" in text
    assert "nothing was changed" in text


@pytest.mark.parametrize(
    "extra",
    [
        {},  # the example's secure defaults (HTTPS, Kerberos, validation, encryption)
        {"ansible_winrm_transport": "ntlm"},
        {
            "windows_desktop_allow_insecure_winrm": True,  # the documented opt-in
            "ansible_port": 5985,
            "ansible_winrm_scheme": "http",
            "ansible_winrm_transport": "basic",
        },
    ],
)
def test_good_settings_pass_the_checks(tmp_path: Path, extra: dict[str, Any]) -> None:
    result = run(ROOT / "tests/windows/check_inputs.yml", tmp_path, offline_vars(**extra))
    assert result.returncode == 0, output(result)
    assert output(result).count("msg: checks passed") == 7


def test_a_missing_winrm_transport_stops_desktops_yml(tmp_path: Path) -> None:
    # Without ansible_winrm_transport pywinrm picks NTLM itself: the transport must be named.
    inventory = copy_example(tmp_path)
    connection = inventory / "group_vars/windows_desktops/connection.yml"
    settings = yaml.safe_load(connection.read_text())
    del settings["ansible_winrm_transport"]
    connection.write_text(yaml.safe_dump(settings))
    result = run_on(inventory, "playbooks/desktops.yml", tmp_path, offline_vars())
    assert_stopped_before_any_desktop(result)
    assert "ansible_winrm_transport is not set" in output(result)


def copy_example(tmp_path: Path, *new_hosts: str) -> Path:
    inventory = tmp_path / "example"
    shutil.copytree(EXAMPLE, inventory)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    chem = hosts["all"]["children"]["desktops"]["children"]["windows_desktops"]["children"][
        "dept_chemistry"
    ]["hosts"]
    for host in new_hosts:
        chem[host] = None
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    return inventory


def run_on(
    inventory: Path, playbook: str, tmp_path: Path, extra: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return ansible_playbook(
        ROOT / playbook, [inventory], extra=extra, extra_file=tmp_path / "extra.json"
    )


def test_expand_pool_with_no_new_desktop_touches_nothing(tmp_path: Path) -> None:
    inventory = copy_example(tmp_path)
    registry = (inventory / "group_vars/all/desktop_registry.yml").read_text()
    result = run_on(inventory, "playbooks/expand_pool.yml", tmp_path, offline_vars())
    text = output(result)
    assert result.returncode == 0, text
    assert "0 new desktop(s): none" in text
    assert "msg: joined: [] skipped: {}" in text
    assert "changed=0" in text
    assert "changed=1" not in text
    assert (inventory / "group_vars/all/desktop_registry.yml").read_text() == registry


def test_expand_pool_checks_the_new_desktop_before_registering_it(tmp_path: Path) -> None:
    inventory = copy_example(tmp_path, "chem-lab-05.ad.example.edu")
    registry = (inventory / "group_vars/all/desktop_registry.yml").read_text()
    extra = offline_vars(ansible_winrm_transport="basic")
    result = run_on(inventory, "playbooks/expand_pool.yml", tmp_path, extra)
    assert_stopped_before_any_desktop(result)
    text = output(result)
    assert "1 new desktop(s): chem-lab-05.ad.example.edu" in text
    assert "chem-lab-05.ad.example.edu: insecure WinRM connection" in text
    # Only the new desktop was checked, and the registry was not written.
    assert "chem-lab-01.ad.example.edu" not in text
    assert (inventory / "group_vars/all/desktop_registry.yml").read_text() == registry


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "remove_desktops must be a non-empty list of registered desktops"),
        ({"remove_desktops": []}, "remove_desktops must be a non-empty list"),
        (
            {"remove_desktops": "chem-lab-01.ad.example.edu"},
            "remove_desktops must be a non-empty list",
        ),
        ({"remove_desktops": ["nope.ad.example.edu"]}, "unknown: ['nope.ad.example.edu']"),
        (
            {"remove_desktops": ["chem-lab-01.ad.example.edu"], "ansible_winrm_scheme": "http"},
            "ansible_winrm_scheme is http",
        ),
    ],
)
def test_remove_desktop_refuses_bad_input(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    inventory = copy_example(tmp_path)
    registry = (inventory / "group_vars/all/desktop_registry.yml").read_text()
    result = run_on(inventory, "playbooks/remove_desktop.yml", tmp_path, offline_vars(**extra))
    assert_stopped_before_any_desktop(result)
    assert message in output(result)
    assert "Remove the agent" not in output(result)
    assert (inventory / "group_vars/all/desktop_registry.yml").read_text() == registry


def test_failing_desktops_are_skipped_and_summarised_not_failed(tmp_path: Path) -> None:
    # The role's judge/skip/joined steps on sample reports (no desktop is contacted).
    result = run(ROOT / "tests/windows/preflight_skip.yml", tmp_path, offline_vars())
    text = output(result)
    assert result.returncode == 0, text
    assert "failed=1" not in text
    summary = text[text.index("TASK [Summarise the desktops]") :]
    assert "joined: - chem-lab-01.ad.example.edu - phys-lab-03.ad.example.edu skipped:" in summary
    expected = {
        "chem-lab-02.ad.example.edu": "VT-x/AMD-V is disabled in the firmware",
        "chem-lab-03.ad.example.edu": "VT-x/AMD-V is held by memory integrity (HVCI)",
        "chem-lab-04.ad.example.edu": "4096 MB of RAM installed is below grid_desktop_min",
        "phys-lab-01.ad.example.edu": "VT-x/AMD-V is held by WSL2 / Virtual Machine Platform",
        "phys-lab-02.ad.example.edu": "VT-x/AMD-V is held by Hyper-V",
    }
    for host, reason in expected.items():
        assert f"{host}: - {reason}" in summary, (host, summary)
    assert summary.count("remediation possible: set windows_desktop_remediate_hypervisor=true") == 3
    # A skipped desktop never reached the step after the skip.
    for host in expected:
        assert f"{host} : ok=4 changed=0 unreachable=0 failed=0" in text


def test_remediation_is_not_offered_when_it_is_on(tmp_path: Path) -> None:
    extra = offline_vars(windows_desktop_remediate_hypervisor=True)
    result = run(ROOT / "tests/windows/preflight_skip.yml", tmp_path, extra)
    assert result.returncode == 0, output(result)
    assert "remediation possible" not in output(result)


def fake_pki(root: Path, cns: list[str]) -> Path:
    """A PKI directory laid out as openvpn_gateway keeps it (the files' content is not read)."""
    for name in ("ca.crt", "tls-crypt.key"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"{name}\n")
    for cn in cns:
        for sub, ext in (("issued", "crt"), ("private", "key")):
            path = root / "clients" / sub / f"{cn}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{cn}.{ext}\n")
    return root


def test_identities_are_read_from_the_pki_and_missing_ones_named(tmp_path: Path) -> None:
    pki = fake_pki(tmp_path / "pki", ["chem-lab-01-vm0"])  # vm1 not issued yet
    extra = offline_vars(
        grid_vpn_pki_host="localhost",
        grid_vpn_pki_dir=str(pki),
        windows_desktop_pki_become=False,
    )
    limit = ("--limit", "chem-lab-01.ad.example.edu")
    result = run(ROOT / "tests/windows/pki_read.yml", tmp_path, extra, *limit)
    text = output(result)
    assert result.returncode != 0
    assert (
        f"{pki}/clients/issued/chem-lab-01-vm1.crt, {pki}/clients/private/chem-lab-01-vm1.key"
        in text
    )
    assert "not readable on localhost (grid_vpn_pki_host)" in text
    # slurp returns base64; neither form of a key reaches the output (no_log).
    key = "chem-lab-01-vm0.key\n"
    assert key not in result.stdout
    assert base64.b64encode(key.encode()).decode() not in result.stdout
    fake_pki(pki, ["chem-lab-01-vm1"])
    result = run(ROOT / "tests/windows/pki_read.yml", tmp_path, extra, *limit)
    assert result.returncode == 0, output(result)
    assert "msg: read 6 files" in output(result)
