"""Leases: the coordinator's permission to start one VM of a type, with cpus and memory.

A heartbeat reply lists *all* of the desktop's current leases (level-triggered, so a lost
or replayed reply never starts a VM twice): new ones to start, and the ones that keep
running VMs alive. A lease may be *started* only within ``ttl_s`` of its receipt, measured on
the monotonic clock, so a wall-clock jump neither extends nor shortens it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cvmc.gridmodel.classad import validate_vm_name
from cvmc.gridmodel.condor_token import CONDOR_TOKEN, MAX_CONDOR_TOKEN

__all__ = [
    "CONDOR_TOKEN",
    "DECLINE_REASONS",
    "MAX_CONDOR_TOKEN",
    "Decline",
    "Lease",
    "parse_lease",
]

LEASE_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
MAX_TTL_S = 24 * 3600

#: Why an agent declines a lease; the coordinator API documents each.
DECLINE_REASONS: tuple[str, ...] = (
    "malformed",
    "unknown_vm_type",
    "expired",
    "policy",
    "max_vms",
    "memory",
    "hw_virt",
    "no_identity",
    "image_unavailable",
    "signature_invalid",
    "image_rollback",
    "disk_full",
    "start_failed",
)


@dataclass(frozen=True)
class Lease:
    lease_id: str
    vm_name: str
    cpus: int
    memory_mb: int
    ttl_s: float
    received: float  # monotonic seconds
    #: The VM's own HTCondor token (a secret): present only on a lease not yet started, minted
    #: by the coordinator for this start. Never in a repr, so never in a log line.
    condor_token: str | None = field(default=None, repr=False)
    #: A backfill lease (``grid_backfill``): when it is revoked (real demand wants the desktop),
    #: its VM is powered off at once instead of shut down.
    backfill: bool = False

    def expired(self, now: float) -> bool:
        return now >= self.received + self.ttl_s


@dataclass(frozen=True)
class Decline:
    lease_id: str
    reason: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"lease_id": self.lease_id, "reason": self.reason, "detail": self.detail}


def _positive(raw: Mapping[str, Any], key: str, name: str, limit: int) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ValueError(f"{name}.{key}: {value!r} is not a whole number from 1 to {limit}")
    return value


def parse_lease(raw: object, received: float, *, name: str = "lease") -> Lease:
    """Validate one lease object from a reply; ``ValueError`` names the field."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{name}: not an object")
    lease_id = raw.get("lease_id")
    if not isinstance(lease_id, str) or not LEASE_ID.match(lease_id):
        raise ValueError(f"{name}.lease_id: {lease_id!r} is not a lease id")
    name = f"lease {lease_id}"
    vm_name = validate_vm_name(raw.get("vm_name"), name=f"{name}.vm_name")
    ttl = raw.get("ttl_s")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL_S:
        raise ValueError(f"{name}.ttl_s: {ttl!r} is not a number of seconds up to {MAX_TTL_S}")
    token = raw.get("condor_token")
    # The value is a secret (or garbage in its place): an error names its type or length, never it.
    if token is not None and not isinstance(token, str):
        raise ValueError(f"{name}.condor_token: a {type(token).__name__} is not a string or null")
    if token is not None and (len(token) > MAX_CONDOR_TOKEN or not CONDOR_TOKEN.match(token)):
        raise ValueError(
            f"{name}.condor_token: a string of {len(token)} characters is not an HTCondor token "
            f"(a JWS in compact form, at most {MAX_CONDOR_TOKEN} characters)"
        )
    backfill = raw.get("backfill", False)
    if not isinstance(backfill, bool):
        raise ValueError(f"{name}.backfill: {backfill!r} is not true or false")
    return Lease(
        lease_id=lease_id,
        vm_name=vm_name,
        cpus=_positive(raw, "cpus", name, 256),
        memory_mb=_positive(raw, "memory_mb", name, 4 * 1024 * 1024),
        ttl_s=float(ttl),
        received=received,
        condor_token=token,
        backfill=backfill,
    )
