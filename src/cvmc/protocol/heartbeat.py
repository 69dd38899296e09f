"""The heartbeat reply as the agent reads it: the leases it holds, and when to beat next.

Building a heartbeat from the agent's own state is the agent's business
(``cvmc.agent.domain.heartbeat``); its shape is ``HEARTBEAT_SCHEMA``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cvmc.protocol.leases import Decline, Lease, parse_lease
from cvmc.protocol.wake import parse_wake

__all__ = ["HeartbeatReply", "parse_heartbeat_reply"]


@dataclass(frozen=True)
class HeartbeatReply:
    leases: tuple[Lease, ...]
    heartbeat_s: float
    server_time: str
    problems: tuple[Decline, ...]  # leases that did not parse, to decline as malformed
    #: MAC addresses of sleeping desktops to wake with a magic packet (grid_wake_on_lan).
    wake: tuple[str, ...] = ()
    #: Why the reply's wake list was dropped (malformed), or "": the leases still count.
    wake_problem: str = ""


def parse_heartbeat_reply(raw: object, received: float) -> HeartbeatReply:
    """Parse a reply; a malformed lease is declined, a malformed reply raises ValueError."""
    if not isinstance(raw, Mapping):
        raise ValueError("heartbeat reply: not a JSON object")
    interval = raw.get("heartbeat_s")
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not (5 <= interval <= 3600)
    ):
        raise ValueError(f"heartbeat reply.heartbeat_s: {interval!r} is not 5 to 3600 seconds")
    items = raw.get("leases")
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ValueError("heartbeat reply.leases: not a list")
    leases: list[Lease] = []
    problems: list[Decline] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        try:
            lease = parse_lease(item, received, name=f"heartbeat reply.leases[{i}]")
        except ValueError as exc:
            lease_id = item.get("lease_id") if isinstance(item, Mapping) else None
            if isinstance(lease_id, str) and re.match(
                r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z", lease_id
            ):
                problems.append(Decline(lease_id, "malformed", str(exc)[:300]))
            continue
        if lease.lease_id in seen:
            continue
        seen.add(lease.lease_id)
        leases.append(lease)
    try:
        wake, wake_problem = parse_wake(raw.get("wake")), ""
    except ValueError as exc:
        wake, wake_problem = (), str(exc)[:300]
    return HeartbeatReply(
        tuple(leases),
        float(interval),
        str(raw.get("server_time", "")),
        tuple(problems),
        wake,
        wake_problem,
    )
