"""Per-desktop credentials and request signatures (docs/coordinator-api.md, Authentication).

The credential is derived, not stored: ``HMAC-SHA256(enrolment key, "cvmc-credential-v1\\n" +
desktop_id + "\\n" + salt)``. The database keeps only the random salt, so a leaked database
(or backup) signs nothing without the enrolment key, which lives in a root-owned file. Rotating
the enrolment key therefore also retires every credential: desktops enrol again with new tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from cvmc.protocol import AUTH_SCHEME, string_to_sign

__all__ = ["derive_credential", "signature_ok"]


def derive_credential(key: bytes, desktop_id: str, salt: bytes) -> bytes:
    message = b"cvmc-credential-v1\n" + desktop_id.encode() + b"\n" + salt
    return hmac.new(key, message, hashlib.sha256).digest()


def signature_ok(
    credential: bytes,
    authorization: str,
    *,
    method: str,
    path: str,
    desktop_id: str,
    seq: int,
    body: bytes,
) -> bool:
    """Whether ``authorization`` is this request's HMAC under ``credential``."""
    scheme, _, mac_b64 = authorization.partition(" ")
    if scheme != AUTH_SCHEME:
        return False
    try:
        mac = base64.b64decode(mac_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = hmac.new(
        credential, string_to_sign(method, path, desktop_id, seq, body), hashlib.sha256
    ).digest()
    return hmac.compare_digest(mac, expected)
