"""The OpenAPI 3.1 document, built from the protocol's schemas (``cvmc.protocol``).

OpenAPI 3.1 uses JSON Schema 2020-12, so the protocol's schemas go in unchanged (minus their
``$id``, which would make a resolver look them up elsewhere).
"""

from __future__ import annotations

import copy
from typing import Any

from cvmc import __version__, protocol

__all__ = ["openapi_document"]


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
