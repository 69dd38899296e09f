"""Request signing: the Authorization scheme and the bytes its HMAC covers.

The agent signs with these and the coordinator checks with them; the key derivation and the
constant-time comparison are the coordinator's (``cvmc.coordinator.domain.auth``).
"""

from __future__ import annotations

import hashlib

__all__ = ["AUTH_SCHEME", "string_to_sign"]

AUTH_SCHEME = "CVMC-HMAC-SHA256"


def string_to_sign(method: str, path: str, desktop_id: str, seq: int, body: bytes) -> bytes:
    """The bytes a request's HMAC covers: method, path, desktop, sequence and body digest."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([method.upper(), path, desktop_id, str(seq), digest]).encode()
