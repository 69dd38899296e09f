"""One-time enrolment tokens: minted on the controller, checked by the coordinator.

A desktop role writes a token for each desktop it enrols; the coordinator checks it when the
agent calls ``POST /api/v1/enrol`` (docs/coordinator-api.md). Both sides derive the token from
one shared secret, ``grid_coordinator_enrol_key`` (ansible-vault), so minting needs no round
trip to the coordinator, which matters when a batch of 500 desktops joins at once.

A token is ``cvmc1.<generation>.<mac>``, where ``mac`` is the unpadded base64url
HMAC-SHA256 of ``cvmc-enrol-v1\\n<desktop>\\n<generation>`` under the key. It is bound to
one desktop name, so a token copied to another desktop is refused. It is single-use: the
coordinator records each ``(desktop, generation)`` it accepted and refuses it a second time.
To enrol a desktop again (a reinstalled machine), mint a token with a higher generation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

PREFIX = "cvmc1"
MIN_KEY_LENGTH = 32
MAX_GENERATION = 999_999
_DESKTOP = re.compile(r"\A[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?\Z")
_TOKEN = re.compile(r"\Acvmc1\.([1-9][0-9]{0,5})\.([A-Za-z0-9_-]{43})\Z")


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


def _mac(key: bytes, desktop: str, generation: int) -> str:
    message = f"cvmc-enrol-v1\n{desktop}\n{generation}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def enrol_token(
    key: str, desktop: str, generation: int = 1, *, name: str = "grid_coordinator_enrol_key"
) -> str:
    """The one-time token that enrols ``desktop`` (at ``generation``) with the coordinator."""
    raw_key = _check_key(key, name)
    _check_desktop(desktop, f"{name}: desktop")
    if (
        isinstance(generation, bool)
        or not isinstance(generation, int)
        or not 1 <= generation <= MAX_GENERATION
    ):
        raise ValueError(
            f"{name}: generation {generation!r} is not an integer from 1 to {MAX_GENERATION}"
        )
    return f"{PREFIX}.{generation}.{_mac(raw_key, desktop, generation)}"


def verify_enrol_token(key: str, token: str, desktop: str) -> int:
    """Return the token's generation if ``token`` was minted for ``desktop`` under ``key``.

    Raises ``ValueError`` for a malformed token, a token of another desktop or another key.
    The caller still has to refuse a ``(desktop, generation)`` it has seen before.
    """
    raw_key = _check_key(key, "enrolment key")
    _check_desktop(desktop, "desktop")
    match = _TOKEN.match(token) if isinstance(token, str) else None
    if match is None:
        raise ValueError("token is not a cvmc1 enrolment token")
    generation = int(match.group(1))
    if not hmac.compare_digest(match.group(2), _mac(raw_key, desktop, generation)):
        raise ValueError("token was not minted for this desktop under this key")
    return generation
