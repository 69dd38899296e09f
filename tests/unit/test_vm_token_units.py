"""The grid_coordinator role's token-minter units (cvmc-vm-token.socket, cvmc-vm-token@.service)
and the [vm_tokens] section of coordinator.toml, rendered by Ansible's templar from the role's
own defaults and vars; the units are checked by ``systemd-analyze verify`` where it is installed,
and the service's command is run for real (with a test key in place of the host's)."""

from __future__ import annotations

import base64
import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from role_templates import render_role_template, unit_directives

from cvmc.coordinator.entrypoints.vm_token import parser

ROOT = Path(__file__).resolve().parents[2]
BIN = "/opt/cvmc-coordinator/venv/bin/cvmc-vm-token"


def render(template: str, **extra: Any) -> str:
    variables = {
        "htcondor_central_manager": "cm.grid.example.org",
        "htcondor_trust_domain": "cm.grid.example.org",
        "grid_coordinator_url": "https://coordinator.grid.example.org",
        "grid_images_allow_insecure_http": False,
        "grid_pool_services": [],
        "inventory_hostname": "coordinator",
        "ansible_managed": "Ansible managed",
        **extra,
    }
    return render_role_template("grid_coordinator", template, variables, ("sandbox.j2",))


def test_the_socket_admits_only_root_and_the_coordinators_group() -> None:
    socket = unit_directives(render("cvmc-vm-token.socket.j2"), "Socket")
    assert socket["ListenStream"] == ["/run/cvmc-vm-token.sock"]
    assert (socket["SocketUser"], socket["SocketGroup"]) == (["root"], ["cvmc"])
    assert socket["SocketMode"] == ["0660"]
    assert socket["Accept"] == ["yes"]
    assert socket["MaxConnections"] == ["32"]


def test_the_service_runs_unprivileged_without_network_and_with_fixed_arguments() -> None:
    service = unit_directives(render("cvmc-vm-token@.service.j2"), "Service")
    assert service["User"] == ["cvmc-vmtoken"]
    assert service["StandardInput"] == ["socket"]
    assert service["StandardOutput"] == ["socket"]
    assert service["StandardError"] == ["journal"]
    for key, value in {
        "PrivateNetwork": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "RestrictAddressFamilies": "AF_UNIX",
        "IPAddressDeny": "any",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == [value], key
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == BIN
    args = parser().parse_args(argv[1:])
    assert args.key_file == "/etc/cvmc-vm-token/RESEARCH_VM"
    assert args.key_id == "RESEARCH_VM"
    assert args.identity == "research-vm@cm.grid.example.org"
    assert args.issuer == "cm.grid.example.org"
    assert args.lifetime == 43200
    assert args.authz == ["ADVERTISE_STARTD", "ADVERTISE_MASTER", "READ"]


def test_the_services_command_mints_the_narrow_token(tmp_path: Path) -> None:
    (exec_start,) = unit_directives(render("cvmc-vm-token@.service.j2"), "Service")["ExecStart"]
    argv = shlex.split(exec_start)
    key = tmp_path / "RESEARCH_VM"
    key.write_bytes(b"Zq8Lx2WmPb7Ck4VnRt9Hs3Jd6Fg1Ya5E")
    argv[argv.index("/etc/cvmc-vm-token/RESEARCH_VM")] = str(key)
    done = subprocess.run(
        [sys.executable, "-m", "cvmc.coordinator.entrypoints.vm_token", *argv[1:]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        timeout=20,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    payload = done.stdout.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == "research-vm@cm.grid.example.org"
    assert claims["scope"] == "condor:/ADVERTISE_STARTD condor:/ADVERTISE_MASTER condor:/READ"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_rendered_units(tmp_path: Path) -> None:
    stand_in = tmp_path / "cvmc-vm-token"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    for name in ("cvmc-vm-token.socket", "cvmc-vm-token@.service"):
        text = render(f"{name}.j2").replace(BIN, str(stand_in))
        (tmp_path / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "cvmc-vm-token.socket")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "cvmc-vm-token" not in done.stderr, done.stderr


@pytest.mark.parametrize(("enabled", "socket"), [(True, "/run/cvmc-vm-token.sock"), (False, "")])
def test_the_coordinator_config_names_the_socket(enabled: bool, socket: str) -> None:
    config = tomllib.loads(
        render("coordinator.toml.j2", grid_coordinator_vm_tokens=enabled, grid_name="grid")
    )
    assert config["vm_tokens"] == {"socket": socket, "timeout_s": 5}


def test_the_coordinators_sandbox_lets_it_reach_the_socket() -> None:
    unit = render("cvmc-coordinator.service.j2", grid_coordinator_ip_address_allow=["localhost"])
    families = unit_directives(unit, "Service")["RestrictAddressFamilies"]
    assert any("AF_UNIX" in line.split() for line in families)
    service = unit_directives(unit, "Service")
    assert "/run" not in " ".join(service.get("InaccessiblePaths", []))
    assert service["Group"] == ["cvmc"]
