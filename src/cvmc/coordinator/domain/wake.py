"""Wake-on-LAN (``grid_wake_on_lan``): which sleeping desktops to wake, and who wakes them.

A pure function of the round's snapshot (docs/coordinator.md, "Wake-on-LAN"):

- Only when jobs want more VMs than the round could lease (``unmet`` VMs), and at most
  ``ceil(unmet / max_vms_per_desktop)`` and ``max_per_round`` desktops per round.
- A *sleeper* is an enrolled desktop that is not online (no heartbeat within
  ``leases.offline_after_s``), was last heard from within ``WAKE_WITHIN_S``, reported a MAC
  address, and could take work (VT-x when the policy requires it). It is not asked again
  within ``WAKE_RETRY_S`` of the last time.
- Its *waker* is an online desktop whose address, as the coordinator saw its heartbeats come
  from, shares ``subnet_prefix`` bits with the address the sleeper last came from (a magic
  packet is a broadcast on one link: IPv4 only). Among those, the one asked least in this
  round, then by id. A sleeper without one is left asleep.
- Sleepers last seen most recently go first (the likeliest to wake), then by id.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cvmc.coordinator.domain.leases import DesktopView
from cvmc.gridmodel.wake import WakeOnLan

__all__ = ["WAKE_RETRY_S", "WAKE_WITHIN_S", "Wake", "client_address", "plan_wakes"]

#: A desktop not heard from for longer is taken as gone (unplugged, retired), not asleep.
WAKE_WITHIN_S = 7 * 86400.0
#: A sleeper is asked to be woken at most once in this long.
WAKE_RETRY_S = 900.0


@dataclass(frozen=True)
class Wake:
    sleeper_id: str
    waker_id: str
    mac: str


def client_address(address: str | None) -> str | None:
    """A client address as the store keeps it: an IP address, IPv4-mapped IPv6 as IPv4;
    None for anything else (a test client's name, no address)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def _network(address: str | None, prefix: int) -> ipaddress.IPv4Network | None:
    """The IPv4 network of ``prefix`` bits around a stored address; None for IPv6 (a magic
    packet is an IPv4 broadcast) or no address."""
    ip = client_address(address)
    if ip is None or ":" in ip:
        return None
    return ipaddress.IPv4Network(f"{ip}/{prefix}", strict=False)


def plan_wakes(
    desktops: Sequence[DesktopView],
    *,
    unmet: int,
    settings: WakeOnLan,
    max_vms_per_desktop: int,
    asked: Mapping[str, float],
    now: float,
    require_hw_virt: bool = True,
) -> list[Wake]:
    """The wakes for this round; ``asked``: sleeper id -> when it was last asked."""
    if not settings.enabled or unmet <= 0:
        return []
    budget = min(settings.max_per_round, -(-unmet // max(max_vms_per_desktop, 1)))
    wakers: dict[ipaddress.IPv4Network, list[str]] = {}
    for desk in desktops:
        network = _network(desk.address, settings.subnet_prefix)
        if desk.online and not desk.revoked and network is not None:
            wakers.setdefault(network, []).append(desk.id)
    sleepers = sorted(
        (
            desk
            for desk in desktops
            if not desk.online
            and not desk.revoked
            and desk.mac
            and desk.last_seen is not None
            and now - desk.last_seen <= WAKE_WITHIN_S
            and now - asked.get(desk.id, float("-inf")) >= WAKE_RETRY_S
            and (desk.hw_virt or not require_hw_virt)
        ),
        key=lambda desk: (-(desk.last_seen or 0.0), desk.id),
    )
    load: Counter[str] = Counter()
    out: list[Wake] = []
    for desk in sleepers:
        if len(out) >= budget:
            break
        network = _network(desk.address, settings.subnet_prefix)
        candidates = wakers.get(network) if network is not None else None
        if not candidates or desk.mac is None:
            continue
        waker = min(candidates, key=lambda waker_id: (load[waker_id], waker_id))
        load[waker] += 1
        out.append(Wake(desk.id, waker, desk.mac))
    return out
