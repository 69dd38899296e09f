"""cvmc.gridmodel.plan: the grid's plan, derived once, and the identities with their paths."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cvmc.gridmodel import addressing, plan, vpn

ROOT = Path(__file__).resolve().parents[2]

MODEL: dict[str, Any] = {
    "name": "test-grid",
    "research_network": "10.64.0.0/20",
    "vpn_instances": [{"name": "rvpn0", "port": 1194}, {"name": "rvpn1", "port": 1195}],
    "max_vms_per_desktop": 2,
    "bandwidth_classes": [
        {"name": "standard", "down": "20mbit", "up": "10mbit"},
        {"name": "bulk", "down": "100mbit", "up": "50mbit"},
    ],
    "bandwidth_default_class": "standard",
    "vm_types": [
        {"name": "its-u11-boinc-20120415", "image": "a.qcow2", "cpus": 1, "memory_mb": 512},
        {
            "name": "lab-el9-bulk-20261101",
            "image": "b.qcow2",
            "cpus": 2,
            "memory_mb": 2048,
            "bandwidth_class": "bulk",
        },
    ],
    "vpn_pki_dir": "/etc/openvpn/grid/pki",
    "vpn_pki_host": "",
}
REGISTRY = [{"name": "lab-desktop-1", "index": 0}, {"name": "lab-desktop-2", "index": 1}]


def test_the_plan_is_the_model_derivations_in_one_mapping() -> None:
    got = plan.grid_plan(MODEL, vpn_gateways=["lab-gateway"])
    layout = addressing.vpn_layout(MODEL["vpn_instances"], "10.64.0.0/20", 2)
    assert got["layout"] == layout
    assert got["slots"] == 2
    assert got["capacity"] == addressing.plan_capacity(layout, 2) == 2044
    assert got["ports"] == [1194, 1195]
    assert got["classes"] == vpn.cap_classes(MODEL["bandwidth_classes"])
    assert got["default_class"] == "standard"
    assert got["vm_classes"] == {
        "its-u11-boinc-20120415": "standard",
        "lab-el9-bulk-20261101": "bulk",
    }
    assert got["pki"]["host"] == "lab-gateway"
    assert got["pki"]["ca_cert"] == "/etc/openvpn/grid/pki/ca.crt"
    assert got["pki"]["issued_dir"] == "/etc/openvpn/grid/pki/clients/issued"


def test_the_pki_host_is_the_models_when_it_names_one() -> None:
    got = plan.grid_plan({**MODEL, "vpn_pki_host": "pki.example.edu"}, vpn_gateways=["gw"])
    assert got["pki"]["host"] == "pki.example.edu"
    # A pool-only inventory has no gateway: no PKI host, and roles that read it check that.
    assert plan.grid_plan(MODEL)["pki"]["host"] == ""


def test_without_a_pki_host_the_coordinators_host_keeps_the_ca_not_a_gateway() -> None:
    # Issue 15 finding 9: the CA key stays off the gateways, which face the research network.
    got = plan.grid_plan(MODEL, vpn_gateways=["gw1", "gw2"], coordinators=["coord"])
    assert got["pki"]["host"] == "coord"
    # Without a coordinator host, the first gateway keeps it (and its own CA key).
    assert plan.grid_plan(MODEL, vpn_gateways=["gw1", "gw2"])["pki"]["host"] == "gw1"
    # A host the model names wins over both.
    named = {**MODEL, "vpn_pki_host": "pki.example.edu"}
    got = plan.grid_plan(named, vpn_gateways=["gw1"], coordinators=["coord"])
    assert got["pki"]["host"] == "pki.example.edu"


def test_instance_networks_given_as_none_are_derived() -> None:
    instances = [{"name": "rvpn0", "port": 1194, "network": None}]
    got = plan.grid_plan({**MODEL, "vpn_instances": instances})
    assert got["layout"][0]["network"] == "10.64.0.0/20"


def test_identities_carry_their_certificate_paths() -> None:
    grid_plan = plan.grid_plan({**MODEL, "vpn_pki_dir": "/srv/pki/"})
    every = plan.plan_identities(grid_plan, REGISTRY)
    assert [i["cn"] for i in every] == [
        "lab-desktop-1-vm0",
        "lab-desktop-1-vm1",
        "lab-desktop-2-vm0",
        "lab-desktop-2-vm1",
    ]
    plain = vpn.vpn_identities(REGISTRY, grid_plan["layout"], 2)
    for planned, ident in zip(every, plain, strict=True):
        assert {k: v for k, v in planned.items() if k not in ("cert", "key")} == ident
        assert planned["cert"] == f"/srv/pki/clients/issued/{ident['cn']}.crt"
        assert planned["key"] == f"/srv/pki/clients/private/{ident['cn']}.key"


def test_one_desktops_identities_read_only_its_own_entry() -> None:
    grid_plan = plan.grid_plan(MODEL)
    mine = plan.plan_identities(grid_plan, REGISTRY, desktop="LAB-DESKTOP-2.campus.edu")
    assert [i["cn"] for i in mine] == ["lab-desktop-2-vm0", "lab-desktop-2-vm1"]
    every = plan.plan_identities(grid_plan, REGISTRY)
    assert mine == [i for i in every if i["desktop"] == "lab-desktop-2"]
    assert plan.plan_identities(grid_plan, REGISTRY, desktop="not-registered") == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vpn_pki_dir": "pki"}, "grid_vpn_pki_dir: 'pki' is not an absolute directory path"),
        ({"vpn_pki_dir": "/"}, "grid_vpn_pki_dir: '/' is not an absolute directory path"),
        ({"vpn_pki_dir": "/etc/../root"}, "grid_vpn_pki_dir: '/etc/../root' must not contain"),
        ({"vpn_pki_dir": "/etc/pki dir"}, "grid_vpn_pki_dir: '/etc/pki dir' is not"),
        ({"vpn_pki_dir": 7}, "grid_vpn_pki_dir: 7 is not"),
        ({"vpn_pki_host": None}, "grid_vpn_pki_host: None is not a host name"),
        ({"max_vms_per_desktop": True}, "grid_max_vms_per_desktop: True is true or false, not a"),
        ({"max_vms_per_desktop": "2"}, "grid_max_vms_per_desktop: '2' is not a whole number"),
        ({"bandwidth_default_class": "gold"}, "grid_bandwidth_default_class: 'gold' is not a"),
        (
            {"vm_types": [{**MODEL["vm_types"][0], "name": "abc", "bandwidth_class": "gold"}]},
            "grid_vm_types[abc].bandwidth_class: 'gold' is not a class",
        ),
        ({"vm_types": "abc"}, "grid_vm_types: 'abc' is not a list"),
        ({"bandwidth_classes": ["x"]}, "grid_bandwidth_classes[0]: 'x' is not a mapping"),
    ],
)
def test_bad_models_name_their_variable(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        plan.grid_plan({**MODEL, **change})


def test_a_slice_outside_the_research_network_is_the_gates_concern_not_the_plans() -> None:
    instances = [{"name": "a", "port": 1, "network": "10.99.0.0/24"}]
    got = plan.grid_plan({**MODEL, "vpn_instances": instances})
    assert got["layout"][0]["network"] == "10.99.0.0/24"


def test_a_missing_key_is_named() -> None:
    model = {k: v for k, v in MODEL.items() if k != "vpn_pki_dir"}
    with pytest.raises(ValueError, match=r"^grid model: missing keys vpn_pki_dir$"):
        plan.grid_plan(model)


def test_identities_refuse_what_is_not_a_plan() -> None:
    with pytest.raises(ValueError, match=r"^grid_plan: not a plan"):
        plan.plan_identities({"pki": {}, "layout": [], "slots": "2"}, REGISTRY)


def _ca(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "ca.crt", tmp_path / "ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_the_pki_module_writes_each_identity_where_the_plan_says(tmp_path: Path) -> None:
    """The real grid_vpn_pki module, run as Ansible runs it, against the plan's paths."""
    grid_plan = plan.grid_plan({**MODEL, "vpn_pki_dir": str(tmp_path / "pki")})
    pki = grid_plan["pki"]
    Path(pki["dir"]).mkdir()
    ca_cert, ca_key = _ca(Path(pki["dir"]))
    assert (str(ca_cert), str(ca_key)) == (pki["ca_cert"], pki["ca_key"])
    identities = plan.plan_identities(grid_plan, REGISTRY)
    args = {
        "ANSIBLE_MODULE_ARGS": {
            "dir": pki["clients_dir"],
            "ca_cert": pki["ca_cert"],
            "ca_key": pki["ca_key"],
            "identities": [i["cn"] for i in identities],
        }
    }
    (tmp_path / "args.json").write_text(json.dumps(args))
    result = subprocess.run(
        [sys.executable, str(ROOT / "library/grid_vpn_pki.py"), str(tmp_path / "args.json")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert json.loads(result.stdout)["issued"] == [i["cn"] for i in identities], result.stderr
    for ident in identities:
        cert = x509.load_pem_x509_certificate(Path(ident["cert"]).read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ident["cn"]
        assert Path(ident["key"]).stat().st_mode & 0o077 == 0
