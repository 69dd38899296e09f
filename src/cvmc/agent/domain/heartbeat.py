"""The agent's side of the heartbeat: the body it sends, and when it sends the next one.

The body's shape is the protocol's ``HEARTBEAT_SCHEMA`` (``cvmc.protocol``); what goes in it
comes from the agent's own host snapshot, verdict and slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cvmc.agent.domain.engine import HostState, Verdict
from cvmc.agent.domain.slots import Slot
from cvmc.protocol.leases import Decline

__all__ = ["DesktopFacts", "build_heartbeat", "heartbeat_delay"]


def heartbeat_delay(base_s: float, failures: int, cap_s: float, rand: float) -> float:
    """Seconds to the next heartbeat.

    After a success (``failures == 0``) the base interval, jittered by +-10 % so 12,000
    desktops do not beat in step. After failures, exponential backoff capped at ``cap_s``
    with "equal jitter": between half and all of ``min(cap, base * 2**failures)``.
    ``rand`` is a uniform number in [0, 1).
    """
    if failures <= 0:
        return base_s * (0.9 + 0.2 * rand)
    ceiling = min(cap_s, base_s * float(2 ** min(failures, 32)))
    return ceiling / 2 + (ceiling / 2) * rand


@dataclass(frozen=True)
class DesktopFacts:
    """What a heartbeat says about the desktop beyond its slots."""

    disk_free_mb: int
    hypervisor: str
    hypervisor_version: str
    max_vms: int


def build_heartbeat(
    *,
    sent_at: str,
    agent_version: str,
    host: HostState,
    verdict: Verdict,
    facts: DesktopFacts,
    slots: Sequence[Slot],
    declined: Sequence[Decline],
    images: Sequence[tuple[str, str]],
    now: float,
) -> dict[str, Any]:
    """The heartbeat body (``HEARTBEAT_SCHEMA``) from the host snapshot, verdict and slots."""
    return {
        "sent_at": sent_at,
        "agent_version": agent_version,
        "state": {
            "users": host.users,
            "may_run": verdict.may_run,
            "may_start": verdict.may_start,
            "policy": verdict.reason[:300],
            "blackout": verdict.blackout,
            "battery_percent": host.battery_percent,
            "on_ac": host.on_ac,
        },
        "resources": {
            "cpus": host.cpus,
            "memory_total_mb": max(host.memory_total_mb, 0),
            "memory_free_mb": max(host.memory_free_mb, 0),
            "disk_free_mb": max(facts.disk_free_mb, 0),
            "hw_virt": host.hw_virt.usable,
            "hw_virt_held_by": host.hw_virt.held_by,
            "hypervisor": facts.hypervisor,
            "hypervisor_version": facts.hypervisor_version[:64],
        },
        "capacity": {
            "max_vms": facts.max_vms,
            "free_slots": sum(1 for slot in slots if str(slot.state) == "idle"),
        },
        "slots": [
            {
                "slot": slot.index,
                "state": str(slot.state),
                "vm_name": slot.vm_name,
                "lease_id": slot.lease.lease_id if slot.lease else None,
                "cpus": slot.cpus,
                "memory_mb": slot.memory_mb,
                "since_s": round(max(now - slot.since, 0.0), 1),
                "reason": slot.reason[:300],
            }
            for slot in slots
        ],
        "declined": [decline.as_json() for decline in declined],
        "images": [{"vm_name": name, "sha256": sha} for name, sha in images],
    }
