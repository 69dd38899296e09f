"""Heartbeats in batches (group commit): ``Store.heartbeats`` and the web adapter's batcher.

On SQLite ``heartbeats`` is the port's sequential default; on PostgreSQL it is one pipeline
and one commit. The same batch must give the same answers and leave the same rows on both,
so the table-driven test below runs on each backend. The batcher test runs the real app under
uvicorn on PostgreSQL, where heartbeats go through the batcher.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator.coord_support import (
    BOINC,
    Clock,
    dump,
    enrol_body,
    heartbeat,
    make_coordinator,
    serve_in_thread,
    set_demand,
    signed_headers,
    write_setup,
)
from sqlalchemy import Engine, delete, select, text

from cvmc.coordinator.adapters.schema import declines, desktops, leases
from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.ports import (
    HeartbeatItem,
    HeartbeatResult,
    ReplayedError,
    RevokedError,
    UnknownDesktopError,
    UnstorableError,
)
from cvmc.coordinator.service.coordinator import Coordinator

HB = "/api/v1/heartbeat"
#: The pipelined batch and the web batcher exist for PostgreSQL only (SQLite heartbeats run one
#: by one on the event loop, and SQLite does not enforce column lengths).
postgresql_only = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@pytest.fixture
def coordinator(tmp_path: Path, db_url: str) -> Iterator[Coordinator]:
    coordinator = make_coordinator(write_setup(tmp_path, db_url), Clock())
    yield coordinator
    coordinator.store.close()


def enrol(coordinator: Coordinator, name: str) -> tuple[str, str]:
    reply = coordinator.enrol(enrol_body(name))
    return reply["desktop_id"], reply["credential"]


def item(
    coordinator: Coordinator, desktop_id: str, credential: str, seq: int, body: dict[str, Any]
) -> HeartbeatItem:
    raw = json.dumps(body).encode()
    headers = {
        k.lower(): v
        for k, v in signed_headers("POST", HB, desktop_id, credential, seq, raw).items()
    }
    return coordinator.accept_heartbeat(headers, HB, raw)


def slots_running(lease_ids: Sequence[str]) -> dict[str, Any]:
    return heartbeat(
        slots=[
            {"slot": i, "state": "running", "vm_name": BOINC, "lease_id": lease_id}
            for i, lease_id in enumerate(lease_ids)
        ]
    )


def test_a_batch_answers_as_the_same_heartbeats_one_by_one(coordinator: Coordinator) -> None:
    store = coordinator.store
    a = enrol(coordinator, "desk00")
    b = enrol(coordinator, "desk08")  # another department: one lease each, fairly
    c = enrol(coordinator, "desk04")
    for desk in (a, b, c):  # first heartbeats, so the round sees them online
        coordinator.heartbeat(*_signed(desk, 1, heartbeat()))
    coordinator.store.revoke(["desk04"], coordinator.clock())
    set_demand(coordinator, (BOINC, 1), (BOINC, 1))
    coordinator.allocation_round()
    held = dict(_rows(coordinator, select(leases.c.desktop_id, leases.c.id)))
    assert set(held) == {a[0], b[0]}  # two jobs, two leases
    now = coordinator.clock() + 1
    batch = [
        item(coordinator, *a, 2, slots_running([held[a[0]]])),  # a's VM runs
        item(coordinator, *a, 2, slots_running([held[a[0]]])),  # the same request again
        item(
            coordinator,
            *b,
            2,
            heartbeat(declined=[{"lease_id": held[b[0]], "reason": "memory"}]),
        ),
        item(coordinator, *a, 3, slots_running([held[a[0]]])),  # a's next one, same batch
        HeartbeatItem(c[0], 2, item(coordinator, *a, 9, heartbeat()).update),  # revoked
        HeartbeatItem("d-0000000000000000", 1, item(coordinator, *a, 9, heartbeat()).update),
    ]
    results = store.heartbeats(batch, now, 600.0)

    assert len(results) == len(batch)
    first, replay, declined, next_one, revoked, unknown = results
    assert isinstance(first, list)
    assert [(x.id, x.state) for x in first] == [(held[a[0]], "running")]
    assert isinstance(replay, ReplayedError)
    # The highest number accepted when the refusal is read: one by one that is 2; PostgreSQL
    # reads refusals after the whole pipeline, when a's 3 (later in the batch) is in.
    assert replay.last_seq == (2 if coordinator.store.embedded else 3)
    assert declined == []
    assert isinstance(next_one, list)
    assert [(x.id, x.state) for x in next_one] == [(held[a[0]], "running")]
    assert isinstance(revoked, RevokedError)
    assert isinstance(unknown, UnknownDesktopError)
    # What the rows say afterwards: a's lease runs, b's is gone and BOINC backs off on b.
    assert _rows(coordinator, select(leases.c.id, leases.c.state)) == [(held[a[0]], "running")]
    assert _rows(coordinator, select(declines.c.desktop_id, declines.c.vm_name)) == [(b[0], BOINC)]
    seqs = dict(_rows(coordinator, select(desktops.c.id, desktops.c.last_seq)))
    assert (seqs[a[0]], seqs[b[0]], seqs[c[0]]) == (3, 2, 1)


def test_an_empty_batch_writes_nothing(coordinator: Coordinator) -> None:
    enrol(coordinator, "desk00")
    engine = coordinator.store.engine  # type: ignore[attr-defined]
    before = dump(engine)
    assert coordinator.store.heartbeats([], coordinator.clock(), 600.0) == []
    assert dump(engine) == before


@postgresql_only
def test_a_refused_heartbeat_fails_alone_and_writes_nothing(coordinator: Coordinator) -> None:
    """A statement the database refuses (a policy text longer than its column: the schema check
    stops that over HTTP, so it is made here) fails its own heartbeat only (issue 15: it used
    to fail the whole batch); none of it stays, and the connection goes back healthy."""
    a = enrol(coordinator, "desk00")
    b = enrol(coordinator, "desk04")
    good = item(coordinator, *a, 1, heartbeat())
    bad_update = item(coordinator, *b, 1, heartbeat()).update
    bad = HeartbeatItem(b[0], 1, type(bad_update)(**{**bad_update.__dict__, "policy": "x" * 400}))
    before = _rows(coordinator, select(desktops.c.id, desktops.c.last_seq))
    ok, refused = coordinator.store.heartbeats([good, bad], coordinator.clock(), 600.0)
    assert ok == []
    assert isinstance(refused, UnstorableError)
    assert "too long" in str(refused)
    after = _rows(coordinator, select(desktops.c.id, desktops.c.last_seq))
    assert after == sorted([(a[0], 1), (b[0], 0)]) != before
    # The connection went back healthy: the next batch goes through.
    (result,) = coordinator.store.heartbeats([replace(good, seq=2)], coordinator.clock(), 600.0)
    assert result == []


@postgresql_only
def test_the_web_batcher_coalesces_concurrent_heartbeats(coordinator: Coordinator) -> None:
    desks = [enrol(coordinator, f"desk{i:02d}") for i in range(10)]
    sizes: list[int] = []
    original = coordinator.store.heartbeats

    def counting(
        items: Sequence[HeartbeatItem], now: float, backoff_s: float
    ) -> list[HeartbeatResult]:
        sizes.append(len(items))
        return original(items, now, backoff_s)

    coordinator.store.heartbeats = counting  # type: ignore[method-assign]
    with serve_in_thread(create_app(coordinator)) as port:

        async def beat_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                requests = []
                for seq in (1, 2, 3):
                    for desk in desks:
                        raw = json.dumps(heartbeat()).encode()
                        requests.append(
                            client.post(
                                HB,
                                content=raw,
                                headers=signed_headers("POST", HB, *desk, seq, raw),
                            )
                        )
                # Each desktop's seq 1, 2 and 3 race each other: any order is fine, but a
                # number below one already accepted is a replay (409).
                return await asyncio.gather(*requests)

        replies = asyncio.run(beat_all())
    codes = [reply.status_code for reply in replies]
    assert set(codes) <= {200, 409}
    assert codes.count(200) >= len(desks)  # each desktop's highest number always wins
    for reply in replies:
        if reply.status_code == 409:
            assert reply.json()["error"] == "replayed_sequence"
    seqs = dict(_rows(coordinator, select(desktops.c.id, desktops.c.last_seq)))
    assert all(seqs[desk[0]] == 3 for desk in desks)
    assert sum(sizes) == codes.count(200) + codes.count(409) - _first_time_refusals(replies)
    assert max(sizes) > 1  # some heartbeats shared a commit


def _first_time_refusals(replies: Sequence[httpx.Response]) -> int:
    """Replays refused before the batch: a desktop's first request is checked against the
    database while its credential is looked up, so a lower number seen after it is refused
    there, without reaching a batch."""
    return sum(1 for reply in replies if reply.status_code == 409 and "is not above" in reply.text)


def _signed(desk: tuple[str, str], seq: int, body: dict[str, Any]) -> tuple[Any, str, bytes]:
    raw = json.dumps(body).encode()
    headers = {
        k.lower(): v for k, v in signed_headers("POST", HB, desk[0], desk[1], seq, raw).items()
    }
    return headers, HB, raw


def _rows(coordinator: Coordinator, query: Any) -> list[tuple[Any, ...]]:
    engine = coordinator.store.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return sorted(tuple(row) for row in conn.execute(query))


@postgresql_only
def test_a_batch_outlives_a_deadlock_with_the_rounds(coordinator: Coordinator) -> None:
    """The batch's lease changes and a round's lease deletions lock rows in no common order, so
    PostgreSQL can find them in a deadlock and abort one (``deadlock detected``). When that was
    the batch, every heartbeat in it answered 503 ``unavailable``. Made here in a fixed order:
    the round's transaction holds b's lease while the batch, which changes a's lease and then
    b's, waits for it; then the round asks for a's lease. The batch waited first, so PostgreSQL
    aborts it; tried again, after the round commits, it goes through."""
    a = enrol(coordinator, "desk00")
    b = enrol(coordinator, "desk08")  # another department: one lease each, fairly
    for desk in (a, b):
        coordinator.heartbeat(*_signed(desk, 1, heartbeat()))
    set_demand(coordinator, (BOINC, 1), (BOINC, 1))
    coordinator.allocation_round()
    held = dict(_rows(coordinator, select(leases.c.desktop_id, leases.c.id)))
    assert set(held) == {a[0], b[0]}
    batch = [  # both offered leases run now: each is a lease state change
        item(coordinator, *a, 2, slots_running([held[a[0]]])),
        item(coordinator, *b, 2, slots_running([held[b[0]]])),
    ]
    engine = coordinator.store.engine  # type: ignore[attr-defined]
    holding, round_done = threading.Event(), threading.Event()
    round_error: list[BaseException] = []

    def a_round() -> None:  # a round that revokes both leases, b's first
        try:
            with engine.begin() as conn:
                conn.execute(delete(leases).where(leases.c.id == held[b[0]]))
                holding.set()
                _wait_for_lock(engine)  # the batch has a's lease and waits for b's
                conn.execute(delete(leases).where(leases.c.id == held[a[0]]))
        except BaseException as exc:
            round_error.append(exc)
        finally:
            holding.set()
            round_done.set()

    rounds = threading.Thread(target=a_round)
    rounds.start()
    assert holding.wait(10)
    try:
        results = coordinator.store.heartbeats(batch, coordinator.clock(), 600.0)
    finally:
        rounds.join(30)
    assert round_done.is_set()
    assert round_error == []  # the round won: PostgreSQL aborted the batch, which waited first
    assert all(isinstance(result, list) for result in results)
    # The round's deletions stand; both heartbeats were accepted.
    assert _rows(coordinator, select(leases.c.id)) == []
    seqs = dict(_rows(coordinator, select(desktops.c.id, desktops.c.last_seq)))
    assert (seqs[a[0]], seqs[b[0]]) == (2, 2)


def _wait_for_lock(engine: Engine, timeout: float = 10.0) -> None:
    """Until another session of this database waits for a row lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while conn.execute(query).scalar() == 0:
            conn.rollback()  # pg_stat_activity is read once per transaction: a new one each time
            if time.monotonic() > deadline:
                raise AssertionError("nothing waited for a lock")
            time.sleep(0.01)
