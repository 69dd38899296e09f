"""The wire contract between the desktop agent and the coordinator.

JSON schemas, error codes, the API prefix, request signing, leases and declines, heartbeat
replies, the values a number or a string may hold (``values``), image manifests and the
catalogue: everything both sides must agree on, and nothing
either side does with it. It stands on the standard library and ``cvmc.gridmodel`` only, so
that the agent (every desktop) and the coordinator (one server) each depend on the contract,
never on each other (tests/unit/test_package_boundaries.py checks it).

docs/coordinator-api.md shows the same schemas (a test checks they match). The agent's own
behaviour around the contract (building its heartbeat, backing off) is in ``cvmc.agent``.
"""

from __future__ import annotations

from cvmc.protocol.api import API_PREFIX, ERROR_CODES
from cvmc.protocol.auth import AUTH_SCHEME, string_to_sign
from cvmc.protocol.heartbeat import HeartbeatReply, parse_heartbeat_reply
from cvmc.protocol.images import (
    DISK_FORMATS,
    CatalogueEntry,
    Manifest,
    parse_catalogue,
    parse_manifest,
)
from cvmc.protocol.jsontext import MAX_JSON_BYTES, MAX_JSON_DEPTH, JsonTextError, loads_json
from cvmc.protocol.leases import DECLINE_REASONS, Decline, Lease, parse_lease
from cvmc.protocol.schemas import (
    CATALOGUE_SCHEMA,
    ENROL_REPLY_SCHEMA,
    ENROL_REQUEST_SCHEMA,
    ERROR_SCHEMA,
    HEARTBEAT_REPLY_SCHEMA,
    HEARTBEAT_SCHEMA,
    MANIFEST_SCHEMA,
    SLOT_STATES,
    STARTED_SLOT_STATES,
)
from cvmc.protocol.values import MAX_INT, MAX_SEQ, SEQ_PATTERN, TEXT_PATTERN, is_seq

__all__ = [
    "API_PREFIX",
    "AUTH_SCHEME",
    "CATALOGUE_SCHEMA",
    "DECLINE_REASONS",
    "DISK_FORMATS",
    "ENROL_REPLY_SCHEMA",
    "ENROL_REQUEST_SCHEMA",
    "ERROR_CODES",
    "ERROR_SCHEMA",
    "HEARTBEAT_REPLY_SCHEMA",
    "HEARTBEAT_SCHEMA",
    "MANIFEST_SCHEMA",
    "MAX_INT",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_SEQ",
    "SEQ_PATTERN",
    "SLOT_STATES",
    "STARTED_SLOT_STATES",
    "TEXT_PATTERN",
    "CatalogueEntry",
    "Decline",
    "HeartbeatReply",
    "JsonTextError",
    "Lease",
    "Manifest",
    "is_seq",
    "loads_json",
    "parse_catalogue",
    "parse_heartbeat_reply",
    "parse_lease",
    "parse_manifest",
    "string_to_sign",
]
