"""Fixtures of the pfSense tests: the contract double on loopback, the module_utils under test,
the role's object filter, and real PEM material."""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cvmc.gridmodel import addressing, vpn
from pfsense.contract_server import Contract, Firewall, load_contract, serve

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "0123456789abcdef0123456789abcdef"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The module_utils file under the name Ansible gives it at run time.
rest = _load("ansible.module_utils.pfsense_rest", ROOT / "module_utils" / "pfsense_rest.py")
role_filter = _load(
    "pfsense_gateway_filter",
    ROOT / "roles" / "pfsense_gateway" / "filter_plugins" / "pfsense_gateway.py",
)


@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract(load_contract())


@pytest.fixture
def firewall() -> Firewall:
    return Firewall(api_key=API_KEY)


@pytest.fixture
def pf_url(firewall: Firewall, contract: Contract) -> Iterator[str]:
    with serve(firewall, contract=contract) as url:
        yield url


def make_cert(
    cn: str,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = False,
    san: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san))]),
            critical=False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert, key


def pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> str:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="session")
def pki() -> dict[str, str]:
    ca = make_cert("test-grid research VPN CA", ca=True)
    server = make_cert("gw1.grid.example.edu", issuer=ca)
    return {
        "ca_crt": pem(ca[0]),
        "server_crt": pem(server[0]),
        "server_key": pem(server[1]),
        "crl": "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n",
        "tls_crypt": "-----BEGIN OpenVPN Static key V1-----\n"
        + "00" * 16
        + "\n-----END OpenVPN Static key V1-----\n",
    }


def model_inputs(pki: dict[str, str], desktops: int = 3, **over: Any) -> dict[str, Any]:
    """The role's filter inputs for a small grid, derived with the project's own gridmodel."""
    layout = addressing.vpn_layout(
        [{"name": "rvpn0", "port": 1194}, {"name": "rvpn1", "port": 1195}], "10.64.0.0/16", 2
    )
    registry = [{"name": f"lab-desktop-{i}.lab.test", "index": i} for i in range(desktops)]
    inputs: dict[str, Any] = {
        "owner": "grid:test-grid",
        "prefix": "grid_",
        "layout": layout,
        "identities": vpn.vpn_identities(registry, layout, 2),
        "slots": 2,
        "pki": pki,
        "classes": [
            {"name": "standard", "down": "20mbit", "up": "10mbit"},
            {"name": "bulk", "down": "100mbit", "up": "50mbit"},
        ],
        "default_class": "standard",
        "desktop_classes": {"lab-desktop-1.lab.test": "bulk"},
        "vpn_interface": "openvpn",
        "pool_interface": "lan",
        "wan_interface": "wan",
        "ca_cn": "test-grid research VPN CA",
        "endpoint": "gw1.grid.example.edu",
        "protocol": "udp",
        "verbosity": 3,
        "research_network": "10.64.0.0/16",
        "campus_networks": ["10.0.0.0/10", "172.16.0.0/12", "192.168.0.0/16"],
        "pool_services": [
            {"name": "htcondor", "addresses": ["10.10.20.11"], "tcp": [9618]},
            {"name": "coordinator", "addresses": ["10.10.20.20"], "tcp": [443]},
        ],
        "nat_allow": ["198.51.100.0/28"],
    }
    inputs.update(over)
    return inputs
