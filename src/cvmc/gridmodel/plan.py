"""The grid's plan: everything the roles derive from the model, derived in one place.

The model (the ``grid_*`` variables) says what the grid is; the plan says what follows from it
and what every role needs alike: the OpenVPN layout and its capacity, the bandwidth classes in
bits and tc units, which class each VM type gets, where the VPN PKI lives and on which host,
and each VM identity with its certificate's paths. The role ``grid`` derives it once per
template (``grid_plan`` in ``roles/grid/vars/main.yml``) and every role reads it from there
instead of re-wiring the model's variables into the derivations.

The VM identities are the one part that grows with the campus (two per desktop), so they are
not in the plan itself: :func:`plan_identities` derives them from the plan and the desktop
registry, for the whole campus (the gateways) or for one desktop (a desktop's own slots).

Pure (standard library and ``cvmc.gridmodel`` only); problems are ``ValueError`` messages that
start with the variable they are about.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import TypedDict

from cvmc.gridmodel import addressing, catalogue, limits, vpn

__all__ = [
    "PKI_FILES",
    "PLAN_KEYS",
    "PkiPaths",
    "Plan",
    "PlannedIdentity",
    "grid_plan",
    "pki_paths",
    "plan_identities",
]

#: The files of the VPN PKI, relative to ``grid_vpn_pki_dir``. The openvpn_gateway role writes
#: them; the client certificates and keys are ``clients/issued/<cn>.crt`` and
#: ``clients/private/<cn>.key`` (the layout of ``library/grid_vpn_pki.py`` under ``clients``).
PKI_FILES: dict[str, str] = {
    "ca_cert": "ca.crt",
    "ca_key": "ca.key",
    "server_cert": "server.crt",
    "server_key": "server.key",
    "crl": "crl.pem",
    "tls_crypt": "tls-crypt.key",
    "clients_dir": "clients",
    "issued_dir": "clients/issued",
    "private_dir": "clients/private",
}
#: The model keys the plan reads (``grid_*`` without the prefix).
PLAN_KEYS: tuple[str, ...] = (
    "name",
    "research_network",
    "vpn_instances",
    "max_vms_per_desktop",
    "bandwidth_classes",
    "bandwidth_default_class",
    "vm_types",
    "vpn_pki_dir",
    "vpn_pki_host",
)
_SAFE_PATH = re.compile(r"\A/[A-Za-z0-9._/-]*\Z")


class PkiPaths(TypedDict):
    """Where the VPN PKI lives: its host and the absolute path of each of its files."""

    host: str
    dir: str
    ca_cert: str
    ca_key: str
    server_cert: str
    server_key: str
    crl: str
    tls_crypt: str
    clients_dir: str
    issued_dir: str
    private_dir: str


class Plan(TypedDict):
    """The grid's plan (see the module's docstring)."""

    name: str
    slots: int
    layout: list[addressing.VpnInstance]
    capacity: int
    ports: list[int]
    classes: dict[str, vpn.CapClass]
    default_class: str
    vm_classes: dict[str, str]
    pki: PkiPaths


class PlannedIdentity(vpn.VpnIdentity):
    """A VM identity with the paths of its certificate and key on the PKI host."""

    cert: str
    key: str


def pki_paths(
    pki_dir: object,
    pki_host: object,
    vpn_gateways: Sequence[str],
    coordinators: Sequence[str] = (),
) -> PkiPaths:
    """The PKI's host and files. The host is ``grid_vpn_pki_host``; when it is empty, the first
    coordinator host, so that the CA key stays off the gateways, which face the research
    network; without one, the first VPN gateway."""
    if not isinstance(pki_dir, str) or not _SAFE_PATH.match(pki_dir) or pki_dir == "/":
        raise ValueError(
            f"grid_vpn_pki_dir: {pki_dir!r} is not an absolute directory path of letters, digits "
            "and . _ - / (like '/etc/openvpn/grid/pki')"
        )
    if ".." in pki_dir.split("/"):
        raise ValueError(f"grid_vpn_pki_dir: {pki_dir!r} must not contain '..'")
    if not isinstance(pki_host, str):
        raise ValueError(f"grid_vpn_pki_host: {pki_host!r} is not a host name")
    # Empty when the inventory has no VPN gateway (a pool-only inventory); the roles that read
    # the PKI check that it names an inventory host.
    host = pki_host or next(iter([*coordinators, *vpn_gateways]), "")
    base = posixpath.normpath(pki_dir)

    def path(key: str) -> str:
        return posixpath.join(base, PKI_FILES[key])

    return PkiPaths(
        host=host,
        dir=base,
        ca_cert=path("ca_cert"),
        ca_key=path("ca_key"),
        server_cert=path("server_cert"),
        server_key=path("server_key"),
        crl=path("crl"),
        tls_crypt=path("tls_crypt"),
        clients_dir=path("clients_dir"),
        issued_dir=path("issued_dir"),
        private_dir=path("private_dir"),
    )


def grid_plan(
    model: Mapping[str, object],
    *,
    vpn_gateways: Sequence[str] = (),
    coordinators: Sequence[str] = (),
) -> Plan:
    """Derive the plan from the model (``grid_*`` variables without their prefix).

    Reads the keys in :data:`PLAN_KEYS`; ``vpn_gateways`` and ``coordinators`` are the
    inventory's groups ``vpn_gateways`` and ``grid_coordinator``.
    """
    missing = [key for key in PLAN_KEYS if key not in model]
    if missing:
        raise ValueError(f"grid model: missing keys {', '.join(missing)}")
    slots = limits.setting(model["max_vms_per_desktop"], "grid_max_vms_per_desktop")
    layout = addressing.vpn_layout(
        _list_of_mappings(model["vpn_instances"], "grid_vpn_instances"),
        str(model["research_network"]),
        slots,
    )
    # The catalogue's own parsers: a class or a type means here what the gate checked.
    bandwidth = catalogue.parse_bandwidth(
        model["bandwidth_classes"], model["bandwidth_default_class"]
    )
    vm_types = catalogue.parse_vm_types(model["vm_types"], bandwidth=bandwidth)
    classes = vpn.cap_classes(
        _list_of_mappings(model["bandwidth_classes"], "grid_bandwidth_classes")
    )
    default_class = bandwidth[1]
    vm_classes = {vm.name: vm.bandwidth_class or default_class for vm in vm_types}
    return Plan(
        name=str(model["name"]),
        slots=slots,
        layout=layout,
        capacity=addressing.plan_capacity(list(layout), slots),
        ports=[inst["port"] for inst in layout],
        classes=classes,
        default_class=default_class,
        vm_classes=vm_classes,
        pki=pki_paths(
            model["vpn_pki_dir"], model["vpn_pki_host"], list(vpn_gateways), list(coordinators)
        ),
    )


def plan_identities(
    plan: Mapping[str, object],
    registry: Sequence[Mapping[str, object]],
    *,
    desktop: str | None = None,
    name: str = "grid_desktop_registry",
) -> list[PlannedIdentity]:
    """Every VM identity of the registered desktops (or of ``desktop`` only), sorted by name.

    Each identity carries the paths of its certificate and key on the PKI host, from the plan.
    Deriving one desktop's identities reads only its own registry entry, so a rollout to
    thousands of desktops never derives the whole campus's once per desktop.
    """
    entries = list(registry)
    if desktop is not None:
        # The registry holds the inventory's names, so an exact match is the rule; the same
        # desktop spelled another way (case, domain) is the fallback.
        exact = [e for e in entries if e.get("name") == desktop]
        key = addressing.desktop_id(desktop, name="desktop")
        entries = exact or [e for e in entries if addressing.desktop_id(str(e.get("name"))) == key]
    pki = plan["pki"]
    layout = plan["layout"]
    slots = plan["slots"]
    if not isinstance(pki, Mapping) or not isinstance(layout, Sequence):
        raise ValueError("grid_plan: not a plan; derive it with the grid_plan filter")
    if isinstance(slots, bool) or not isinstance(slots, int):
        raise ValueError("grid_plan: not a plan; derive it with the grid_plan filter")
    identities = vpn.vpn_identities(entries, layout, slots, name=name)
    planned: list[PlannedIdentity] = []
    for ident in identities:
        cn = ident["cn"]
        planned.append(
            PlannedIdentity(
                **ident,
                cert=posixpath.join(str(pki["issued_dir"]), f"{cn}.crt"),
                key=posixpath.join(str(pki["private_dir"]), f"{cn}.key"),
            )
        )
    return planned


def _list_of_mappings(value: object, name: str) -> list[Mapping[str, object]]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"{name}: {value!r} is not a list")
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ValueError(f"{name}[{i}]: {item!r} is not a mapping")
    return [{k: v for k, v in item.items() if v is not None} for item in value]
