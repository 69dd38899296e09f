"""The allocation rounds' leader lock on PostgreSQL (``cvmc.coordinator.adapters.pg_leader``).

Real: two coordinators built by the composition root on one PostgreSQL database, as two
``serve`` processes (or hosts) have them. Exactly one leads; a leader whose lock session is
killed (``pg_terminate_backend``, as PostgreSQL does to a session whose host went silent)
starts no more rounds, and the other takes over; a round whose session dies half-way commits
nothing, so the new leader gives no lease twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coordinator.coord_support import (
    BOINC,
    HB,
    Clock,
    enrol_body,
    heartbeat,
    make_coordinator,
    scrape,
    set_demand,
    signed_headers,
    write_setup,
)
from sqlalchemy import create_engine, text

from cvmc.coordinator.adapters.pg_leader import LEADER_KEY
from cvmc.coordinator.adapters.prometheus import Exporter
from cvmc.coordinator.compose import build
from cvmc.coordinator.service.coordinator import Coordinator


@pytest.fixture
def pg(postgres_url: str) -> str:
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return postgres_url


@pytest.fixture
def pair(tmp_path: Path, pg: str) -> Iterator[tuple[Coordinator, Coordinator]]:
    """Two coordinators on one database and one clock, as two ``serve`` processes."""
    config = write_setup(tmp_path, pg)
    clock = Clock()
    first = make_coordinator(config, clock)
    second = build(config)
    second.clock = clock
    try:
        yield first, second
    finally:
        first.store.close()
        second.store.close()


def _sql(url: str, query: str, **params: Any) -> list[Any]:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text(query), params)]
    finally:
        engine.dispose()


def lock_holders(url: str) -> list[int]:
    return _sql(
        url,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = :key AND granted",
        key=LEADER_KEY,
    )


def kill_lock_session(url: str) -> None:
    """End the session that holds the leader lock, and wait until the lock is free."""
    (pid,) = lock_holders(url)
    assert _sql(url, "SELECT pg_terminate_backend(:pid)", pid=pid) == [True]
    end = time.monotonic() + 10
    while lock_holders(url):
        assert time.monotonic() < end, "the killed session still holds the leader lock"
        time.sleep(0.05)


def lease_count(url: str) -> int:
    (count,) = _sql(url, "SELECT count(*) FROM leases")
    return int(count)


def enrol_desktops(coordinator: Coordinator, count: int) -> None:
    """Enrolled desktops, each with one heartbeat that makes it eligible (2 slots)."""
    for n in range(count):
        reply = coordinator.enrol(enrol_body(f"desk{n:02d}"))
        raw = json.dumps(heartbeat()).encode()
        headers = signed_headers("POST", HB, reply["desktop_id"], reply["credential"], 1, raw)
        coordinator.heartbeat({k.lower(): v for k, v in headers.items()}, HB, raw)


def test_one_of_two_processes_leads_and_the_other_follows(
    pair: tuple[Coordinator, Coordinator], pg: str
) -> None:
    first, second = pair
    enrol_desktops(first, 2)
    set_demand(first, (BOINC, 1), (BOINC, 1))
    assert first.allocation_round() is not None
    assert first.leader
    assert second.allocation_round() is None  # another process holds the lock
    assert not second.leader
    assert first.allocation_round() is not None  # the leader keeps it
    assert lease_count(pg) == 2
    assert scrape(Exporter(first).text().decode())["cvmc_rounds_leader"] == 1
    assert scrape(Exporter(second).text().decode())["cvmc_rounds_leader"] == 0
    # A follower's dashboard counts come from the database too.
    assert sum(second.counts.leases.values()) == 2
    assert len(lock_holders(pg)) == 1


def test_a_leader_whose_lock_session_fails_starts_no_round_and_the_other_takes_over(
    pair: tuple[Coordinator, Coordinator], pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = pair
    enrol_desktops(first, 2)
    assert first.allocation_round() is not None
    snapshots: list[str] = []
    original = first.store.snapshot

    def counted(now: float, offline_after_s: float) -> Any:
        snapshots.append("first")
        return original(now, offline_after_s)

    monkeypatch.setattr(first.store, "snapshot", counted)
    kill_lock_session(pg)
    # The old leader finds its session gone before it reads anything: no round.
    assert first.allocation_round() is None
    assert not first.leader
    assert snapshots == []
    set_demand(second, (BOINC, 1))
    assert second.allocation_round() is not None
    assert second.leader
    assert lease_count(pg) == 1
    # The old leader, back, now follows: the lock is taken.
    assert first.allocation_round() is None
    assert snapshots == []
    assert not first.leader


def test_a_round_whose_session_dies_half_way_commits_nothing_and_no_lease_is_given_twice(
    pair: tuple[Coordinator, Coordinator], pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old leader reads, freezes, loses its session; the other takes over and grants;
    the old leader wakes up and writes its allocation from the old read. That write must not
    commit: both would give the same free slots and the same demand."""
    first, second = pair
    enrol_desktops(first, 2)
    assert first.allocation_round() is not None  # first leads
    set_demand(first, (BOINC, 1), (BOINC, 1), (BOINC, 1))
    set_demand(second, (BOINC, 1), (BOINC, 1), (BOINC, 1))
    original = first.store.snapshot

    def frozen_after_reading(now: float, offline_after_s: float) -> Any:
        seen = original(now, offline_after_s)
        kill_lock_session(pg)  # e.g. the host went silent and PostgreSQL ended the session
        granted = second.allocation_round()  # the other takes over meanwhile
        assert granted is not None
        assert len(granted.new) == 3
        return seen

    monkeypatch.setattr(first.store, "snapshot", frozen_after_reading)
    assert first.allocation_round() is None  # its write failed: it no longer leads
    assert not first.leader
    assert second.leader
    assert lease_count(pg) == 3  # demand 3, each lease given once
    monkeypatch.setattr(first.store, "snapshot", original)
    assert first.allocation_round() is None
    assert second.allocation_round() is not None
    assert lease_count(pg) == 3
