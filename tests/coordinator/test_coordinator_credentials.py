"""Credentials derived at start (``Coordinator.load_credentials``, what ``serve`` does): a
desktop's first request after a restart needs no lookup, and every check still holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from coordinator.coord_support import (
    Clock,
    enrol_body,
    heartbeat,
    make_coordinator,
    signed_headers,
    write_setup,
)

from cvmc.coordinator.ports import AuthRecord
from cvmc.coordinator.service.coordinator import ApiError, Coordinator

HB = "/api/v1/heartbeat"


def beat(coordinator: Coordinator, desk: tuple[str, str], seq: int) -> dict[str, object]:
    raw = json.dumps(heartbeat()).encode()
    headers = {
        k.lower(): v for k, v in signed_headers("POST", HB, desk[0], desk[1], seq, raw).items()
    }
    return coordinator.heartbeat(headers, HB, raw)


def test_loaded_credentials_skip_the_lookup_and_keep_every_check(
    tmp_path: Path, db_url: str
) -> None:
    config = write_setup(tmp_path, db_url)
    before = make_coordinator(config, Clock())
    desks = {}
    for name in ("desk00", "desk04", "desk08"):
        reply = before.enrol(enrol_body(name))
        desks[name] = (reply["desktop_id"], reply["credential"])
    beat(before, desks["desk00"], 1)
    before.store.revoke(["desk08"], before.clock())
    before.store.close()

    # The service restarts.
    after = make_coordinator(config, Clock())
    lookups: list[str] = []
    original = after.store.auth

    def counting(desktop_id: str) -> AuthRecord | None:
        lookups.append(desktop_id)
        return original(desktop_id)

    after.store.auth = counting  # type: ignore[method-assign]
    try:
        assert after.load_credentials() == 2  # the revoked desktop is not loaded
        assert beat(after, desks["desk04"], 1)["leases"] == []
        assert lookups == []  # no lookup of its own
        with pytest.raises(ApiError) as replay:
            beat(after, desks["desk00"], 1)  # its 1 was accepted before the restart
        assert (replay.value.code, replay.value.extra) == ("replayed_sequence", {"last_seq": 1})
        with pytest.raises(ApiError) as revoked:
            beat(after, desks["desk08"], 2)
        assert revoked.value.code == "revoked"
        assert lookups == [desks["desk08"][0]]  # only the desktop that was not loaded
        forged = (desks["desk04"][0], desks["desk00"][1])  # desk04's id, desk00's credential
        with pytest.raises(ApiError) as bad:
            beat(after, forged, 2)
        assert bad.value.code == "bad_signature"
    finally:
        after.store.close()
