"""A lease's HTCondor token on the wire (``cvmc.protocol.leases``): what ``parse_lease`` takes,
what it refuses, and that neither a refusal nor a repr ever shows the token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

import jsonschema
import pytest

from cvmc import protocol
from cvmc.protocol.leases import CONDOR_TOKEN, MAX_CONDOR_TOKEN, parse_lease

BOINC = "its-u11-boinc-20120415"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def idtoken(sub: str = "research-vm@lab.example", *, jti: str | None = None) -> str:
    """An HS256 JWS in compact form with an HTCondor IDTOKEN's header and claims, signed with
    a random key: the shape ``condor_token_create`` writes."""
    header = {"alg": "HS256", "kid": "RESEARCH_VM"}
    claims = {
        "sub": sub,
        "iss": "lab.example",
        "iat": 1_795_000_000,
        "exp": 1_795_043_200,
        "jti": jti or secrets.token_hex(16),
        "scope": "condor:/ADVERTISE_STARTD condor:/ADVERTISE_MASTER condor:/READ",
    }
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    mac = hmac.new(secrets.token_bytes(32), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(mac)}"


def lease(**kw: Any) -> dict[str, Any]:
    return {"lease_id": "l-1", "vm_name": BOINC, "cpus": 1, "memory_mb": 512, "ttl_s": 300, **kw}


def test_a_lease_carries_a_valid_token() -> None:
    token = idtoken()
    parsed = parse_lease(lease(condor_token=token), 3.0)
    assert parsed.condor_token == token
    assert (parsed.lease_id, parsed.vm_name, parsed.received) == ("l-1", BOINC, 3.0)


@pytest.mark.parametrize("raw", [lease(), lease(condor_token=None)], ids=["absent", "null"])
def test_a_lease_without_a_token_is_valid(raw: dict[str, Any]) -> None:
    assert parse_lease(raw, 0.0).condor_token is None


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        # Three parts, each within CONDOR_TOKEN's bounds, but over MAX_CONDOR_TOKEN in all.
        ("a" * 1024 + "." + "b" * 2048 + "." + "c" * 1024, None),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig+nature", None),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0", None),
        ("eyJhbGciOiJIUzI1NiJ9.e yJ.c2ln", None),
        ("eyJhbGciOiJIUzI1NiJ9.eyJ.c2ln\n", None),
        ("", None),
        (12345, "a int is not a string or null"),
        (["eyJ.eyJ.c2ln"], "a list is not a string or null"),
        ({"token": "eyJ.eyJ.c2ln"}, "a dict is not a string or null"),
        (True, "a bool is not a string or null"),
    ],
    ids=["long", "plus", "two-parts", "space", "newline", "empty", "int", "list", "obj", "bool"],
)
def test_a_bad_token_is_refused_without_echoing_it(token: object, problem: str | None) -> None:
    if isinstance(token, str):  # a string is named by its length only
        problem = f"a string of {len(token)} characters is not an HTCondor token"
    assert problem is not None
    with pytest.raises(ValueError, match=r"^lease l-1\.condor_token: ") as caught:
        parse_lease(lease(condor_token=token), 0.0)
    message = str(caught.value)
    assert problem in message
    assert "eyJ" not in message  # no piece of the token (or of the value in its place)
    assert "c2ln" not in message


def test_the_bounds_are_the_documented_ones() -> None:
    longest_ok = "a" * 1023 + "." + "b" * 2047 + "." + "c" * 1024
    assert len(longest_ok) == MAX_CONDOR_TOKEN
    assert parse_lease(lease(condor_token=longest_ok), 0.0).condor_token == longest_ok
    one_more = "a" + longest_ok
    assert CONDOR_TOKEN.match(one_more)  # each part within its bound, the whole one too long
    with pytest.raises(ValueError, match=f"a string of {MAX_CONDOR_TOKEN + 1} characters"):
        parse_lease(lease(condor_token=one_more), 0.0)


def test_the_token_is_in_no_repr_or_str() -> None:
    token = idtoken()
    parsed = parse_lease(lease(condor_token=token), 0.0)
    signature = token.rsplit(".", 1)[1]
    for shown in (repr(parsed), str(parsed), f"{parsed}", f"{parsed!r}"):
        assert signature not in shown
        assert "condor_token" not in shown
    assert "lease_id='l-1'" in repr(parsed)


def test_the_heartbeat_reply_declines_a_lease_with_a_bad_token_as_malformed() -> None:
    token = idtoken()
    raw = {
        "server_time": "2026-11-23T12:00:00Z",
        "heartbeat_s": 60,
        "leases": [
            {**lease(condor_token=token), "lease_id": "good"},
            {**lease(condor_token=token + "!"), "lease_id": "bad-token"},
            {**lease(condor_token=7), "lease_id": "bad-type"},
        ],
    }
    reply = protocol.parse_heartbeat_reply(raw, 1.0)
    assert [(x.lease_id, x.condor_token) for x in reply.leases] == [("good", token)]
    assert [(d.lease_id, d.reason) for d in reply.problems] == [
        ("bad-token", "malformed"),
        ("bad-type", "malformed"),
    ]
    for decline in reply.problems:
        assert "condor_token" in decline.detail
        assert token.rsplit(".", 1)[1] not in decline.detail


@pytest.mark.parametrize(
    ("token", "valid"),
    [
        (idtoken(), True),
        (None, True),
        ("a" * 1024 + "." + "b" * 2048 + "." + "c" * 1024, False),
        ("eyJ.eyJ.c2ln+", False),
        ("only.two", False),
        (5, False),
    ],
    ids=["valid", "null", "too-long", "plus", "two-parts", "int"],
)
def test_the_reply_schema_and_the_parser_agree_on_the_token(token: object, valid: bool) -> None:
    """The schema published for the reply (OpenAPI, docs/coordinator-api.md) refuses exactly
    what the agent's parser refuses."""
    raw = {"server_time": "x", "heartbeat_s": 30, "leases": [lease(condor_token=token)]}
    try:
        jsonschema.validate(raw, protocol.HEARTBEAT_REPLY_SCHEMA)
        schema_ok = True
    except jsonschema.ValidationError:
        schema_ok = False
    parser_ok = not protocol.parse_heartbeat_reply(raw, 0.0).problems
    assert (schema_ok, parser_ok) == (valid, valid)
