"""The JSON schemas of the coordinator's API, as data.

docs/coordinator-api.md shows the same schemas (a test checks they match); the coordinator
validates every request with them and builds its OpenAPI document from them.
"""

from __future__ import annotations

from typing import Any

from cvmc.gridmodel.wake import MAC_PATTERN
from cvmc.protocol.api import ERROR_CODES
from cvmc.protocol.images import CREATED_MAX_CHARS, DISK_FORMATS
from cvmc.protocol.leases import CONDOR_TOKEN, DECLINE_REASONS, MAX_CONDOR_TOKEN
from cvmc.protocol.values import MAX_SEQ, integer, text
from cvmc.protocol.wake import MAX_WAKE

__all__ = [
    "CATALOGUE_SCHEMA",
    "ENROL_REPLY_SCHEMA",
    "ENROL_REQUEST_SCHEMA",
    "ERROR_SCHEMA",
    "HEARTBEAT_REPLY_SCHEMA",
    "HEARTBEAT_SCHEMA",
    "MANIFEST_SCHEMA",
    "SLOT_STATES",
    "STARTED_SLOT_STATES",
]

#: The states a heartbeat reports for a slot (``cvmc.agent.domain.slots.SlotState``).
SLOT_STATES: tuple[str, ...] = (
    "idle",
    "fetching",
    "starting",
    "running",
    "vacating",
    "stopped",
    "suspending",
    "suspended",
    "resuming",
)
#: The slot states in which a lease's VM has started (the coordinator holds the lease as
#: running): a VM saved on its owner's return (``grid_policy.suspend_minutes``) still holds its
#: lease, and its job reconnects when it resumes.
STARTED_SLOT_STATES: tuple[str, ...] = (
    "running",
    "vacating",
    "suspending",
    "suspended",
    "resuming",
)

_NAME = {
    "type": "string",
    "pattern": r"^[a-z][a-z0-9]*([-._][a-z0-9]+)*$",
    "minLength": 3,
    "maxLength": 63,
}
_LEASE_ID = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}
_SHA = {"type": "string", "pattern": r"^[0-9a-f]{64}$"}


def _ecma(pattern: str) -> str:
    r"""A ``\A...\Z`` Python pattern as the ``^...$`` one a JSON schema holds."""
    if not (pattern.startswith(r"\A") and pattern.endswith(r"\Z")):
        raise ValueError(f"{pattern!r} is not anchored with \\A and \\Z")
    return f"^{pattern[2:-2]}$"


#: Every integer a desktop sends is bounded to what the store holds (``cvmc.protocol.values``).
_COUNT = integer()

ENROL_REQUEST_SCHEMA: dict[str, Any] = {
    "$id": "cvmc/enrol-request",
    "type": "object",
    "additionalProperties": False,
    "required": ["token", "desktop", "agent_version", "platform"],
    "properties": {
        "token": {**text(256), "minLength": 16},
        "desktop": {**text(253), "minLength": 1},
        "agent_version": text(32),
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
        "agent_version": text(32),
        "state": {
            "type": "object",
            "additionalProperties": False,
            "required": ["users", "may_run", "may_start", "policy"],
            "properties": {
                "users": _COUNT,
                "may_run": {"type": "boolean"},
                "may_start": {"type": "boolean"},
                "policy": text(300),
                "blackout": text(300, nullable=True),
                "battery_percent": {**integer(0, 100), "type": ["integer", "null"]},
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
                "cpus": integer(1),
                "memory_total_mb": _COUNT,
                "memory_free_mb": _COUNT,
                "disk_free_mb": _COUNT,
                "hw_virt": {"type": "boolean"},
                "hw_virt_held_by": text(300, nullable=True),
                "mac": {
                    "description": (
                        "The MAC address of the interface that reaches the coordinator, for "
                        "Wake-on-LAN (grid_wake_on_lan); null when unknown"
                    ),
                    "type": ["string", "null"],
                    "pattern": MAC_PATTERN,
                },
                "hypervisor": {"enum": ["qemu", "virtualbox"]},
                "hypervisor_version": text(64),
            },
        },
        "capacity": {
            "type": "object",
            "additionalProperties": False,
            "required": ["max_vms", "free_slots"],
            "properties": {"max_vms": integer(1), "free_slots": _COUNT},
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
                    "vm_name": text(63, nullable=True),
                    "lease_id": text(64, nullable=True),
                    "cpus": _COUNT,
                    "memory_mb": _COUNT,
                    "since_s": {"type": "number", "minimum": 0},
                    "reason": text(300),
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
                    "detail": text(300),
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
        "wake": {
            "description": (
                "MAC addresses of sleeping desktops on this desktop's subnet: send each a "
                "Wake-on-LAN magic packet (grid_wake_on_lan)"
            ),
            "type": "array",
            "maxItems": MAX_WAKE,
            "items": {"type": "string", "pattern": MAC_PATTERN},
        },
        "leases": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["lease_id", "vm_name", "cpus", "memory_mb", "ttl_s"],
                "properties": {
                    "lease_id": _LEASE_ID,
                    "vm_name": _NAME,
                    "cpus": integer(1),
                    "memory_mb": integer(1),
                    "ttl_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
                    "condor_token": {
                        "description": (
                            "The VM's own HTCondor token (a secret), minted for this start: "
                            "present only on a lease not yet started"
                        ),
                        "type": ["string", "null"],
                        "maxLength": MAX_CONDOR_TOKEN,
                        "pattern": _ecma(CONDOR_TOKEN.pattern),
                    },
                    "backfill": {
                        "description": (
                            "A backfill lease (grid_backfill): revoked by real demand, its VM "
                            "is powered off at once"
                        ),
                        "type": "boolean",
                    },
                },
            },
        },
    },
}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$id": "cvmc/image-manifest",
    "type": "object",
    "required": ["format_version", "vm_name", "file", "size", "sha256", "disk_format", "created"],
    "properties": {
        "format_version": {"const": 1},
        "vm_name": _NAME,
        "file": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$"},
        "size": {"type": "integer", "minimum": 1},
        "sha256": _SHA,
        "disk_format": {"enum": list(DISK_FORMATS)},
        "created": {"type": "string", "minLength": 1, "maxLength": CREATED_MAX_CHARS},
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
        "last_seq": integer(0, MAX_SEQ),
    },
}
