"""The pfsense_gateway role through the real playbooks/site.yml against the contract double.

ansible-playbook runs the role (and the openvpn_gateway PKI tasks on a local PKI host) and
its modules talk to the double over real HTTP on loopback. The double rejects every request
outside pfrest v2.4.0's contract, so these runs are contract tests of the whole role.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_run import ROOT, ansible_playbook
from cryptography import x509

from pfsense.conftest import API_KEY
from pfsense.contract_server import Contract, Firewall, serve

pytestmark = pytest.mark.slow


@pytest.fixture
def site(tmp_path: Path, contract: Contract) -> Iterator[tuple[Path, Firewall, Path]]:
    firewall = Firewall(api_key=API_KEY)
    with serve(firewall, contract=contract) as url:
        inv = tmp_path / "inv"
        shutil.copytree(ROOT / "inventories/lab/group_vars/all", inv / "group_vars/all")
        local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        hosts = {
            "all": {
                "children": {
                    "vpn_gateways": {
                        "hosts": {"pf-test": {**local, "vpn_gateway_backend": "pfsense"}}
                    },
                    "pki_hosts": {"hosts": {"pki-test": local}},
                }
            }
        }
        (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
        pki_dir = tmp_path / "pki-host"
        (inv / "group_vars/all/zz_pfsense_test.yml").write_text(
            yaml.safe_dump(
                {
                    "grid_vpn_pki_host": "pki-test",
                    "grid_nat_allow": ["198.51.100.0/28"],
                    "pfsense_gateway_url": url,
                    "pfsense_gateway_api_key": API_KEY,
                    # plain HTTP on loopback; TLS is tested in test_tls.py
                    "pfsense_gateway_validate_certs": False,
                    "grid_vpn_pki_dir": str(pki_dir / "pki"),
                    "pfsense_gateway_pki_become": False,
                    "grid_desktop_classes": {},
                }
            )
        )
        yield inv, firewall, pki_dir


def run(inv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return ansible_playbook(ROOT / "playbooks/site.yml", [inv], args=args, timeout=600)


def recap(out: str, host: str) -> dict[str, int]:
    line = next(line for line in out.splitlines() if line.startswith(host + " ") and "ok=" in line)
    return {k: int(v) for k, v in (part.split("=") for part in line.split(":", 1)[1].split())}


def writes(firewall: Firewall, since: int = 0) -> list[tuple[str, str, int]]:
    return [r for r in firewall.requests[since:] if r[0] != "GET"]


def test_converge_idempotence_check_then_remove_a_desktop(
    site: tuple[Path, Firewall, Path], contract: Contract
) -> None:
    inv, firewall, pki_dir = site
    first = run(inv)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    store = firewall.store
    registry: list[dict[str, Any]] = yaml.safe_load(
        (inv / "group_vars/all/desktop_registry.yml").read_text()
    )["grid_desktop_registry"]
    assert len(store["OpenVPNClientSpecificOverride"]) == 2 * len(registry)
    assert store["CertificateAuthority"][0]["crt"] == (pki_dir / "pki/ca.crt").read_text()
    assert store["Certificate"][0]["prv"] == (pki_dir / "pki/server.key").read_text()
    assert {lim["mask"] for lim in store["TrafficShaperLimiter"]} == {"srcaddress", "dstaddress"}
    assert firewall.pending(contract) == []
    assert "BEGIN PRIVATE KEY" not in first.stdout + first.stderr

    since = len(firewall.requests)
    second = run(inv)
    assert second.returncode == 0, second.stdout[-4000:]
    assert recap(second.stdout, "pf-test")["changed"] == 0
    assert writes(firewall, since) == []

    # A desktop leaves the registry (what playbooks/remove_desktop.yml does), then the site runs.
    gone = registry[-1]["name"]
    (inv / "group_vars/all/desktop_registry.yml").write_text(
        yaml.safe_dump({"grid_desktop_registry": registry[:-1]})
    )
    crl_before = store["CertificateRevocationList"][0]["text"]
    since = len(firewall.requests)
    preview = run(inv, "--check", "--diff")
    assert preview.returncode == 0, preview.stdout[-4000:]
    assert f"openvpn_cso {gone.split('.')[0]}-vm0: (present)" in preview.stdout  # the diff names it
    # the PKI's revocation and the firewall's objects would change (the PKI tasks are
    # delegated to pki-test from pf-test, so they count under pf-test), but
    assert recap(preview.stdout, "pf-test")["changed"] >= 1
    assert writes(firewall, since) == []  # check mode wrote nothing
    assert "BEGIN PRIVATE KEY" not in preview.stdout  # --diff shows no key
    third = run(inv)
    assert third.returncode == 0, third.stdout[-4000:]
    names = {o["common_name"] for o in store["OpenVPNClientSpecificOverride"]}
    assert not any(n.startswith(gone.split(".")[0] + "-vm") for n in names)
    assert len(names) == 2 * (len(registry) - 1)
    crl_text = store["CertificateRevocationList"][0]["text"]
    assert crl_text != crl_before
    assert crl_text == (pki_dir / "pki/crl.pem").read_text()
    assert len(list(x509.load_pem_x509_crl(crl_text.encode()))) == 2  # both VM slots revoked
    assert firewall.pending(contract) == []


def test_wrong_api_key_stops_before_any_change(site: tuple[Path, Firewall, Path]) -> None:
    inv, firewall, _ = site
    result = run(inv, "-e", "pfsense_gateway_api_key=wrong-key")
    assert result.returncode != 0
    assert "pfsense_gateway_api_key: the firewall at" in result.stdout
    assert "refused the API key" in result.stdout
    assert writes(firewall) == []
