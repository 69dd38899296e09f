"""The openvpn_gateway role's CRL settings are checked before any change (real
`ansible-playbook`, the role's own assert.yml): the fetch URL goes into a unit's command line,
so a URL with spaces or another scheme, or a port out of range, stops the run naming the
variable. Issue 15, finding 9."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAY = """- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: openvpn_gateway
        tasks_from: assert.yml
"""


def _run(tmp_path: Path, extra: dict[str, object]) -> subprocess.CompletedProcess[str]:
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    return subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,",
         str(play), "-e", json.dumps(extra)],
        capture_output=True, text=True, check=False, timeout=120,
        env={"ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "PATH": "/usr/bin:/bin",
             "ANSIBLE_LOCAL_TEMP": str(tmp_path), "HOME": str(tmp_path)},
    )  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [
        {"openvpn_gateway_crl_url": "http://x/crl.pem --crl /etc/shadow"},
        {"openvpn_gateway_crl_url": "ftp://pki.example.edu/crl.pem"},
        {"openvpn_gateway_crl_port": 0},
        {"openvpn_gateway_crl_port": 70000},
    ],
)
def test_a_bad_crl_setting_stops_the_run_naming_it(
    tmp_path: Path, extra: dict[str, object]
) -> None:
    done = _run(tmp_path, extra)
    assert done.returncode != 0
    name = next(iter(extra))
    assert name in done.stdout, done.stdout


@pytest.mark.parametrize(
    "url", ["", "http://10.89.64.13:8731/crl.pem", "https://crl.example.edu/grid/crl.pem"]
)
def test_good_crl_urls_pass(tmp_path: Path, url: str) -> None:
    done = _run(tmp_path, {"openvpn_gateway_crl_url": url})
    assert done.returncode == 0, done.stdout
