"""The OpenAPI 3.1 document, built from the protocol's schemas (``cvmc.protocol``).

OpenAPI 3.1 uses JSON Schema 2020-12, so the protocol's schemas go in unchanged (minus their
``$id``, which would make a resolver look them up elsewhere).
"""

from __future__ import annotations

import copy
from typing import Any

from cvmc import __version__, protocol
from cvmc.coordinator.domain.grid import DEPARTMENT_PATTERN

__all__ = ["ADMIN_LIMIT_MAX", "ADMIN_OFFSET_MAX", "openapi_document"]


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(schema)
    out.pop("$id", None)
    return out


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _errors(*codes: str) -> dict[str, Any]:
    statuses = sorted({protocol.ERROR_CODES[code][0] for code in codes})
    return {
        str(status): {
            "description": ", ".join(c for c in codes if protocol.ERROR_CODES[c][0] == status),
            "content": _json("Error"),
        }
        for status in statuses
    }


_SIGNED = [
    {
        "name": "X-CVMC-Desktop",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
    },
    {
        "name": "X-CVMC-Seq",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": protocol.SEQ_PATTERN},
    },
    {
        "name": "Authorization",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "maxLength": 200},
    },
]
#: The admin API's query parameters (``cvmc.coordinator.adapters.web`` checks them).
ADMIN_LIMIT_MAX = 1000
ADMIN_OFFSET_MAX = 10_000_000
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": ADMIN_LIMIT_MAX},
}


def _admin_paths() -> dict[str, Any]:
    """The read-only admin API: JSON for operators (private, as ``/metrics`` is)."""

    def get(operation: str, what: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
        reply: dict[str, Any] = {"type": "object" if operation == "admin_summary" else "array"}
        return {
            "get": {
                "operationId": operation,
                "parameters": parameters,
                "responses": {
                    "200": {
                        "description": what,
                        "content": {"application/json": {"schema": reply}},
                    },
                    **_errors("malformed"),
                },
            }
        }

    return {
        "/admin/v1/summary": get("admin_summary", "what the dashboard shows", []),
        "/admin/v1/departments": get(
            "admin_departments", "desktops by state, leases and core-hours per department", []
        ),
        "/admin/v1/desktops": get(
            "admin_desktops",
            "enrolled desktops by name, a page of them",
            [
                {
                    "name": "department",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "pattern": DEPARTMENT_PATTERN},
                },
                _LIMIT,
                {
                    "name": "offset",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": ADMIN_OFFSET_MAX},
                },
            ],
        ),
        "/admin/v1/declines": get("admin_declines", "the latest declines, newest first", [_LIMIT]),
    }


_AUTH_ERRORS = ("malformed", "unknown_desktop", "bad_signature", "replayed_sequence", "revoked")


def openapi_document() -> dict[str, Any]:
    api = protocol.API_PREFIX
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cvmc coordinator",
            "version": __version__,
            "description": "docs/coordinator-api.md: enrolment, heartbeats, leases, catalogue.",
        },
        "paths": {
            f"{api}/enrol": {
                "post": {
                    "operationId": "enrol",
                    "requestBody": {"required": True, "content": _json("EnrolRequest")},
                    "responses": {
                        "201": {"description": "enrolled", "content": _json("EnrolReply")},
                        **_errors("malformed", "invalid_token", "too_large", "rate_limited"),
                    },
                }
            },
            f"{api}/heartbeat": {
                "post": {
                    "operationId": "heartbeat",
                    "parameters": _SIGNED,
                    "requestBody": {"required": True, "content": _json("Heartbeat")},
                    "responses": {
                        "200": {"description": "leases", "content": _json("HeartbeatReply")},
                        **_errors(*_AUTH_ERRORS, "too_large", "rate_limited"),
                    },
                }
            },
            f"{api}/images": {
                "get": {
                    "operationId": "catalogue",
                    "parameters": _SIGNED,
                    "responses": {
                        "200": {"description": "the catalogue", "content": _json("Catalogue")},
                        **_errors(*_AUTH_ERRORS, "rate_limited"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "responses": {
                        "200": {
                            "description": "the database answers",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {"status": {"const": "ok"}},
                                    }
                                }
                            },
                        },
                        **_errors("unavailable"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            **_admin_paths(),
            "/": {
                "get": {
                    "operationId": "dashboard",
                    "responses": {
                        "200": {
                            "description": "the dashboard",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "EnrolRequest": _schema(protocol.ENROL_REQUEST_SCHEMA),
                "EnrolReply": _schema(protocol.ENROL_REPLY_SCHEMA),
                "Heartbeat": _schema(protocol.HEARTBEAT_SCHEMA),
                "HeartbeatReply": _schema(protocol.HEARTBEAT_REPLY_SCHEMA),
                "Catalogue": _schema(protocol.CATALOGUE_SCHEMA),
                "Error": _schema(protocol.ERROR_SCHEMA),
            }
        },
    }
