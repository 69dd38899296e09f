"""The coordinator's HTTP contract, as data: JSON schemas, payload builders, reply parsers.

docs/coordinator-api.md shows the same schemas (a test checks they match), and the
coordinator service is written against them. Everything here is pure; the HTTP client is an
adapter (``cvmc.agent.adapters.http_coordinator``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cvmc.agent.domain.engine import HostState, Verdict
from cvmc.agent.domain.leases import DECLINE_REASONS, Decline, Lease, parse_lease
from cvmc.agent.domain.slots import Slot
from cvmc.gridmodel.classad import validate_vm_name

__all__ = [
    "API_PREFIX",
    "AUTH_SCHEME",
    "CATALOGUE_SCHEMA",
    "ENROL_REPLY_SCHEMA",
    "ENROL_REQUEST_SCHEMA",
    "ERROR_CODES",
    "ERROR_SCHEMA",
    "HEARTBEAT_REPLY_SCHEMA",
    "HEARTBEAT_SCHEMA",
    "MANIFEST_SCHEMA",
    "CatalogueEntry",
    "DesktopFacts",
    "HeartbeatReply",
    "Manifest",
    "build_heartbeat",
    "heartbeat_delay",
    "parse_catalogue",
    "parse_heartbeat_reply",
    "parse_manifest",
    "string_to_sign",
]

API_PREFIX = "/api/v1"
AUTH_SCHEME = "CVMC-HMAC-SHA256"
SHA256_HEX = re.compile(r"\A[0-9a-f]{64}\Z")
DISK_FORMATS: tuple[str, ...] = ("qcow2", "vdi", "vmdk", "raw")
SLOT_STATES: tuple[str, ...] = ("idle", "fetching", "starting", "running", "vacating", "stopped")

#: Error codes the coordinator answers with (``{"error": code, "message": ...}``).
ERROR_CODES: dict[str, tuple[int, str]] = {
    "malformed": (400, "the body is not valid JSON or does not match the schema"),
    "too_large": (413, "the body is larger than 64 KiB"),
    "invalid_token": (401, "the enrolment token is unknown, expired or already used"),
    "unknown_desktop": (401, "X-CVMC-Desktop names no enrolled desktop (re-enrol)"),
    "bad_signature": (401, "the Authorization HMAC does not match the request"),
    "replayed_sequence": (409, "X-CVMC-Seq is not above the last accepted one (see last_seq)"),
    "revoked": (403, "the desktop's credential was revoked; it must be enrolled again"),
    "rate_limited": (429, "too many requests; retry after Retry-After seconds"),
    "unavailable": (503, "the coordinator cannot serve now; retry with backoff"),
}

_NAME = {
    "type": "string",
    "pattern": r"^[a-z][a-z0-9]*([-._][a-z0-9]+)*$",
    "minLength": 3,
    "maxLength": 63,
}
_LEASE_ID = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}
_SHA = {"type": "string", "pattern": r"^[0-9a-f]{64}$"}
_COUNT = {"type": "integer", "minimum": 0}

ENROL_REQUEST_SCHEMA: dict[str, Any] = {
    "$id": "cvmc/enrol-request",
    "type": "object",
    "additionalProperties": False,
    "required": ["token", "desktop", "agent_version", "platform"],
    "properties": {
        "token": {"type": "string", "minLength": 16, "maxLength": 256},
        "desktop": {"type": "string", "minLength": 1, "maxLength": 253},
        "agent_version": {"type": "string", "maxLength": 32},
        "platform": {"enum": ["linux", "windows"]},
    },
}

ENROL_REPLY_SCHEMA: dict[str, Any] = {
    "$id": "cvmc/enrol-reply",
    "type": "object",
    "required": ["desktop_id", "credential"],
    "properties": {
        "desktop_id": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,64}$"},
        "credential": {"type": "string", "minLength": 43, "maxLength": 88},
        "heartbeat_s": {"type": "number", "minimum": 5},
    },
}

HEARTBEAT_SCHEMA: dict[str, Any] = {
    "$id": "cvmc/heartbeat",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "sent_at",
        "agent_version",
        "state",
        "resources",
        "capacity",
        "slots",
        "declined",
        "images",
    ],
    "properties": {
        "sent_at": {"type": "string", "format": "date-time"},
        "agent_version": {"type": "string", "maxLength": 32},
        "state": {
            "type": "object",
            "additionalProperties": False,
            "required": ["users", "may_run", "may_start", "policy"],
            "properties": {
                "users": _COUNT,
                "may_run": {"type": "boolean"},
                "may_start": {"type": "boolean"},
                "policy": {"type": "string", "maxLength": 300},
                "blackout": {"type": ["string", "null"]},
                "battery_percent": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
                "on_ac": {"type": ["boolean", "null"]},
            },
        },
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "cpus",
                "memory_total_mb",
                "memory_free_mb",
                "disk_free_mb",
                "hw_virt",
                "hypervisor",
                "hypervisor_version",
            ],
            "properties": {
                "cpus": {"type": "integer", "minimum": 1},
                "memory_total_mb": _COUNT,
                "memory_free_mb": _COUNT,
                "disk_free_mb": _COUNT,
                "hw_virt": {"type": "boolean"},
                "hw_virt_held_by": {"type": ["string", "null"]},
                "hypervisor": {"enum": ["qemu", "virtualbox"]},
                "hypervisor_version": {"type": "string", "maxLength": 64},
            },
        },
        "capacity": {
            "type": "object",
            "additionalProperties": False,
            "required": ["max_vms", "free_slots"],
            "properties": {"max_vms": {"type": "integer", "minimum": 1}, "free_slots": _COUNT},
        },
        "slots": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["slot", "state"],
                "properties": {
                    "slot": _COUNT,
                    "state": {"enum": list(SLOT_STATES)},
                    "vm_name": {"type": ["string", "null"]},
                    "lease_id": {"type": ["string", "null"]},
                    "cpus": _COUNT,
                    "memory_mb": _COUNT,
                    "since_s": {"type": "number", "minimum": 0},
                    "reason": {"type": "string", "maxLength": 300},
                },
            },
        },
        "declined": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["lease_id", "reason"],
                "properties": {
                    "lease_id": _LEASE_ID,
                    "reason": {"enum": list(DECLINE_REASONS)},
                    "detail": {"type": "string", "maxLength": 300},
                },
            },
        },
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["vm_name", "sha256"],
                "properties": {"vm_name": _NAME, "sha256": _SHA},
            },
        },
    },
}

HEARTBEAT_REPLY_SCHEMA: dict[str, Any] = {
    "$id": "cvmc/heartbeat-reply",
    "type": "object",
    "required": ["server_time", "heartbeat_s", "leases"],
    "properties": {
        "server_time": {"type": "string", "format": "date-time"},
        "heartbeat_s": {"type": "number", "minimum": 5, "maximum": 3600},
        "leases": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["lease_id", "vm_name", "cpus", "memory_mb", "ttl_s"],
                "properties": {
                    "lease_id": _LEASE_ID,
                    "vm_name": _NAME,
                    "cpus": {"type": "integer", "minimum": 1},
                    "memory_mb": {"type": "integer", "minimum": 1},
                    "ttl_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
                },
            },
        },
    },
}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$id": "cvmc/image-manifest",
    "type": "object",
    "required": ["format_version", "vm_name", "file", "size", "sha256", "disk_format"],
    "properties": {
        "format_version": {"const": 1},
        "vm_name": _NAME,
        "file": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$"},
        "size": {"type": "integer", "minimum": 1},
        "sha256": _SHA,
        "disk_format": {"enum": list(DISK_FORMATS)},
        "created": {"type": "string"},
    },
}

CATALOGUE_SCHEMA: dict[str, Any] = {
    "$id": "cvmc/catalogue",
    "type": "object",
    "required": ["images"],
    "properties": {
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["vm_name", "url", "manifest", "signature"],
                "properties": {
                    "vm_name": _NAME,
                    "url": {"type": "string", "minLength": 1},
                    "manifest": {"type": "string", "description": "the exact signed JSON text"},
                    "signature": {"type": "string", "description": "minisign .minisig text"},
                },
            },
        }
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "$id": "cvmc/error",
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"enum": list(ERROR_CODES)},
        "message": {"type": "string"},
        "last_seq": {"type": "integer", "minimum": 0},
    },
}


def string_to_sign(method: str, path: str, desktop_id: str, seq: int, body: bytes) -> bytes:
    """The bytes a request's HMAC covers: method, path, desktop, sequence and body digest."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([method.upper(), path, desktop_id, str(seq), digest]).encode()


@dataclass(frozen=True)
class HeartbeatReply:
    leases: tuple[Lease, ...]
    heartbeat_s: float
    server_time: str
    problems: tuple[Decline, ...]  # leases that did not parse, to decline as malformed


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
    return HeartbeatReply(
        tuple(leases), float(interval), str(raw.get("server_time", "")), tuple(problems)
    )


@dataclass(frozen=True)
class Manifest:
    """A signed image manifest: what the image must be, byte for byte."""

    vm_name: str
    file: str
    size: int
    sha256: str
    disk_format: str
    raw: bytes  # the exact signed bytes


def parse_manifest(raw: bytes) -> Manifest:
    """Parse manifest bytes (after their signature was checked); ValueError names the field."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"manifest: not JSON ({exc})") from None
    if not isinstance(data, Mapping) or data.get("format_version") != 1:
        raise ValueError("manifest.format_version: must be 1")
    vm_name = validate_vm_name(data.get("vm_name"), name="manifest.vm_name")
    file = data.get("file")
    if not isinstance(file, str) or not re.match(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z", file):
        raise ValueError(f"manifest.file: {file!r} is not a plain file name")
    size = data.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"manifest.size: {size!r} is not a positive number of bytes")
    sha = data.get("sha256")
    if not isinstance(sha, str) or not SHA256_HEX.match(sha):
        raise ValueError(f"manifest.sha256: {sha!r} is not 64 lowercase hex digits")
    fmt = data.get("disk_format")
    if fmt not in DISK_FORMATS:
        raise ValueError(f"manifest.disk_format: {fmt!r} is not one of {', '.join(DISK_FORMATS)}")
    return Manifest(vm_name, file, size, sha, str(fmt), raw)


@dataclass(frozen=True)
class CatalogueEntry:
    vm_name: str
    url: str
    manifest: bytes
    signature: str


def parse_catalogue(raw: object) -> list[CatalogueEntry]:
    """The catalogue's entries (signatures are checked later, by the image store)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("images"), list):
        raise ValueError("catalogue: expected an object with an 'images' list")
    entries = []
    for i, item in enumerate(raw["images"]):
        if not isinstance(item, Mapping):
            raise ValueError(f"catalogue.images[{i}]: not an object")
        for key in ("vm_name", "url", "manifest", "signature"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ValueError(f"catalogue.images[{i}].{key}: missing or not a string")
        vm_name = validate_vm_name(item["vm_name"], name=f"catalogue.images[{i}].vm_name")
        entries.append(
            CatalogueEntry(vm_name, item["url"], item["manifest"].encode(), item["signature"])
        )
    return entries


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
