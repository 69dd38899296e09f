"""One-time enrolment tokens (cvmc.gridmodel.enrolment); the filter is in test_filter_plugins."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvmc.gridmodel import enrolment

KEY = "k" * 16 + "0123456789abcdefXYZ"
OTHER_KEY = "o" * 40
NOW = 1_800_000_000
DAY = 86_400
names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,40}[A-Za-z0-9]\Z")


def test_token_is_the_documented_hmac() -> None:
    message = b"cvmc-enrol-v2\nchem-lab-01\n3\n1800000000\n1800604800"
    mac = hmac.new(KEY.encode(), message, hashlib.sha256).digest()
    expected = (
        "cvmc2.3.1800000000.1800604800." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    )
    assert enrolment.enrol_token(KEY, "chem-lab-01", 3, issued_at=NOW) == expected


def test_token_fits_the_enrol_request_schema() -> None:
    token = enrolment.enrol_token(
        KEY,
        "chem-lab-01.ad.example.edu",
        enrolment.MAX_GENERATION,
        issued_at=enrolment.MAX_TIMESTAMP - enrolment.MAX_TTL_S,
        ttl_s=enrolment.MAX_TTL_S,
    )
    assert 16 <= len(token) <= 256
    assert len(enrolment.enrol_token(KEY, "d", 1, issued_at=NOW)) == 73


@given(
    desktop=names,
    generation=st.integers(1, enrolment.MAX_GENERATION),
    ttl_s=st.integers(enrolment.MIN_TTL_S, enrolment.MAX_TTL_S),
)
def test_a_minted_token_verifies_for_its_desktop_only(
    desktop: str, generation: int, ttl_s: int
) -> None:
    token = enrolment.enrol_token(KEY, desktop, generation, issued_at=NOW, ttl_s=ttl_s)
    claims = enrolment.check_enrol_token(KEY, token, desktop, now=NOW)
    assert claims == enrolment.TokenClaims(generation, NOW, NOW + ttl_s)
    with pytest.raises(ValueError, match="not minted for this desktop"):
        enrolment.check_enrol_token(KEY, token, desktop + "x", now=NOW)
    with pytest.raises(ValueError, match="not minted for this desktop"):
        enrolment.check_enrol_token(OTHER_KEY, token, desktop, now=NOW)


def test_a_token_expires() -> None:
    token = enrolment.enrol_token(KEY, "d", 1, issued_at=NOW, ttl_s=300)
    assert enrolment.check_enrol_token(KEY, token, "d", now=NOW + 299).generation == 1
    for later in (NOW + 300, NOW + 10 * DAY):
        with pytest.raises(ValueError, match="token expired at 1800000300"):
            enrolment.check_enrol_token(KEY, token, "d", now=later)


def test_a_token_from_the_future_is_refused_beyond_the_skew() -> None:
    token = enrolment.enrol_token(KEY, "d", 1, issued_at=NOW + enrolment.MAX_SKEW_S + 1)
    with pytest.raises(ValueError, match="issued in the future"):
        enrolment.check_enrol_token(KEY, token, "d", now=NOW)
    assert enrolment.check_enrol_token(KEY, token, "d", now=NOW + 1).generation == 1


def test_the_restore_watermark_refuses_older_tokens() -> None:
    token = enrolment.enrol_token(KEY, "d", 1, issued_at=NOW)
    assert enrolment.check_enrol_token(KEY, token, "d", now=NOW, not_before=NOW).generation == 1
    with pytest.raises(ValueError, match="before grid_coordinator_enrol_tokens_not_before"):
        enrolment.check_enrol_token(KEY, token, "d", now=NOW + 5, not_before=NOW + 1)


def _forge(desktop: str, generation: int, issued: int, expires: int) -> str:
    """A token with a correct MAC over any fields (as someone holding the key could mint)."""
    message = f"cvmc-enrol-v2\n{desktop}\n{generation}\n{issued}\n{expires}".encode()
    mac = hmac.new(KEY.encode(), message, hashlib.sha256).digest()
    return f"cvmc2.{generation}.{issued}.{expires}." + (
        base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    )


@pytest.mark.parametrize("lifetime", [0, 299, enrolment.MAX_TTL_S + 1, -5])
def test_a_lifetime_outside_the_bounds_is_refused(lifetime: int) -> None:
    token = _forge("d", 1, NOW, NOW + lifetime)
    with pytest.raises(ValueError, match="lifetime is outside 300 s to 90 days"):
        enrolment.check_enrol_token(KEY, token, "d", now=NOW)


def test_the_fields_are_under_the_mac() -> None:
    token = enrolment.enrol_token(KEY, "d", 1, issued_at=NOW, ttl_s=300)
    prefix, generation, issued, expires, mac = token.split(".")
    for changed in (
        f"{prefix}.2.{issued}.{expires}.{mac}",
        f"{prefix}.{generation}.{issued}.{int(expires) + 3600}.{mac}",
        f"{prefix}.{generation}.{int(issued) + 1}.{expires}.{mac}",
    ):
        with pytest.raises(ValueError, match="not minted for this desktop"):
            enrolment.check_enrol_token(KEY, changed, "d", now=NOW)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "cvmc2.1.",
        "cvmc1.1." + "A" * 43,  # the old, timeless format
        "cvmc2.0.1.400." + "A" * 43,
        "cvmc2.01.1.400." + "A" * 43,
        "cvmc2.1.01.400." + "A" * 43,
        "cvmc2.1.1.400." + "A" * 44,
        "cvmc2.1.1.4000000000000." + "A" * 43,
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(ValueError, match="not a cvmc2 enrolment token"):
        enrolment.check_enrol_token(KEY, token, "d", now=NOW)


@pytest.mark.parametrize(
    ("key", "desktop", "generation", "message"),
    [
        ("short", "d", 1, "at least 32 characters"),
        (KEY, "bad name", 1, "is not a desktop name"),
        (KEY, "-lead", 1, "is not a desktop name"),
        (KEY, "d", 0, "generation 0"),
        (KEY, "d", True, "generation True"),
        (KEY, "d", 1_000_000, "generation 1000000"),
    ],
)
def test_bad_input_names_the_key_variable(
    key: str, desktop: str, generation: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as error:
        enrolment.enrol_token(key, desktop, generation, issued_at=NOW)
    assert str(error.value).startswith("grid_coordinator_enrol_key")


@pytest.mark.parametrize("ttl_s", [299, enrolment.MAX_TTL_S + 1, True, "300"])
def test_a_bad_lifetime_names_its_variable(ttl_s: object) -> None:
    with pytest.raises(ValueError, match=r"^grid_coordinator_enrol_token_ttl_s: "):
        enrolment.enrol_token(KEY, "d", 1, issued_at=NOW, ttl_s=ttl_s)  # type: ignore[arg-type]


def test_a_token_is_reused_while_half_its_lifetime_is_left() -> None:
    ttl = 7 * DAY
    token = enrolment.enrol_token(KEY, "d", 2, issued_at=NOW, ttl_s=ttl)

    def reusable(**changes: object) -> bool:
        args: dict[str, object] = {
            "key": KEY,
            "token": token + "\n",
            "desktop": "d",
            "generation": 2,
            "now": NOW + ttl // 2,
            "ttl_s": ttl,
        }
        args.update(changes)
        return enrolment.reusable_token(**args)  # type: ignore[arg-type]

    assert reusable()
    assert not reusable(now=NOW + ttl // 2 + 1)  # less than half left
    assert not reusable(generation=3)  # the next generation needs its own token
    assert not reusable(desktop="e")
    assert not reusable(key=OTHER_KEY)
    assert not reusable(ttl_s=DAY)  # the lifetime was shortened: mint one within it
    assert not reusable(not_before=NOW + 1)  # issued before a restore's watermark
    assert not reusable(token="")
    assert not reusable(token="garbage")  # noqa: S106 - not a secret
