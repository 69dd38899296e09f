"""One-time enrolment tokens: minted on the controller, checked by the coordinator.

A desktop role writes a token for each desktop it enrols; the coordinator checks it when the
agent calls ``POST /api/v1/enrol`` (docs/coordinator-api.md). Both sides derive the token from
one shared secret, ``grid_coordinator_enrol_key`` (ansible-vault), so minting needs no round
trip to the coordinator, which matters when a batch of 500 desktops joins at once.

A token is ``cvmc2.<generation>.<issued>.<expires>.<mac>``: ``issued`` and ``expires`` are
Unix seconds, and ``mac`` is the unpadded base64url HMAC-SHA256 of
``cvmc-enrol-v2\\n<desktop>\\n<generation>\\n<issued>\\n<expires>`` under the key, so none of
the fields can be changed without the key. A token is bound to one desktop name (a token
copied to another desktop is refused), expires (``grid_coordinator_enrol_token_ttl_s``, 300 s
to 90 days), and is single-use: the coordinator accepts only the desktop's next generation
(one above the last it accepted), once, and never for a revoked desktop. To enrol a desktop
again (a reinstalled machine), mint a token with the next generation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_GENERATION",
    "MAX_TTL_S",
    "MIN_KEY_LENGTH",
    "MIN_TTL_S",
    "PREFIX",
    "TokenClaims",
    "check_enrol_token",
    "enrol_token",
    "read_enrol_token",
    "reusable_token",
]

PREFIX = "cvmc2"
MIN_KEY_LENGTH = 32
MAX_GENERATION = 999_999
#: Token lifetime: ``grid_coordinator_enrol_token_ttl_s`` (its default and its range).
DEFAULT_TTL_S = 7 * 86_400
MIN_TTL_S = 300
MAX_TTL_S = 90 * 86_400
#: A token issued this far in the coordinator's future is refused (clock skew allowance).
MAX_SKEW_S = 300
#: The largest timestamp a token carries (the end of year 9999, UTC).
MAX_TIMESTAMP = 253_402_300_799
_DESKTOP = re.compile(r"\A[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?\Z")
_TOKEN = re.compile(
    r"\Acvmc2\.([1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,11})\.(0|[1-9][0-9]{0,11})\."
    r"([A-Za-z0-9_-]{43})\Z"
)


@dataclass(frozen=True)
class TokenClaims:
    """What an authentic token says: its generation, and when it was issued and expires."""

    generation: int
    issued_at: int
    expires_at: int


def _check_key(key: str, name: str) -> bytes:
    if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
        raise ValueError(
            f"{name}: the enrolment key must be a string of at least {MIN_KEY_LENGTH} characters"
        )
    return key.encode()


def _check_desktop(desktop: str, name: str) -> str:
    if not isinstance(desktop, str) or not _DESKTOP.match(desktop):
        raise ValueError(
            f"{name}: {desktop!r} is not a desktop name (letters, digits, . _ -; at most 253)"
        )
    return desktop


def _whole(value: object, name: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name} {value!r} is not an integer from {minimum} to {maximum}")
    return value


def _mac(key: bytes, desktop: str, claims: TokenClaims) -> str:
    message = (
        f"cvmc-enrol-v2\n{desktop}\n{claims.generation}\n{claims.issued_at}\n{claims.expires_at}"
    ).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def enrol_token(
    key: str,
    desktop: str,
    generation: int = 1,
    *,
    issued_at: int,
    ttl_s: int = DEFAULT_TTL_S,
    name: str = "grid_coordinator_enrol_key",
) -> str:
    """The one-time token that enrols ``desktop`` at ``generation``, valid for ``ttl_s``
    seconds from ``issued_at`` (Unix seconds)."""
    raw_key = _check_key(key, name)
    _check_desktop(desktop, f"{name}: desktop")
    _whole(generation, f"{name}: generation", 1, MAX_GENERATION)
    _whole(ttl_s, "grid_coordinator_enrol_token_ttl_s:", MIN_TTL_S, MAX_TTL_S)
    _whole(issued_at, f"{name}: issued_at", 0, MAX_TIMESTAMP - MAX_TTL_S)
    claims = TokenClaims(generation, issued_at, issued_at + ttl_s)
    return (
        f"{PREFIX}.{generation}.{claims.issued_at}.{claims.expires_at}."
        f"{_mac(raw_key, desktop, claims)}"
    )


def read_enrol_token(key: str, token: str, desktop: str) -> TokenClaims:
    """The claims of ``token`` if it was minted for ``desktop`` under ``key``.

    Raises ``ValueError`` for a malformed token, a token of another desktop or another key,
    or a lifetime outside 300 s to 90 days. Time is not checked: see ``check_enrol_token``.
    """
    raw_key = _check_key(key, "enrolment key")
    _check_desktop(desktop, "desktop")
    match = _TOKEN.match(token) if isinstance(token, str) else None
    if match is None:
        raise ValueError("token is not a cvmc2 enrolment token")
    claims = TokenClaims(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    if not hmac.compare_digest(match.group(4), _mac(raw_key, desktop, claims)):
        raise ValueError("token was not minted for this desktop under this key")
    if not MIN_TTL_S <= claims.expires_at - claims.issued_at <= MAX_TTL_S:
        raise ValueError("token's lifetime is outside 300 s to 90 days")
    return claims


def check_enrol_token(
    key: str, token: str, desktop: str, *, now: float, not_before: int = 0
) -> TokenClaims:
    """``read_enrol_token``, and the token is valid at ``now``: not expired, not issued in
    the future (beyond ``MAX_SKEW_S``), and not issued before ``not_before``
    (``grid_coordinator_enrol_tokens_not_before``: tokens minted before a backup was restored).

    The caller still has to accept only the desktop's next generation, once, and never for a
    revoked desktop.
    """
    claims = read_enrol_token(key, token, desktop)
    if now >= claims.expires_at:
        raise ValueError(f"token expired at {claims.expires_at}")
    if claims.issued_at > now + MAX_SKEW_S:
        raise ValueError(f"token was issued in the future ({claims.issued_at})")
    if claims.issued_at < not_before:
        raise ValueError(
            f"token was issued at {claims.issued_at}, before "
            f"grid_coordinator_enrol_tokens_not_before ({not_before})"
        )
    return claims


def reusable_token(
    key: str,
    token: str,
    desktop: str,
    generation: int,
    *,
    now: float,
    ttl_s: int,
    not_before: int = 0,
) -> bool:
    """Whether a desktop role may keep ``token`` instead of minting a new one: it is this
    desktop's token for ``generation`` under ``key``, its lifetime is at most ``ttl_s``, it
    was issued no earlier than ``not_before``, and at least half of ``ttl_s`` is left.
    Keeping it lets a second converge change nothing."""
    try:
        claims = read_enrol_token(key, token.strip(), desktop)
    except (ValueError, AttributeError):
        return False
    return (
        claims.generation == generation
        and not_before <= claims.issued_at <= now + MAX_SKEW_S
        and claims.expires_at - claims.issued_at <= ttl_s
        and claims.expires_at - now >= ttl_s / 2
    )
