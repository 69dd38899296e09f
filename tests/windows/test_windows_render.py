"""Render test: every template, script and derived setting of windows_desktop, against the
example inventory, rendered by the real role (ansible-playbook, tasks_from render.yml) on the
controller (the session fixture `rendered`, tests/windows/conftest.py), then read by the real
consumers where they exist here: the agent's own config parser, cvmc.gridmodel (identities,
client configs, enrolment tokens), the real wheelhouse's wheels. The PowerShell scripts are
checked against their contracts (the report keys the evaluator reads, the VBoxManage subcommands
the agent's driver uses); no PowerShell runs here (test_windows_powershell_syntax.py parses them
with a third-party PowerShell grammar).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from windows.windows_run import ENROL_KEY, EXAMPLE, HOSTS, ROOT, offline_vars, run

from cvmc.agent.domain.config import parse_config
from cvmc.gridmodel import addressing, plan, preflight, vpn
from cvmc.gridmodel.enrolment import read_enrol_token

pytestmark = pytest.mark.slow


def grid_vars() -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in ("grid.yml", "desktop_registry.yml"):
        data.update(yaml.safe_load((EXAMPLE / "group_vars/all" / name).read_text()))
    return data


@pytest.mark.parametrize("host", HOSTS)
def test_agent_config_passes_the_agents_own_parser(rendered: Path, host: str) -> None:
    raw = json.loads((rendered / host / "agent.json").read_text())
    config = parse_config(raw)  # the agent's real parser: unknown keys, bad values -> ConfigError
    grid = grid_vars()
    assert config.coordinator_url == grid["grid_coordinator_url"]
    assert set(config.vm_types) == {t["name"] for t in grid["grid_vm_types"]}
    assert config.policy.reserve_mb == grid["grid_host_memory_reserve_mb"]
    assert config.policy.max_vms == grid["grid_max_vms_per_desktop"]
    agent = config.agent
    assert agent.hypervisor == "virtualbox"
    assert agent.state_dir == r"C:\Users\cvmc\AppData\Local\cvmc"
    assert agent.identity_dir == agent.state_dir + r"\identity"
    assert agent.enrol_token_file == agent.state_dir + r"\enrol.token"
    assert agent.log_file == agent.state_dir + r"\agent.log"
    assert agent.vboxmanage == r"C:\Program Files\Oracle\VirtualBox\VBoxManage.exe"
    assert agent.coordinator_ca_file == r"C:\ProgramData\cvmc\coordinator-ca.pem"
    assert agent.image_budget_mb == 40960


@pytest.mark.parametrize("host", HOSTS)
def test_identities_and_client_configs_follow_the_address_plan(rendered: Path, host: str) -> None:
    grid = grid_vars()
    layout = addressing.vpn_layout(
        grid["grid_vpn_instances"], grid["grid_research_network"], grid["grid_max_vms_per_desktop"]
    )
    # Each identity also names its certificate and key in the PKI (grid_vpn_pki_dir's default).
    pki = "/etc/openvpn/grid/pki/clients"
    expected = [
        plan.PlannedIdentity(
            **ident, cert=f"{pki}/issued/{ident['cn']}.crt", key=f"{pki}/private/{ident['cn']}.key"
        )
        for ident in vpn.vpn_identities(
            grid["grid_desktop_registry"], layout, grid["grid_max_vms_per_desktop"]
        )
        if ident["desktop"] == host
    ]
    derived = json.loads((rendered / host / "derived.json").read_text())
    assert derived["identities"] == sorted(expected, key=lambda i: i["slot"])
    assert [i["cn"] for i in derived["identities"]] == [
        f"{host.split('.', maxsplit=1)[0]}-vm{slot}"
        for slot in range(grid["grid_max_vms_per_desktop"])
    ]
    for ident in expected:
        conf = (rendered / host / f"slot{ident['slot']}-client.conf").read_text()
        assert conf == vpn.client_config(
            remote=grid["grid_vpn_endpoint"],
            port=ident["port"],
            protocol=grid["grid_vpn_protocol"],
            cap_class=grid["grid_bandwidth_default_class"],
        )
    ports = ",".join(str(i["port"]) for i in grid["grid_vpn_instances"])
    assert derived["vpn_ports"] == ports
    coordinator = next(s for s in grid["grid_pool_services"] if s["name"] == "coordinator")
    assert derived["firewall_coordinator_addresses"] == coordinator["addresses"]
    assert derived["required_disk_mb"] == 40960 + 10240


@pytest.mark.parametrize("host", HOSTS)
def test_enrolment_token_is_for_this_desktop(rendered: Path, host: str) -> None:
    token = (rendered / host / "enrol.token").read_text()
    claims = read_enrol_token(ENROL_KEY, token, host)
    assert claims.generation == 1
    assert claims.expires_at - claims.issued_at == 7 * 86_400  # the grid role's default TTL
    other = HOSTS[1] if host == HOSTS[0] else HOSTS[0]
    with pytest.raises(ValueError, match=r"\S"):
        read_enrol_token(ENROL_KEY, token, other)


def _render_token(tmp_path: Path, host: str, **over: Any) -> tuple[str, str]:
    """(the rendered token, ansible-playbook's output) of one render of ``host``."""
    extra = offline_vars(
        windows_desktop_render_dir=str(tmp_path / "out"),
        windows_desktop_render_secrets=True,
        **over,
    )
    result = run(ROOT / "tests/windows/render.yml", tmp_path, extra, "--limit", host)
    assert result.returncode == 0, result.stdout + result.stderr
    return (tmp_path / "out" / host / "enrol.token").read_text(), result.stdout


def _token_task(output: str) -> str:
    """The status line of the task that writes the token ("ok: ..." or "changed: ...")."""
    task = output.split("Render the enrolment token]", 1)[1]
    return next(line for line in task.splitlines() if line.startswith(("ok:", "changed:")))


def test_a_second_render_keeps_the_still_valid_token(tmp_path: Path) -> None:
    """The token carries its issue time; a rerun keeps it (changed=0) while at least half its
    lifetime is left, and mints a new one for a new generation or after a restore's watermark."""
    host = HOSTS[0]
    first, output = _render_token(tmp_path, host)
    assert _token_task(output).startswith("changed:")
    again, output = _render_token(tmp_path, host)
    assert again == first
    assert _token_task(output).startswith("ok:")
    claims = read_enrol_token(ENROL_KEY, first, host)
    fenced, output = _render_token(
        tmp_path, host, grid_coordinator_enrol_tokens_not_before=claims.issued_at + 1
    )
    assert _token_task(output).startswith("changed:")
    assert fenced != first
    assert read_enrol_token(ENROL_KEY, fenced, host).issued_at > claims.issued_at
    bumped, _ = _render_token(tmp_path, host, windows_desktop_enrol_generation=2)
    assert read_enrol_token(ENROL_KEY, bumped, host).generation == 2


def test_the_library_directory_and_path_file_match_the_wheelhouse(rendered: Path) -> None:
    host = HOSTS[0]
    derived = json.loads((rendered / host / "derived.json").read_text())
    wheels = sorted((ROOT / ".cache/wheelhouse/windows").glob("*.whl"))
    assert derived["wheel_files"] == [w.name for w in wheels]
    names = {w.name.split("-")[0].lower() for w in wheels}
    # The desktop wheel (scripts/desktop_wheel.py), not the full cvmc with the coordinator.
    assert {"cvmc_agent", "cryptography", "psutil", "cffi", "pycparser"} <= names
    assert "cvmc" not in names
    # Each wheel's real .dist-info directory is what the role's `creates:` looks for, so a
    # second run unpacks nothing.
    for wheel, dist_info in zip(wheels, derived["dist_infos"], strict=True):
        with zipfile.ZipFile(wheel) as archive:
            tops = {name.split("/")[0] for name in archive.namelist()}
        assert dist_info in tops, (wheel.name, dist_info, tops)
    lib = derived["lib_dir"]
    assert re.fullmatch(r"C:\\Program Files\\cvmc\\lib-[0-9a-f]{12}", lib)
    pth = (rendered / host / "python._pth").read_text().splitlines()
    assert derived["pth"] == "python311._pth"
    assert pth[0].startswith("#")
    assert [line for line in pth if not line.startswith("#") and line] == [
        "python311.zip",
        ".",
        "..\\" + lib.rsplit("\\", 1)[1],
    ]


def test_stop_triggers_follow_the_policy_windows(rendered: Path) -> None:
    derived = json.loads((rendered / HOSTS[0] / "derived.json").read_text())
    assert derived["window_triggers"] == {
        "always": [],
        "user_present": [
            {
                "type": "weekly",
                "start_boundary": "2026-01-05T07:00:00",
                "weeks_interval": 1,
                "days_of_week": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            }
        ],
    }


def report_keys(script: str) -> dict[str, set[str]]:
    """The keys of preflight.ps1's [ordered]@{...} report, by section ('' = top level)."""
    keys: dict[str, set[str]] = {"": set()}
    stack: list[str] = []
    body = script[script.index("$report = [ordered]@{") :]
    for line in body.splitlines()[1:]:
        stripped = line.strip()
        if stripped == "}":
            if not stack:
                break
            stack.pop()
            continue
        match = re.match(r"'?([A-Za-z_-]+)'?\s*=\s*(\[ordered\]@\{)?", stripped)
        if not match:
            continue
        section = stack[-1] if stack else ""
        keys.setdefault(section, set()).add(match.group(1))
        if match.group(2):
            stack.append(match.group(1))
    return keys


def test_preflight_script_prints_exactly_the_keys_the_evaluator_reads(rendered: Path) -> None:
    script = (rendered / HOSTS[0] / "preflight.ps1").read_text()
    assert script.startswith("#")
    keys = report_keys(script)
    for section, expected in preflight.REPORT_KEYS.items():
        assert keys[section] == set(expected), section
    assert keys["features"] == set(preflight.HOLDER_FEATURES)
    assert "ConvertTo-Json -InputObject $report" in script
    # It reads and never changes: no cmdlet that writes (Set-StrictMode is the session's own).
    writes = re.findall(r"\b(?:Set|New|Remove|Enable|Disable)-\w+", script)
    assert writes == ["Set-StrictMode"]
    assert "bcdedit.exe /enum" in script
    assert "/set" not in script
    assert r"C:\Users\cvmc\AppData\Local\cvmc" in script


def test_stop_script_uses_the_agents_vboxmanage_commands(rendered: Path) -> None:
    script = (rendered / HOSTS[0] / "cvmc-stop.ps1").read_text()
    assert script.startswith("#")
    assert r"$vboxmanage = 'C:\Program Files\Oracle\VirtualBox\VBoxManage.exe'" in script
    assert r"$config = 'C:\ProgramData\cvmc\agent.json'" in script
    commands = set(re.findall(r"& \$vboxmanage ([a-z]+) (\S+)(?: (\S+))?", script))
    used = {(verb, arg if verb == "list" else action) for verb, arg, action in commands}
    assert used == {
        ("list", "runningvms"),
        ("controlvm", "acpipowerbutton"),
        ("controlvm", "poweroff"),
    }
    # The same subcommands the agent's VirtualBox driver uses (and its contract test covers).
    driver = (ROOT / "src/cvmc/agent/adapters/virtualbox.py").read_text()
    for needle in ('"list", "runningvms"', '"acpipowerbutton"', '"poweroff"'):
        assert needle in driver
    assert re.search(r"\^\"\(cvmc-slot\\d\+\)\"", script)  # only the agent's own VMs
    assert "[switch]$IfUserPresent" in script
    assert "quser.exe" in script
