"""The openvpn_gateway role's metrics exporter as the role installs it: grid-vpn-metrics.service
and .timer and metrics.json, rendered by Ansible's templar from the role's own defaults and vars;
the unit's own command, run for real with paths moved into a temporary directory, writes a
textfile `promtool` accepts; systemd checks the units where `systemd-analyze` is installed; the
rendered server.conf names the status file the exporter reads. Issue 17, item 2."""

from __future__ import annotations

import datetime
import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from role_templates import render_role_template, render_role_text, unit_directives
from unit.test_vpn_crl import NOW, Pki
from unit.test_vpn_metrics import SCRIPT, STATUS_V2, check_metrics

EXPORTER = "/usr/local/libexec/grid-vpn/grid-vpn-metrics"
PKI = {
    "host": "gw1.grid.example.org",
    "dir": "/etc/openvpn/grid/pki",
    "ca_cert": "/etc/openvpn/grid/pki/ca.crt",
    "ca_key": "/etc/openvpn/grid/pki/ca.key",
    "server_cert": "/etc/openvpn/grid/pki/server.crt",
    "server_key": "/etc/openvpn/grid/pki/server.key",
    "tls_crypt": "/etc/openvpn/grid/pki/tc.key",
    "crl": "/etc/openvpn/grid/pki/crl.pem",
}
LAYOUT = [
    {"name": "r0", "network": "10.64.0.0/22", "port": 1194, "capacity": 500,
     "openvpn_server": "10.64.0.0 255.255.252.0"},
    {"name": "r1", "network": "10.64.4.0/22", "port": 1195, "capacity": 500,
     "openvpn_server": "10.64.4.0 255.255.252.0"},
]  # fmt: skip
VARIABLES: dict[str, Any] = {
    "grid_plan": {"layout": LAYOUT, "pki": PKI, "classes": {}},
    "grid_max_vms_per_desktop": 2,
    "inventory_hostname": "gw1.grid.example.org",
    "ansible_managed": "Ansible managed",
}


def render(template: str, **extra: Any) -> str:
    return render_role_template("openvpn_gateway", template, {**VARIABLES, **extra})


def config(**extra: Any) -> dict[str, Any]:
    text = render_role_text(
        "openvpn_gateway",
        "{{ __openvpn_gateway_metrics_config | to_nice_json }}",
        {**VARIABLES, **extra},
    )
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def test_the_config_has_the_layout_capacity_and_pki_paths() -> None:
    got = config()
    assert [(i["name"], i["network"], i["capacity"]) for i in got["instances"]] == [
        ("r0", "10.64.0.0/22", 500),
        ("r1", "10.64.4.0/22", 500),
    ]
    assert got["vms_per_desktop"] == 2
    assert got["status_dir"] == "/run/openvpn-server"
    assert (got["crl"], got["ca_cert"], got["server_cert"]) == (
        PKI["crl"],
        PKI["ca_cert"],
        PKI["server_cert"],
    )
    assert got["textfile"] == "/var/lib/prometheus/node-exporter/grid_vpn.prom"
    other = config(openvpn_gateway_metrics_textfile_dir="/srv/textfile")
    assert other["textfile"] == "/srv/textfile/grid_vpn.prom"


def test_server_conf_writes_the_status_file_the_exporter_reads() -> None:
    conf = render(
        "server.conf.j2",
        item=LAYOUT[1],
        __openvpn_gateway_use_dco=False,
        grid_vpn_protocol="udp",
        grid_pool_services=[],
        grid_nat_allow=[],
    )
    lines = conf.splitlines()
    assert "status /run/openvpn-server/status-r1.log 10" in lines
    assert "status-version 2" in lines
    assert "max-clients 1000" in lines


def test_the_units_command_writes_the_textfile(tmp_path: Path) -> None:
    service = unit_directives(render("grid-vpn-metrics.service.j2"), "Service")
    argv = shlex.split(service["ExecStart"][0])
    assert argv == ["/usr/bin/python3", EXPORTER, "--config", "/etc/openvpn/grid/metrics.json"]
    assert service["ReadWritePaths"] == ["/var/lib/prometheus/node-exporter"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["CapabilityBoundingSet"] == [""]
    timer = unit_directives(render("grid-vpn-metrics.timer.j2"), "Timer")
    assert timer["OnUnitActiveSec"] == ["60s"]
    # The same command with the paths moved into tmp_path.
    pki = Pki(tmp_path)
    pki.write_crl(NOW, NOW + datetime.timedelta(days=180))
    (tmp_path / "run").mkdir()
    (tmp_path / "run/status-r0.log").write_text(STATUS_V2)
    (tmp_path / "textfile").mkdir()
    moved = {
        **config(),
        "status_dir": str(tmp_path / "run"),
        "crl": str(tmp_path / "crl.pem"),
        "ca_cert": str(tmp_path / "ca.crt"),
        "server_cert": str(tmp_path / "good.crt"),
        "textfile": str(tmp_path / "textfile/grid_vpn.prom"),
    }
    (tmp_path / "metrics.json").write_text(json.dumps(moved))
    argv[1] = str(SCRIPT)
    argv[3] = str(tmp_path / "metrics.json")
    argv[0] = shutil.which("python3") or argv[0]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "textfile/grid_vpn.prom").read_text()
    check_metrics(text)
    assert 'grid_vpn_clients_capacity{vpn_instance="r0"} 1000' in text
    assert 'grid_vpn_clients_connected{vpn_instance="r0"} 2' in text
    assert 'grid_vpn_status_ok{vpn_instance="r1"} 0' in text  # no status file: r1 is down


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_rendered_units(tmp_path: Path) -> None:
    stand_in = tmp_path / "grid-vpn-metrics"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    for name in ("grid-vpn-metrics.service", "grid-vpn-metrics.timer"):
        (tmp_path / name).write_text(render(f"{name}.j2").replace(EXPORTER, str(stand_in)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "grid-vpn-metrics.timer")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "grid-vpn-metrics" not in done.stderr, done.stderr
