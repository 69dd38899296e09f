"""VPN identities and client configuration, derived from the address plan.

Every (desktop, slot) pair is one VPN identity: a client certificate whose common name is
``<desktop id>-vm<slot>``, a fixed tunnel address pushed by the gateway's client-config-dir,
and a bandwidth cap applied by the gateway when the client connects: the class of the identity
(:func:`identity_classes`, from ``grid_desktop_classes``), never one the client names. The
gateway roles, the agent's cloud-init seed and the tests all derive these from here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping, Sequence
from typing import TypedDict

from cvmc.gridmodel import addressing, bandwidth, catalogue

_CN_PATTERN = re.compile(r"\A[a-z0-9][a-z0-9-]{0,56}-vm[0-9]{1,2}\Z")
_HOST_PATTERN = re.compile(r"\A[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")
#: HTB minor id of the class that carries traffic no client class claims.
TC_DEFAULT_MINOR = 1


class VpnIdentity(TypedDict):
    """One VM slot's identity on the VPN."""

    cn: str
    desktop: str
    slot: int
    instance: str
    port: int
    address: str
    netmask: str
    server: str


class CapClass(TypedDict):
    """A bandwidth class rendered for tc, in bits per second and tc units."""

    name: str
    down_bits: int
    up_bits: int
    down: str
    up: str


def identity_cn(desktop: str, slot: int, *, name: str = "value") -> str:
    """The certificate common name of a desktop's VM slot: ``lab-desktop-1-vm0``."""
    cn = f"{addressing.desktop_id(desktop, name=name)}-vm{slot}"
    if not _CN_PATTERN.match(cn):
        raise ValueError(f"{name}: {desktop!r} slot {slot} gives {cn!r}, not a usable identity")
    return cn


def vpn_identities(
    registry: Sequence[Mapping[str, object]],
    layout: Sequence[Mapping[str, object]],
    slots: int,
    *,
    name: str = "grid_desktop_registry",
) -> list[VpnIdentity]:
    """Every VM identity of every registered desktop, sorted by common name."""
    identities: list[VpnIdentity] = []
    seen: dict[str, str] = {}
    for desktop, addresses in addressing.tunnel_addresses(
        registry, layout, slots, name=name
    ).items():
        for slot, tunnel in enumerate(addresses):
            cn = identity_cn(desktop, slot, name=f"{name}[{desktop}]")
            if cn in seen:
                raise ValueError(
                    f"{name}: {seen[cn]!r} and {desktop!r} both give the VPN identity {cn!r}"
                )
            seen[cn] = desktop
            identities.append(
                VpnIdentity(
                    cn=cn,
                    desktop=desktop,
                    slot=slot,
                    instance=tunnel["instance"],
                    port=tunnel["port"],
                    address=tunnel["address"],
                    netmask=tunnel["netmask"],
                    server=tunnel["server"],
                )
            )
    return sorted(identities, key=lambda ident: ident["cn"])


def tc_minor(address: str, slice_cidr: str, *, name: str = "value") -> int:
    """HTB class minor id of a tunnel address: its offset in its slice (2 .. 65534).

    Offsets 0 (network) and 1 (the server) never belong to a client, so minor 1 is free for the
    default class. Slices larger than /16 would overflow tc's 16-bit minor ids and are refused.
    """
    try:
        net = ipaddress.IPv4Network(slice_cidr, strict=True)
        addr = ipaddress.IPv4Address(address)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if net.prefixlen < 16:
        raise ValueError(
            f"{name}: slice {slice_cidr} is larger than /16; tc class ids hold 16 bits"
        )
    if addr not in net:
        raise ValueError(f"{name}: {address} is not inside its slice {slice_cidr}")
    offset = int(addr) - int(net.network_address)
    if offset < 2 or addr == net.broadcast_address:
        raise ValueError(f"{name}: {address} is the network, server or broadcast address")
    return offset


def cap_classes(
    classes: Sequence[Mapping[str, object]], *, name: str = "grid_bandwidth_classes"
) -> dict[str, CapClass]:
    """The bandwidth classes by name (``catalogue``'s rules), each cap rendered for tc."""
    return {
        cls.name: CapClass(
            name=cls.name,
            down_bits=cls.down_bits,
            up_bits=cls.up_bits,
            down=bandwidth.tc_rate(cls.down_bits),
            up=bandwidth.tc_rate(cls.up_bits),
        )
        for cls in catalogue.parse_classes(classes, name=name).values()
    }


def identity_classes(
    identities: Sequence[Mapping[str, object]],
    desktop_classes: object,
    classes: Collection[str],
    default_class: str,
    *,
    name: str = "grid_desktop_classes",
) -> dict[str, str]:
    """Each VM identity's cap class, by common name, from the model alone.

    ``desktop_classes`` (``grid_desktop_classes``) maps a registered desktop to a class; every
    VM identity of that desktop gets it, the others get ``default_class``. The gateways cap a
    VM by the identity its certificate proves, never by what the VM announces: a desktop's
    owner holds the slot's key and could claim any class.
    """
    if desktop_classes is None:
        desktop_classes = {}
    if not isinstance(desktop_classes, Mapping):
        raise ValueError(f"{name}: {desktop_classes!r} is not a mapping of desktop to class")
    if default_class not in classes:
        raise ValueError(
            f"grid_bandwidth_default_class: {default_class!r} is no class of grid_bandwidth_classes"
        )
    desktops = {str(ident["desktop"]) for ident in identities}
    for desktop, cls_name in desktop_classes.items():
        if not isinstance(cls_name, str) or cls_name not in classes:
            raise ValueError(
                f"{name}[{desktop}]: {cls_name!r} is no class of grid_bandwidth_classes"
            )
        if desktop not in desktops:
            raise ValueError(f"{name}: {desktop!r} is not in grid_desktop_registry")
    return {
        str(ident["cn"]): str(desktop_classes.get(str(ident["desktop"]), default_class))
        for ident in identities
    }


def client_config(
    *,
    remote: str,
    port: int,
    protocol: str,
    cap_class: str,
    directory: str = "/run/grid/vpn",
    name: str = "value",
) -> str:
    """The OpenVPN client configuration of one research VM.

    Certificates and keys are files in ``directory`` (written from the VM's cloud-init seed at
    boot, never baked into the image). The client announces its VM type's cap class through
    peer info (``UV_GRID_CLASS``); the gateway never uses it to choose the cap (it takes the
    identity's class from :func:`identity_classes`) and only logs a mismatch.
    """
    if not _HOST_PATTERN.match(remote):
        raise ValueError(f"{name}: remote {remote!r} is not a host name or address")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{name}: port {port!r} is not a port number")
    if protocol not in ("udp", "tcp"):
        raise ValueError(f"{name}: protocol {protocol!r} is not udp or tcp")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", cap_class):
        raise ValueError(f"{name}: cap class {cap_class!r} is not a class name")
    proto = "udp" if protocol == "udp" else "tcp-client"
    return "\n".join(
        [
            "# Written from the VM's cloud-init seed; see docs/research-vm-seed.md.",
            "client",
            "dev tun",
            f"proto {proto}",
            f"remote {remote} {port}",
            "nobind",
            "resolv-retry infinite",
            "persist-key",
            "persist-tun",
            "remote-cert-tls server",
            "tls-version-min 1.2",
            "data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
            f"ca {directory}/ca.crt",
            f"cert {directory}/client.crt",
            f"key {directory}/client.key",
            f"tls-crypt {directory}/tls-crypt.key",
            f"setenv UV_GRID_CLASS {cap_class}",
            "push-peer-info",
            # Over UDP, tell the gateway when the tunnel stops, so its cap goes at once.
            *(["explicit-exit-notify 1"] if protocol == "udp" else []),
            "verb 3",
            "",
        ]
    )
