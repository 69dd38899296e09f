"""Wake-on-LAN on the desktop (``grid_wake_on_lan``), Linux and Windows alike.

The MAC address a heartbeat reports is that of the interface the desktop reaches the
coordinator through: a UDP socket "connected" to the coordinator's host (a route lookup; no
packet is sent) names the local address, and psutil's interface table names its link address.
A magic packet (``cvmc.gridmodel.wake.magic_packet``) goes to the limited broadcast address on
UDP port 9, which reaches the sending interface's own link (the coordinator only asks desktops
whose address shares the subnet with the sleeping one's).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import psutil

from cvmc.agent.ports import Waker
from cvmc.gridmodel.wake import magic_packet, parse_mac

__all__ = ["BROADCAST", "UdpWaker", "mac_of_address"]

LOG = logging.getLogger("cvmc.agent")

#: Where magic packets go: the limited broadcast, the discard port (the usual WoL port).
BROADCAST = ("255.255.255.255", 9)


def mac_of_address(interfaces: Mapping[str, Sequence[Any]], address: str) -> str | None:
    """The unicast MAC of the interface that holds ``address``, from a table shaped like
    ``psutil.net_if_addrs()`` (each item has ``family`` and ``address``); None if none does."""
    for items in interfaces.values():
        if any(item.family == socket.AF_INET and item.address == address for item in items):
            for item in items:
                if item.family == psutil.AF_LINK:
                    return parse_mac(item.address)
    return None


class UdpWaker(Waker):
    def __init__(self, coordinator_host: str, *, target: tuple[str, int] = BROADCAST) -> None:
        self.coordinator_host = coordinator_host
        self.target = target

    def mac(self) -> str | None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((self.coordinator_host, 443))
                local = probe.getsockname()[0]
            return mac_of_address(psutil.net_if_addrs(), local)
        except OSError:
            return None

    def wake(self, macs: Sequence[str]) -> int:
        sent = 0
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                for mac in macs:
                    sock.sendto(magic_packet(mac), self.target)
                    sent += 1
        except (OSError, ValueError) as exc:
            LOG.warning("wake-on-lan: %d of %d magic packets sent (%s)", sent, len(macs), exc)
        return sent
