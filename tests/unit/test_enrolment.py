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
names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,40}[A-Za-z0-9]\Z")


def test_token_is_the_documented_hmac() -> None:
    mac = hmac.new(KEY.encode(), b"cvmc-enrol-v1\nchem-lab-01\n3", hashlib.sha256).digest()
    expected = "cvmc1.3." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert enrolment.enrol_token(KEY, "chem-lab-01", 3) == expected


def test_token_fits_the_enrol_request_schema() -> None:
    token = enrolment.enrol_token(KEY, "chem-lab-01.ad.example.edu", enrolment.MAX_GENERATION)
    assert 16 <= len(token) <= 256
    assert len(enrolment.enrol_token(KEY, "d", 1)) == 51


@given(desktop=names, generation=st.integers(1, enrolment.MAX_GENERATION))
def test_a_minted_token_verifies_for_its_desktop_only(desktop: str, generation: int) -> None:
    token = enrolment.enrol_token(KEY, desktop, generation)
    assert enrolment.verify_enrol_token(KEY, token, desktop) == generation
    with pytest.raises(ValueError, match="not minted for this desktop"):
        enrolment.verify_enrol_token(KEY, token, desktop + "x")
    with pytest.raises(ValueError, match="not minted for this desktop"):
        enrolment.verify_enrol_token(OTHER_KEY, token, desktop)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "cvmc1.1.",
        "cvmc2.1." + "A" * 43,
        "cvmc1.0." + "A" * 43,
        "cvmc1.01." + "A" * 43,
        "cvmc1.1." + "A" * 44,
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(ValueError, match="not a cvmc1 enrolment token"):
        enrolment.verify_enrol_token(KEY, token, "d")


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
        enrolment.enrol_token(key, desktop, generation)
    assert str(error.value).startswith("grid_coordinator_enrol_key")
