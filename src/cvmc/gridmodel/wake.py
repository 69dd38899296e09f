"""Wake-on-LAN (``grid_wake_on_lan``): waking sleeping desktops when demand exceeds supply.

``{"enabled": false, "subnet_prefix": 24, "max_per_round": 20}``. With ``enabled``, when jobs
want more VMs than the awake desktops can run, the coordinator asks an awake desktop on the
same subnet as a sleeping enrolled one (the address the coordinator saw each heartbeat come
from, within ``subnet_prefix``) to send that desktop's Wake-on-LAN magic packet, at most
``max_per_round`` desktops per allocation round (docs/coordinator.md, "Wake-on-LAN").

Also the magic packet and the MAC address format, which the agent (sender) and the coordinator
(which stores a desktop's reported MAC) share. The ``grid`` role's gate and the coordinator's
grid file parser both call :func:`parse_wake_on_lan`. Pure; every error is a ``ValueError``
whose message starts with the variable it is about.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cvmc.gridmodel import limits

__all__ = [
    "MAC",
    "MAC_PATTERN",
    "OFF",
    "WAKE_KEYS",
    "WakeOnLan",
    "magic_packet",
    "parse_mac",
    "parse_wake_on_lan",
]

WAKE_KEYS: tuple[str, ...] = ("enabled", "subnet_prefix", "max_per_round")
#: A unicast, non-zero MAC address as the protocol carries it: six lower-case hex pairs.
MAC_PATTERN = "^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"
MAC = re.compile(r"\A[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")


@dataclass(frozen=True)
class WakeOnLan:
    enabled: bool = False
    subnet_prefix: int = 24
    max_per_round: int = 20


#: The default: no desktop is ever woken.
OFF = WakeOnLan()


def parse_wake_on_lan(raw: object, *, name: str = "grid_wake_on_lan") -> WakeOnLan:
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"{name}: {raw!r} is not a mapping; give {{enabled: true or false, "
            "subnet_prefix: N, max_per_round: N}"
        )
    limits.refuse_unknown_keys(raw, WAKE_KEYS, name)
    return WakeOnLan(
        enabled=limits.flag(raw.get("enabled", OFF.enabled), name=f"{name}.enabled"),
        subnet_prefix=limits.whole_number(
            raw.get("subnet_prefix", OFF.subnet_prefix),
            name=f"{name}.subnet_prefix",
            minimum=16,
            maximum=30,
        ),
        max_per_round=limits.whole_number(
            raw.get("max_per_round", OFF.max_per_round),
            name=f"{name}.max_per_round",
            minimum=1,
            maximum=1000,
        ),
    )


def parse_mac(value: object) -> str | None:
    """``value`` as a unicast MAC address (``aa:bb:cc:dd:ee:ff``), or None when it is not one
    (malformed, all zeros, or a group address: a NIC never has one)."""
    if not isinstance(value, str):
        return None
    mac = value.strip().lower().replace("-", ":")
    if not MAC.match(mac) or mac == "00:00:00:00:00:00" or int(mac[:2], 16) & 1:
        return None
    return mac


def magic_packet(mac: str) -> bytes:
    """The Wake-on-LAN magic packet for ``mac``: six 0xFF bytes, then the address 16 times."""
    checked = parse_mac(mac)
    if checked is None:
        raise ValueError(f"{mac!r} is not a unicast MAC address")
    return b"\xff" * 6 + bytes.fromhex(checked.replace(":", "")) * 16
