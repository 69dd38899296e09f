"""HTCondor IDTOKENs: mint a narrow research-VM token from a signing key file.

An IDTOKEN is a JWS in compact form, signed with HS256. HTCondor derives the HMAC key from the
signing key file in its ``SEC_PASSWORD_DIRECTORY`` (condor_auth_passwd.cpp):

* the file's bytes are *scrambled*: each byte XORed with ``0xDE 0xAD 0xBE 0xEF`` repeating;
* only for the key named ``POOL`` is the unscrambled key doubled (``key + key``);
* ``jwt_key = HKDF-SHA256(ikm=key, salt=b"htcondor", info=b"master jwt", length=32)``.

The header is ``{"alg":"HS256","kid":<key id>}``; the claims are ``sub`` (the identity),
``iss`` (the trust domain), ``iat``, ``exp``, ``jti`` and ``scope`` (``condor:/<level>``
separated by spaces). The collector finds the key by ``kid``.

Every function is pure (standard library only, no I/O) and raises ``ValueError`` whose message
starts with the name of the argument being checked; the key's bytes never appear in a message.

The bounds of a token on the wire, ``MAX_CONDOR_TOKEN`` and ``CONDOR_TOKEN``, live here (the
protocol's leases take them from here, and the minting program imports this module only, so it
starts fast on every connection). :func:`mint_token`'s output stays within them by construction
(tests/unit/test_condor_token.py checks it at every argument's largest value), and the minting
program checks each token against them before writing it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "AUTHZ_LEVELS",
    "MAX_KEY_FILE",
    "MAX_LIFETIME_S",
    "MIN_LIFETIME_S",
    "hkdf_sha256",
    "jwt_key",
    "mint_token",
    "token_claims",
    "unscramble",
]

#: The HTCondor token (IDTOKEN, a JWS in compact form) a lease may carry for its VM: the
#: coordinator mints one per VM start (docs/htcondor.md, "Research VMs' tokens").
MAX_CONDOR_TOKEN = 4096
CONDOR_TOKEN = re.compile(
    r"\A[A-Za-z0-9_-]{2,1024}\.[A-Za-z0-9_-]{2,2048}\.[A-Za-z0-9_-]{2,1024}\Z"
)

_SCRAMBLE = bytes((0xDE, 0xAD, 0xBE, 0xEF))
MAX_KEY_FILE = 4096
MIN_LIFETIME_S = 60
MAX_LIFETIME_S = 7 * 24 * 3600
#: HTCondor's authorization levels (condor_auth_passwd / DCpermission), the scopes a token
#: may carry as ``condor:/<level>``.
AUTHZ_LEVELS: frozenset[str] = frozenset(
    {
        "ALLOW",
        "READ",
        "WRITE",
        "NEGOTIATOR",
        "ADMINISTRATOR",
        "OWNER",
        "CONFIG",
        "DAEMON",
        "SOAP",
        "DEFAULT",
        "CLIENT",
        "ADVERTISE_STARTD",
        "ADVERTISE_SCHEDD",
        "ADVERTISE_MASTER",
    }
)
_KEY_ID = re.compile(r"\A[A-Za-z0-9_]{1,64}\Z")
_IDENTITY = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}@[A-Za-z0-9][A-Za-z0-9.-]{0,252}\Z")
_ISSUER = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9.:-]{0,252}\Z")
_JTI = re.compile(r"\A[0-9a-f]{16,64}\Z")
_MAX_NOW = 2**40


def unscramble(data: bytes) -> bytes:
    """Undo HTCondor's scrambling of a password file (XOR with 0xDEADBEEF repeating)."""
    return bytes(b ^ _SCRAMBLE[i % 4] for i, b in enumerate(data))


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF (RFC 5869) with SHA-256."""
    if not 1 <= length <= 255 * 32:
        raise ValueError("length: must be 1..8160")
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((counter,)), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def jwt_key(key_file: bytes, key_id: str) -> bytes:
    """The HS256 key HTCondor derives from the key file named ``key_id``."""
    _check_key_id(key_id)
    if not isinstance(key_file, bytes) or not 1 <= len(key_file) <= MAX_KEY_FILE:
        raise ValueError(f"key_file: must be 1..{MAX_KEY_FILE} bytes")
    key = unscramble(key_file)
    if b"\0" in key:
        # HTCondor reads the key as a C string: it would silently cut it at the NUL.
        raise ValueError("key_file: its unscrambled form contains a NUL byte")
    if key_id == "POOL":
        key += key
    return hkdf_sha256(key, salt=b"htcondor", info=b"master jwt", length=32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_key_id(key_id: str) -> None:
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise ValueError("key_id: must be 1..64 of A-Z a-z 0-9 _")


def mint_token(
    key_file: bytes,
    *,
    key_id: str,
    identity: str,
    issuer: str,
    authz: Sequence[str],
    lifetime_s: int,
    now: int,
    jti: str,
) -> str:
    """A signed IDTOKEN for ``identity``, valid from ``now`` for ``lifetime_s`` seconds."""
    _check_key_id(key_id)
    if not isinstance(identity, str) or not _IDENTITY.match(identity):
        raise ValueError("identity: must be user@domain")
    if not isinstance(issuer, str) or not _ISSUER.match(issuer):
        raise ValueError("issuer: must be a trust domain (host name)")
    if isinstance(authz, str) or not isinstance(authz, Sequence) or not authz:
        raise ValueError("authz: must be a non-empty list of HTCondor authorization levels")
    for level in authz:
        if level not in AUTHZ_LEVELS:
            raise ValueError(f"authz: {str(level)[:40]!r} is not an HTCondor authorization level")
    if len(set(authz)) != len(authz):
        raise ValueError("authz: lists a level twice")
    if (
        isinstance(lifetime_s, bool)
        or not isinstance(lifetime_s, int)
        or not MIN_LIFETIME_S <= lifetime_s <= MAX_LIFETIME_S
    ):
        raise ValueError(f"lifetime_s: must be an integer {MIN_LIFETIME_S}..{MAX_LIFETIME_S}")
    if isinstance(now, bool) or not isinstance(now, int) or not 0 < now < _MAX_NOW:
        raise ValueError("now: must be a positive integer (seconds since the epoch)")
    if not isinstance(jti, str) or not _JTI.match(jti):
        raise ValueError("jti: must be 16..64 lowercase hex digits")
    signing_key = jwt_key(key_file, key_id)
    header = {"alg": "HS256", "kid": key_id}
    claims = {
        "exp": now + lifetime_s,
        "iat": now,
        "iss": issuer,
        "jti": jti,
        "scope": " ".join(f"condor:/{level}" for level in authz),
        "sub": identity,
    }
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    )
    signature = hmac.new(signing_key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def token_claims(
    token: str, *, bound: re.Pattern[str] = CONDOR_TOKEN, max_chars: int = MAX_CONDOR_TOKEN
) -> dict[str, Any]:
    """``{"header": ..., "claims": ...}`` of ``token``, decoded but *not* verified.

    ``bound`` and ``max_chars`` are the wire's bounds (``CONDOR_TOKEN`` and
    ``MAX_CONDOR_TOKEN`` by default); a token outside them is refused before anything is decoded.
    """
    if (
        not isinstance(token, str)
        or len(token) > max_chars
        or token.count(".") != 2
        or not bound.match(token)
    ):
        raise ValueError("token: not a compact JWS within the wire's bounds")
    header_b64, payload_b64, _ = token.split(".")
    try:
        header = json.loads(_unb64(header_b64))
        claims = json.loads(_unb64(payload_b64))
    except ValueError as error:
        raise ValueError("token: header or payload is not base64url JSON") from error
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("token: header and payload must be JSON objects")
    return {"header": header, "claims": claims}
