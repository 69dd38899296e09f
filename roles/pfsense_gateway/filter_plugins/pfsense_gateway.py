"""Filter of the pfsense_gateway role: the grid model rendered as pfSense REST API v2 objects."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import bandwidth, vpn

DOCUMENTATION = r"""
name: pfsense_gateway_objects
short_description: The pfSense objects of a gateway's VPN, caps, isolation and NAT
description:
  - Pure function of the grid model (already derived in C(grid_plan) and
    C(grid_vm_identities)) and the PKI's PEM texts. No I/O.
  - Returns a dict of object kinds (C(ca), C(certificate), C(crl), C(openvpn_server),
    C(openvpn_cso), C(limiter), C(alias), C(rule), C(nat_outbound)) for the C(pfsense_objects)
    module. A value C({__ref__: [kind, key, attr]}) names another object's server-side id.
  - Every description starts with the owner marker; the module manages only such objects.
  - Errors name the variable (C(grid_desktop_classes), C(grid_pool_services), ...).
positional: _input
options:
  _input:
    description: The inputs, see roles/pfsense_gateway/vars/main.yml (C(__pfsense_gateway_inputs)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Render the objects
  ansible.builtin.set_fact:
    objects: "{{ __pfsense_gateway_inputs | pfsense_gateway_objects }}"
"""

RETURN = r"""
_value:
  description: Object kind -> list of request bodies (references as C(__ref__)).
  type: dict
"""


#: pfSense alias and limiter names: letters, digits, underscore, at most 31 characters.
_NAME_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,30}\Z")
#: pfrest v2.4.0: an alias holds at most 128 entries.
ALIAS_MAX = 128
Obj = dict[str, Any]


def _ref(kind: str, key: str, attr: str) -> Obj:
    return {"__ref__": [kind, key, attr]}


def _name(text: str, var: str) -> str:
    if not _NAME_RE.match(text):
        raise ValueError(
            f"{var}: {text!r} is not a usable pfSense alias or limiter name (letters, digits "
            "and _ only, at most 31 characters); shorten pfsense_gateway_prefix or the name"
        )
    return text


def _alias(name: str, kind: str, entries: Sequence[str], descr: str, var: str) -> Obj:
    if not entries:
        raise ValueError(f"{var}: alias {name} would be empty")
    if len(entries) > ALIAS_MAX:
        raise ValueError(
            f"{var}: alias {name} would hold {len(entries)} entries; pfSense aliases hold at "
            f"most {ALIAS_MAX}"
        )
    return {"name": name, "type": kind, "descr": descr, "address": list(entries)}


def _cidr(address: str, var: str) -> str:
    try:
        return str(ipaddress.ip_network(address, strict=False))
    except ValueError:
        raise ValueError(f"{var}: {address!r} is not an address or network") from None


def _pki_objects(inputs: Mapping[str, Any], marker: str) -> dict[str, list[Obj]]:
    """The CA and server certificate of our PKI, and its CRL (the keys go as secrets)."""
    pki: Mapping[str, str] = inputs["pki"]
    ca_descr = f"{marker} {inputs['ca_cn']}"
    return {
        "ca": [{"descr": ca_descr, "crt": pki["ca_crt"]}],
        "certificate": [
            {
                "descr": f"{marker} server {inputs['endpoint']}",
                "crt": pki["server_crt"],
                "prv": {"__secret__": "server_key"},
                "type": "server",
            }
        ],
        "crl": [
            {
                "descr": f"{marker} CRL",
                "caref": _ref("ca", ca_descr, "refid"),
                "method": "existing",
                "text": pki["crl"],
            }
        ],
    }


def _openvpn_objects(inputs: Mapping[str, Any], marker: str) -> dict[str, list[Obj]]:
    """One server per VPN instance; one override per VM identity with its fixed address."""
    layout: Sequence[Mapping[str, Any]] = inputs["layout"]
    routes = [
        _cidr(a, "grid_pool_services") for s in inputs["pool_services"] for a in s["addresses"]
    ]
    routes += [_cidr(n, "grid_nat_allow") for n in inputs["nat_allow"]]
    ca_descr = f"{marker} {inputs['ca_cn']}"
    cert_descr = f"{marker} server {inputs['endpoint']}"
    servers = [
        {
            "description": f"{marker} {inst['name']}",
            "disable": False,
            "mode": "server_tls",
            "dev_mode": "tun",
            "protocol": "UDP4" if inputs["protocol"] == "udp" else "TCP4",
            "interface": inputs["wan_interface"],
            "local_port": str(inst["port"]),
            "use_tls": True,
            "tls": {"__secret__": "tls_crypt"},
            "tls_type": "crypt",
            "caref": _ref("ca", ca_descr, "refid"),
            "certref": _ref("certificate", cert_descr, "refid"),
            "dh_length": "none",
            "ecdh_curve": "prime256v1",
            "data_ciphers": ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"],
            "data_ciphers_fallback": "AES-256-GCM",
            "digest": "SHA256",
            "remote_cert_tls": True,
            "tunnel_network": inst["network"],
            "gwredir": False,
            "local_network": routes,
            "maxclients": int(inst["capacity"]) * int(inputs["slots"]),
            "topology": "subnet",
            "allow_compression": "no",
            "client2client": False,
            "duplicate_cn": False,
            "ping_method": "keepalive",
            "keepalive_interval": 10,
            "keepalive_timeout": 60,
            # A client without an override (a removed desktop) is refused, as on Linux.
            "custom_options": ["ccd-exclusive"],
            "verbosity_level": int(inputs["verbosity"]),
        }
        for inst in layout
    ]
    prefix_of = {inst["name"]: int(inst["prefix"]) for inst in layout}
    overrides = [
        {
            "common_name": ident["cn"],
            "description": f"{marker} {ident['desktop']} slot {ident['slot']}",
            "disable": False,
            "block": False,
            "server_list": [_ref("openvpn_server", f"{marker} {ident['instance']}", "vpnid")],
            "tunnel_network": f"{ident['address']}/{prefix_of[ident['instance']]}",
        }
        for ident in inputs["identities"]
    ]
    return {"openvpn_server": servers, "openvpn_cso": overrides}


def _limiters(
    inputs: Mapping[str, Any], marker: str
) -> tuple[list[Obj], dict[str, tuple[str, str]]]:
    """A limiter pair per cap class; the /32 mask gives each VM address its own pipe."""
    limiters, pipes = [], {}
    for cls_name, cap in vpn.cap_classes(inputs["classes"]).items():
        pin = _name(f"{inputs['prefix']}{cls_name}_in", "grid_bandwidth_classes")
        pout = _name(f"{inputs['prefix']}{cls_name}_out", "grid_bandwidth_classes")
        pipes[cls_name] = (pin, pout)
        label = f"grid_bandwidth_classes[{cls_name}]"
        for name, mask, bits, what in (
            (pin, "srcaddress", cap["up_bits"], "up, from each VM"),
            (pout, "dstaddress", cap["down_bits"], "down, to each VM"),
        ):
            limiters.append(
                {
                    "name": name,
                    "enabled": True,
                    "mask": mask,
                    "maskbits": 32,
                    "description": f"{marker} {cls_name} {what}",
                    "aqm": "droptail",
                    "sched": "wf2q+",
                    "bandwidth": [dict(bandwidth.pfsense_bandwidth(bits, name=label))],
                }
            )
    return limiters, pipes


def _class_sources(
    inputs: Mapping[str, Any], marker: str, classes: Sequence[str]
) -> tuple[list[Obj], list[tuple[str, str]]]:
    """Aliases of the VMs of desktops in another class than the default, and each class's
    source (alias) in rule order: specific classes first, the research network last."""
    default_class = str(inputs["default_class"])
    by_desktop: dict[str, list[str]] = {}
    for ident in inputs["identities"]:
        by_desktop.setdefault(str(ident["desktop"]), []).append(str(ident["address"]))
    # The model's one rule (cvmc.gridmodel.vpn.identity_classes): the class of an identity,
    # whose address the override pins for its certificate's common name.
    of_cn = vpn.identity_classes(
        inputs["identities"], inputs["desktop_classes"], classes, default_class
    )
    assigned = {str(i["desktop"]): of_cn[str(i["cn"])] for i in inputs["identities"]}
    aliases, sources = [], []
    for cls_name in classes:
        desktops = sorted(d for d, c in assigned.items() if c == cls_name)
        addresses = [a for d in desktops for a in by_desktop[d]]
        if cls_name != default_class and addresses:
            var = "grid_desktop_classes"
            alias = _name(f"{inputs['prefix']}cap_{cls_name}", var)
            descr = f"{marker} VMs of cap class {cls_name}"
            aliases.append(_alias(alias, "host", addresses, descr, var))
            sources.append((cls_name, alias))
    sources.append((default_class, f"{inputs['prefix']}research"))
    return aliases, sources


def _network_aliases(
    inputs: Mapping[str, Any], marker: str
) -> tuple[list[Obj], list[tuple[str, str, str, str]]]:
    """The research network, the campus LAN, the NAT allow list and the pool's services."""
    prefix = inputs["prefix"]
    research = _name(f"{prefix}research", "pfsense_gateway_prefix")
    campus = [_cidr(n, "grid_campus_networks") for n in inputs["campus_networks"]]
    aliases = [
        _alias(research, "network", [str(inputs["research_network"])],
               f"{marker} research network", "grid_research_network"),
        _alias(_name(f"{prefix}campus", "pfsense_gateway_prefix"), "network", campus,
               f"{marker} campus LAN, never reached", "grid_campus_networks"),
    ]  # fmt: skip
    if inputs["nat_allow"]:
        nat = [_cidr(n, "grid_nat_allow") for n in inputs["nat_allow"]]
        aliases.append(_alias(_name(f"{prefix}nat_allow", "pfsense_gateway_prefix"), "network",
                              nat, f"{marker} NAT allow list", "grid_nat_allow"))  # fmt: skip
    services = []
    for svc in inputs["pool_services"]:
        var = "grid_pool_services"
        base = _name(f"{prefix}pool_{svc['name']}".replace("-", "_"), var)
        hosts = [str(a) for a in svc["addresses"]]
        aliases.append(_alias(base, "host", hosts, f"{marker} pool service {svc['name']}", var))
        for proto in ("tcp", "udp"):
            if svc.get(proto):
                ports = _name(f"{base}_{proto}", var)
                descr = f"{marker} {svc['name']} {proto} ports"
                aliases.append(_alias(ports, "port", [str(p) for p in svc[proto]], descr, var))
                services.append((svc["name"], base, proto, ports))
    return aliases, services


def _rules(
    inputs: Mapping[str, Any],
    marker: str,
    sources: Sequence[tuple[str, str]],
    pipes: Mapping[str, tuple[str, str]],
    services: Sequence[tuple[str, str, str, str]],
) -> list[Obj]:
    """The rules, in order: the first that matches decides."""
    prefix, vpn_if, pool_if = inputs["prefix"], inputs["vpn_interface"], inputs["pool_interface"]
    rules: list[Obj] = []

    def rule(kind: str, iface: str, src: str, dst: str, descr: str, **extra: object) -> None:
        rules.append(
            {
                "type": kind,
                "interface": [iface],
                "ipprotocol": "inet",
                "source": src,
                "destination": dst,
                "descr": f"{marker} {descr}",
                "disabled": False,
                "log": kind != "pass",
                **extra,
            }
        )

    for cls_name, src in sources:
        pin, pout = pipes[cls_name]
        for svc, hosts, proto, ports in services:
            rule("pass", vpn_if, src, hosts, f"{cls_name}: {svc} {proto}", protocol=proto,
                 destination_port=ports, dnpipe=pin, pdnpipe=pout)  # fmt: skip
            rule("pass", pool_if, hosts, src, f"{cls_name}: {svc} {proto} to VMs", protocol=proto,
                 destination_port=ports, dnpipe=pout, pdnpipe=pin)  # fmt: skip
    research = f"{prefix}research"
    rule("block", vpn_if, research, f"{prefix}campus", "never the campus LAN")
    if inputs["nat_allow"]:
        for cls_name, src in sources:
            pin, pout = pipes[cls_name]
            rule("pass", vpn_if, src, f"{prefix}nat_allow", f"{cls_name}: NAT allow list",
                 dnpipe=pin, pdnpipe=pout)  # fmt: skip
    rule("block", vpn_if, research, "any", "anything else from the research network")
    return rules


def gateway_objects(inputs: Mapping[str, Any]) -> dict[str, list[Obj]]:
    """Every pfSense object of one gateway, from the grid model and the PKI."""
    marker = f"[{inputs['owner']}]"
    classes = [str(c["name"]) for c in inputs["classes"]]
    if str(inputs["default_class"]) not in classes:
        raise ValueError(
            f"grid_bandwidth_default_class: {inputs['default_class']!r} is no class of "
            "grid_bandwidth_classes"
        )
    limiters, pipes = _limiters(inputs, marker)
    aliases, services = _network_aliases(inputs, marker)
    class_aliases, sources = _class_sources(inputs, marker, classes)
    wan = inputs["wan_interface"]
    nat = [
        {
            "interface": wan,
            "source": str(inputs["research_network"]),
            "destination": _cidr(net, "grid_nat_allow"),
            "nonat": False,
            "target": f"{wan}:ip",
            "disabled": False,
            "descr": f"{marker} NAT to {net}",
        }
        for net in inputs["nat_allow"]
    ]
    return {
        **_pki_objects(inputs, marker),
        **_openvpn_objects(inputs, marker),
        "limiter": limiters,
        "alias": aliases + class_aliases,
        "rule": _rules(inputs, marker, sources, pipes, services),
        "nat_outbound": nat,
    }


@filter_errors
def pfsense_gateway_objects(inputs: Mapping[str, Any]) -> dict[str, list[Obj]]:
    return gateway_objects(inputs)


class FilterModule:
    """The pfsense_gateway role's filter."""

    def filters(self) -> dict[str, Callable[..., object]]:
        return {"pfsense_gateway_objects": pfsense_gateway_objects}
