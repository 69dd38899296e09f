"""The HTTP surface shared by agent and coordinator: the path prefix and the error codes."""

from __future__ import annotations

__all__ = ["API_PREFIX", "ERROR_CODES"]

API_PREFIX = "/api/v1"

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
