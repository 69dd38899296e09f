"""cvmc.gridmodel.condor_token: research VMs' HTCondor IDTOKENs.

The signature is recomputed here independently of the module: with ``cryptography``'s HKDF
(itself checked against RFC 5869's test vector 1) and the scrambling and POOL doubling written
out from HTCondor's condor_auth_passwd.cpp."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cvmc.gridmodel.condor_token import (
    AUTHZ_LEVELS,
    hkdf_sha256,
    jwt_key,
    mint_token,
    token_claims,
    unscramble,
)
from cvmc.protocol.leases import CONDOR_TOKEN, MAX_CONDOR_TOKEN

KEY_FILE = b"Zq8Lx2WmPb7Ck4VnRt9Hs3Jd6Fg1Ya5E"  # as our roles write it: ASCII letters/digits
NOW = 1_800_000_000
JTI = "0123456789abcdef0123456789abcdef"
SCOPE = ["ADVERTISE_STARTD", "ADVERTISE_MASTER", "READ"]


def _hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _independent_key(key_file: bytes, key_id: str) -> bytes:
    xor = [0xDE, 0xAD, 0xBE, 0xEF]
    key = bytes(byte ^ xor[i % 4] for i, byte in enumerate(key_file))
    if key_id == "POOL":
        key = key + key
    return _hkdf(key, b"htcondor", b"master jwt", 32)


def _mint(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "key_id": "RESEARCH_VM",
        "identity": "research-vm@cm.grid.example.org",
        "issuer": "cm.grid.example.org",
        "authz": SCOPE,
        "lifetime_s": 43200,
        "now": NOW,
        "jti": JTI,
    }
    key_file = overrides.pop("key_file", KEY_FILE)
    args.update(overrides)
    return mint_token(key_file, **args)


def test_rfc5869_vector_1_for_both_hkdfs() -> None:
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = bytes.fromhex(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    assert _hkdf(ikm, salt, info, 42) == okm
    assert hkdf_sha256(ikm, salt=salt, info=info, length=42) == okm


def test_unscramble_is_xor_with_deadbeef_and_its_own_inverse() -> None:
    assert unscramble(b"\x00\x00\x00\x00\x00") == b"\xde\xad\xbe\xef\xde"
    assert unscramble(unscramble(KEY_FILE)) == KEY_FILE
    assert unscramble(b"") == b""


def test_token_header_claims_and_signature() -> None:
    token = _mint()
    assert len(token) <= MAX_CONDOR_TOKEN
    assert CONDOR_TOKEN.match(token)
    header_b64, payload_b64, signature_b64 = token.split(".")
    assert "=" not in token
    assert json.loads(_b64url_decode(header_b64)) == {"alg": "HS256", "kid": "RESEARCH_VM"}
    assert json.loads(_b64url_decode(payload_b64)) == {
        "sub": "research-vm@cm.grid.example.org",
        "iss": "cm.grid.example.org",
        "iat": NOW,
        "exp": NOW + 43200,
        "jti": JTI,
        "scope": "condor:/ADVERTISE_STARTD condor:/ADVERTISE_MASTER condor:/READ",
    }
    expected = hmac.new(
        _independent_key(KEY_FILE, "RESEARCH_VM"),
        f"{header_b64}.{payload_b64}".encode(),
        hashlib.sha256,
    ).digest()
    assert _b64url_decode(signature_b64) == expected
    decoded = token_claims(token, bound=CONDOR_TOKEN, max_chars=MAX_CONDOR_TOKEN)
    assert decoded["header"] == {"alg": "HS256", "kid": "RESEARCH_VM"}
    assert decoded["claims"]["sub"] == "research-vm@cm.grid.example.org"
    assert decoded["claims"]["exp"] - decoded["claims"]["iat"] == 43200


def test_only_the_pool_key_is_doubled() -> None:
    assert jwt_key(KEY_FILE, "POOL") == _independent_key(KEY_FILE, "POOL")
    assert jwt_key(KEY_FILE, "RESEARCH_VM") == _independent_key(KEY_FILE, "RESEARCH_VM")
    assert jwt_key(KEY_FILE, "POOL") != jwt_key(KEY_FILE, "RESEARCH_VM")
    # A key id spelled like POOL but not POOL is not doubled.
    assert jwt_key(KEY_FILE, "POOL2") == jwt_key(KEY_FILE, "RESEARCH_VM")
    pool = _mint(key_id="POOL")
    header_b64, payload_b64, signature_b64 = pool.split(".")
    expected = hmac.new(
        _independent_key(KEY_FILE, "POOL"), f"{header_b64}.{payload_b64}".encode(), hashlib.sha256
    ).digest()
    assert _b64url_decode(signature_b64) == expected


def test_a_different_key_or_jti_gives_a_different_token() -> None:
    assert _mint() != _mint(key_file=KEY_FILE[:-1] + b"X")
    assert _mint().split(".")[1] != _mint(jti="f" * 32).split(".")[1]


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"key_id": ""}, "key_id"),
        ({"key_id": "RESEARCH-VM"}, "key_id"),
        ({"key_id": "K" * 65}, "key_id"),
        ({"key_id": "../POOL"}, "key_id"),
        ({"identity": "research-vm"}, "identity"),
        ({"identity": "@cm.example.org"}, "identity"),
        ({"identity": "a@b@c"}, "identity"),
        ({"identity": "vm@cm example"}, "identity"),
        ({"issuer": ""}, "issuer"),
        ({"issuer": "cm example"}, "issuer"),
        ({"authz": []}, "authz"),
        ({"authz": "READ"}, "authz"),
        ({"authz": ["READ", "read"]}, "authz"),
        ({"authz": ["READ", "EVERYTHING"]}, "authz"),
        ({"authz": ["READ", "READ"]}, "authz"),
        ({"lifetime_s": 59}, "lifetime_s"),
        ({"lifetime_s": 7 * 24 * 3600 + 1}, "lifetime_s"),
        ({"lifetime_s": True}, "lifetime_s"),
        ({"lifetime_s": 3600.0}, "lifetime_s"),
        ({"now": 0}, "now"),
        ({"now": -1}, "now"),
        ({"jti": "short"}, "jti"),
        ({"jti": "G" * 32}, "jti"),
        ({"key_file": b""}, "key_file"),
        ({"key_file": b"k" * 4097}, "key_file"),
        ({"key_file": "a str, not bytes"}, "key_file"),
        ({"key_file": b"ab\xbe\xef"}, "key_file"),  # unscrambles to a NUL
    ],
)
def test_every_bad_argument_is_refused_by_name(override: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=rf"\A{name}:") as error:
        _mint(**override)
    assert KEY_FILE.decode() not in str(error.value)


def test_tokens_stay_within_the_wire_bounds_at_every_arguments_largest_value() -> None:
    assert CONDOR_TOKEN.match(_mint(key_file=b"k" * 4096, lifetime_s=60))
    largest = _mint(
        key_id="K" * 64,
        identity="u" * 64 + "@" + "d" * 253,
        issuer="i" * 253,
        authz=sorted(AUTHZ_LEVELS),
        lifetime_s=7 * 24 * 3600,
        now=2**40 - 1 - 7 * 24 * 3600,
        jti="f" * 64,
    )
    assert len(largest) <= MAX_CONDOR_TOKEN
    assert CONDOR_TOKEN.match(largest)
    assert token_claims(largest, bound=CONDOR_TOKEN, max_chars=MAX_CONDOR_TOKEN)["claims"][
        "iss"
    ] == ("i" * 253)


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", "ab.cd.e=", "x" * 5000, "!!.ab.cd", "YWJj.YWJj.YWJj", "e30.W10.YWJj"],
)
def test_token_claims_refuses_what_is_not_a_token(token: str) -> None:
    with pytest.raises(ValueError, match=r"\Atoken:"):
        token_claims(token, bound=CONDOR_TOKEN, max_chars=MAX_CONDOR_TOKEN)
