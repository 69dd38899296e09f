"""``429 rate_limited`` (docs/coordinator-api.md) for real: uvicorn on loopback, real requests.

Enrolments and failed authentications are limited per client address (nginx's, passed in
``X-Forwarded-For`` from loopback, as uvicorn trusts it), a desktop's authenticated requests per
desktop. A refused request writes nothing. The limiter itself keeps bounded memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from coordinator.coord_support import (
    Clock,
    dump,
    enrol_body,
    heartbeat,
    make_coordinator,
    serve_in_thread,
    signed_headers,
    write_setup,
)

from cvmc.coordinator.adapters.database import make_engine
from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.domain.config import ConfigError, parse_config
from cvmc.coordinator.domain.ratelimit import RateLimiter
from cvmc.coordinator.service.coordinator import Coordinator

ENROL = "/api/v1/enrol"
HB = "/api/v1/heartbeat"
#: A rate so slow that no token comes back while a test runs.
SLOW = 0.001


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address, "Content-Type": "application/json"}


@pytest.fixture
def limited(tmp_path: Path, db_url: str) -> Iterator[tuple[Coordinator, httpx.Client]]:
    server = {
        "address_burst": 3,
        "address_rate_per_s": SLOW,
        "desktop_burst": 3,
        "desktop_rate_per_s": SLOW,
    }
    coordinator = make_coordinator(write_setup(tmp_path, db_url, server=server), Clock())
    try:
        with (
            serve_in_thread(create_app(coordinator)) as port,
            httpx.Client(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            yield coordinator, client
    finally:
        coordinator.store.close()


def assert_rate_limited(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.json()["error"] == "rate_limited"
    wait = int(answer.headers["Retry-After"])
    assert 1 <= wait <= 1 / SLOW


def test_enrolments_from_one_address_get_429_and_spend_nothing(
    limited: tuple[Coordinator, httpx.Client],
) -> None:
    coordinator, client = limited
    engine = make_engine(coordinator.config.database)
    try:
        for n in range(3):
            answer = client.post(
                ENROL, content=enrol_body(f"desk0{n}"), headers=from_address("10.0.0.7")
            )
            assert answer.status_code == 201, answer.text
        before = dump(engine)
        assert_rate_limited(
            client.post(ENROL, content=enrol_body("desk03"), headers=from_address("10.0.0.7"))
        )
        assert dump(engine) == before  # the token is not spent, nothing is written
        # Another address has its own bucket; desk03's token is still good there.
        answer = client.post(ENROL, content=enrol_body("desk03"), headers=from_address("10.0.0.8"))
        assert answer.status_code == 201, answer.text
        assert coordinator.metrics.requests[("enrol", 429)] == 1
    finally:
        engine.dispose()


def test_a_desktop_too_fast_gets_429_and_its_forgers_do_not_use_its_bucket(
    limited: tuple[Coordinator, httpx.Client],
) -> None:
    coordinator, client = limited
    reply = coordinator.enrol(enrol_body("desk00"))
    desk, credential = reply["desktop_id"], reply["credential"]
    raw = json.dumps(heartbeat()).encode()

    # A forger sends in desk00's name from its own address: 401s, then its address is limited.
    forged = "A" * 43 + "="
    for seq in range(1, 5):
        headers = signed_headers("POST", HB, desk, forged, seq, raw) | from_address("10.0.0.66")
        answer = client.post(HB, content=raw, headers=headers)
        if seq <= 3:
            assert answer.status_code == 401, answer.text
        else:
            assert_rate_limited(answer)

    # desk00 itself still has its whole burst, and then is limited too.
    engine = make_engine(coordinator.config.database)
    try:
        for seq in range(1, 4):
            headers = signed_headers("POST", HB, desk, credential, seq, raw)
            answer = client.post(HB, content=raw, headers=headers | from_address("10.0.0.1"))
            assert answer.status_code == 200, answer.text
        before = dump(engine)
        headers = signed_headers("POST", HB, desk, credential, 4, raw) | from_address("10.0.0.1")
        assert_rate_limited(client.post(HB, content=raw, headers=headers))
        assert dump(engine) == before  # last_seq and last_seen are unchanged
    finally:
        engine.dispose()
    assert coordinator.metrics.requests[("heartbeat", 429)] == 2


def test_the_limiter_refills_and_keeps_bounded_memory() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=2, max_keys=100)
    assert limiter.hit("a", 0.0) is None
    assert limiter.hit("a", 0.0) is None
    assert limiter.hit("a", 0.0) == 1  # half a second for a token, rounded up
    assert limiter.hit("a", 0.5) is None  # refilled
    assert limiter.retry_after("a", 0.5) == 1
    for n in range(10_000):  # a flood of new keys (addresses, forged desktop ids)
        limiter.hit(f"k{n}", 1.0)
    assert len(limiter) == 100
    assert limiter.hit("a", 1.0) is None  # "a" was dropped; it starts with a full bucket


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("desktop_rate_per_s", 0),
        ("desktop_burst", 0),
        ("address_rate_per_s", -1),
        ("address_burst", True),
        ("rate_limit_keys", 1),
    ],
)
def test_bad_limits_name_their_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"^server.{key}: "):
        parse_config({"server": {key: value}})
