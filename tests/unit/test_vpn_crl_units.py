"""The openvpn_gateway role's CRL units, rendered by Ansible's templar from the role's own
defaults and vars: the PKI host's publisher (grid-vpn-crl-publish.socket and its service) and a
gateway's fetcher (grid-vpn-crl-fetch.service and timer). Their own commands, run for real with
paths moved into a temporary directory, carry a CRL from one to the other; systemd checks the
units where `systemd-analyze` is installed. Issue 15, finding 9."""

from __future__ import annotations

import datetime
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from role_templates import render_role_template, unit_directives
from unit.test_vpn_crl import SCRIPT, Pki
from unit.test_vpn_crl_distribution import _crl, publisher

RENEWER = "/usr/local/libexec/grid-vpn/grid-vpn-crl"
PKI = {
    "host": "pki.grid.example.org",
    "dir": "/etc/openvpn/grid/pki",
    "ca_cert": "/etc/openvpn/grid/pki/ca.crt",
    "ca_key": "/etc/openvpn/grid/pki/ca.key",
    "crl": "/etc/openvpn/grid/pki/crl.pem",
}


def render(template: str, **extra: Any) -> str:
    variables = {
        "__openvpn_gateway_pki": PKI,
        "inventory_hostname": "gw2.grid.example.org",
        "ansible_managed": "Ansible managed",
        **extra,
    }
    return render_role_template("openvpn_gateway", template, variables)


def test_the_fetcher_asks_the_pki_host_by_default_and_may_write_only_the_pki_dir() -> None:
    service = unit_directives(render("grid-vpn-crl-fetch.service.j2"), "Service")
    argv = shlex.split(service["ExecStart"][0])
    assert argv[:4] == ["/usr/bin/python3", RENEWER, "fetch", "--url"]
    assert argv[4] == "http://pki.grid.example.org:8731/crl.pem"
    assert service["ProtectSystem"] == ["strict"]
    assert service["ReadWritePaths"] == ["/etc/openvpn/grid/pki"]
    assert service["CapabilityBoundingSet"] == [""]
    url = "https://crl.example.org/grid.pem"
    argv = shlex.split(
        unit_directives(render("grid-vpn-crl-fetch.service.j2", openvpn_gateway_crl_url=url),
                        "Service")["ExecStart"][0]
    )  # fmt: skip
    assert argv[4] == url


def test_the_publisher_runs_unprivileged_one_process_per_connection() -> None:
    socket = unit_directives(render("grid-vpn-crl-publish.socket.j2"), "Socket")
    assert socket["ListenStream"] == ["8731"]
    assert socket["Accept"] == ["yes"]
    service = unit_directives(render("grid-vpn-crl-publish@.service.j2"), "Service")
    assert service["User"] == ["grid-vpn-crl"]
    assert service["StandardInput"] == ["socket"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["ProtectSystem"] == ["strict"]


def _command(template: str, root: Path, pki: Pki) -> list[str]:
    argv = shlex.split(unit_directives(render(template), "Service")["ExecStart"][0])
    moved = {
        RENEWER: str(SCRIPT),
        "/usr/bin/python3": sys.executable,
        PKI["ca_cert"]: str(pki.root / "ca.crt"),
        PKI["crl"]: str(root / "crl.pem"),
    }
    return [moved.get(arg, arg) for arg in argv]


def test_the_units_own_commands_carry_a_renewed_crl_to_the_gateway(tmp_path: Path) -> None:
    pki_host, gateway = tmp_path / "pki", tmp_path / "gw"
    pki_host.mkdir()
    gateway.mkdir()
    pki = Pki(pki_host)
    now = datetime.datetime.now(datetime.UTC)
    (gateway / "crl.pem").write_bytes(_crl(pki, now - datetime.timedelta(days=9), 180, []))
    renewed = _crl(pki, now - datetime.timedelta(minutes=1), 180, [pki.gone.serial_number])
    (pki_host / "crl.pem").write_bytes(renewed)
    serve = _command("grid-vpn-crl-publish@.service.j2", pki_host, pki)
    assert serve[1:4] == [str(SCRIPT), "serve", "--crl"]
    with publisher(Path(serve[4])) as url:
        fetch = _command("grid-vpn-crl-fetch.service.j2", gateway, pki)
        fetch[fetch.index("--url") + 1] = url
        done = subprocess.run(fetch, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert (gateway / "crl.pem").read_bytes() == renewed


@pytest.mark.parametrize("publish", [True, False])
def test_a_gateway_that_is_the_pki_host_opens_the_crl_port_only_for_other_gateways(
    publish: bool,
) -> None:
    nft = render(
        "grid-gateway.nft.j2",
        __openvpn_gateway_crl_publish=publish,
        __openvpn_gateway_layout=[{"name": "a", "port": 1194}],
        grid_research_network="10.200.0.0/16",
        grid_campus_networks=["10.0.0.0/8"],
        grid_nat_allow=[],
        grid_pool_services=[],
        grid_vpn_protocol="udp",
    )
    assert ("tcp dport 8731 accept" in nft) is publish


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_rendered_units(tmp_path: Path) -> None:
    names = ["grid-vpn-crl-publish.socket", "grid-vpn-crl-publish@.service",
             "grid-vpn-crl-fetch.service", "grid-vpn-crl-fetch.timer"]  # fmt: skip
    stand_in = tmp_path / "grid-vpn-crl"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    for name in names:
        (tmp_path / name).write_text(render(f"{name}.j2").replace(RENEWER, str(stand_in)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no",
         str(tmp_path / "grid-vpn-crl-publish.socket"), str(tmp_path / "grid-vpn-crl-fetch.timer")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "grid-vpn-crl" not in done.stderr, done.stderr
