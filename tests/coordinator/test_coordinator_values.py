"""Issue 15, finding 1: values a store cannot hold, from a hostile desktop.

JSON numbers like ``1e308`` passed the schema's ``integer``, integers had no maximum, and
strings could hold NUL and lone surrogates. PostgreSQL refused them in its ``int4`` and
``text`` columns, and one refused statement failed the whole group-committed batch: 9 honest
desktops beside 1 hostile one saw 77-85 % of their heartbeats answered 503. On SQLite the same
values gave a 500 or were stored as REAL in integer columns. Now the coordinator refuses them
with 400 ``malformed`` naming the value's path before any write, and a value that gets past the
schema anyway fails its own heartbeat in a batch, never the others'.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

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
from sqlalchemy import select, text

from cvmc import protocol
from cvmc.coordinator.adapters.openapi import openapi_document
from cvmc.coordinator.adapters.schema import desktops
from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.ports import HeartbeatItem, UnstorableError
from cvmc.coordinator.service.coordinator import ApiError, Coordinator

HB = "/api/v1/heartbeat"
ROUNDS = 6


@pytest.fixture
def coordinator(tmp_path: Path, db_url: str) -> Iterator[Coordinator]:
    coordinator = make_coordinator(write_setup(tmp_path, db_url), Clock())
    yield coordinator
    coordinator.store.close()


def _enrol(coordinator: Coordinator, name: str) -> tuple[str, str]:
    reply = coordinator.enrol(enrol_body(name))
    return reply["desktop_id"], reply["credential"]


#: A value no store holds, by name: where it goes in a heartbeat (the path the 400 must name).
_HOSTILE_VALUES: dict[str, tuple[tuple[str | int, ...], object]] = {
    "1e308": (("state", "users"), 1e308),
    "2**40": (("resources", "memory_free_mb"), 2**40),
    "2**70": (("resources", "cpus"), 2**70),
    "2.5": (("capacity", "max_vms"), 2.5),
    "nul": (("state", "policy"), "allowed\x00; DROP"),
    "surrogate": (("agent_version",), "0.1\ud800"),
    "nul-in-slot": (("slots", 1, "reason"), "\x00"),
}


def _hostile(kind: str) -> tuple[dict[str, Any], str]:
    """A heartbeat with one value no store holds, and the path the 400 must name."""
    path, value = _HOSTILE_VALUES[kind]
    body = heartbeat()
    node: Any = body
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return body, "/".join(str(step) for step in path)


HOSTILE = tuple(_HOSTILE_VALUES)


def test_one_hostile_desktop_fails_no_honest_heartbeat(coordinator: Coordinator) -> None:
    """9 honest desktops and 1 hostile one, concurrently, over HTTP (on PostgreSQL through the
    group-commit batcher): every honest heartbeat is 200, every hostile one 400 ``malformed``
    naming the bad value's path, and nothing of the hostile desktop is written."""
    desks = [_enrol(coordinator, f"desk{i:02d}") for i in range(10)]
    honest, hostile = desks[:9], desks[9]
    with serve_in_thread(create_app(coordinator)) as port:

        async def beat_all() -> list[tuple[str, str | None, httpx.Response]]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

                async def post(
                    desk: tuple[str, str], seq: int, body: dict[str, Any]
                ) -> httpx.Response:
                    raw = json.dumps(body).encode()  # a lone surrogate goes as "\\ud800"
                    headers = signed_headers("POST", HB, *desk, seq, raw)
                    return await client.post(HB, content=raw, headers=headers)

                async def desktop(
                    desk: tuple[str, str], bodies: list[tuple[dict[str, Any], str | None]]
                ) -> list[tuple[str, str | None, httpx.Response]]:
                    # One desktop's heartbeats in order (its numbers rise); desktops race.
                    out = []
                    for seq, (body, where) in enumerate(bodies, start=1):
                        out.append((desk[0], where, await post(desk, seq, body)))
                    return out

                plain: list[tuple[dict[str, Any], str | None]] = [(heartbeat(), None)] * ROUNDS
                # An integer written as a float (2.0) is an integer for JSON Schema: honest,
                # accepted, and stored as an integer (checked below on SQLite).
                floats = heartbeat()
                floats["capacity"]["max_vms"] = float(floats["capacity"]["max_vms"])
                floats["state"]["users"] = float(floats["state"]["users"])
                floated: list[tuple[dict[str, Any], str | None]] = [(floats, None)] * ROUNDS
                bad = [_hostile(kind) for kind in HOSTILE] * (ROUNDS // 2)
                tasks = [
                    desktop(desk, floated if i % 2 else plain) for i, desk in enumerate(honest)
                ]
                tasks.append(desktop(hostile, list(bad)))
                return [r for replies in await asyncio.gather(*tasks) for r in replies]

        results = asyncio.run(beat_all())
    assert len(results) == 9 * ROUNDS + len(HOSTILE) * (ROUNDS // 2)
    for who, where, reply in results:
        if where is None:
            assert reply.status_code == 200, (who, reply.text)
        else:
            assert reply.status_code == 400, (who, reply.text)
            assert reply.json()["error"] == "malformed"
            assert f"heartbeat {where}" in reply.json()["message"], (who, reply.text)
    engine = coordinator.store.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(desktops))}
        assert all(rows[desk[0]].last_seq == ROUNDS for desk in honest)
        assert rows[hostile[0]].last_seq == 0
        assert rows[hostile[0]].last_seen is None
        if coordinator.store.embedded:  # SQLite: no REAL in an integer column
            kinds = conn.execute(
                text(
                    "SELECT DISTINCT typeof(users), typeof(cpus), typeof(memory_free_mb), "
                    "typeof(max_vms) FROM desktops"
                )
            ).all()
            assert kinds == [("integer", "integer", "integer", "integer")]


def _bypassing(item: HeartbeatItem, **changes: Any) -> HeartbeatItem:
    """The item with values the schema check would have refused (made here, past it)."""
    return replace(item, update=replace(item.update, **changes))


def test_a_batch_isolates_a_heartbeat_the_database_refuses(coordinator: Coordinator) -> None:
    """Values that get past the schema anyway fail their own heartbeat (``UnstorableError``,
    nothing of it written); every other heartbeat of the same batch is written."""
    desks = [_enrol(coordinator, f"desk{i:02d}") for i in range(8)]
    raw = json.dumps(heartbeat()).encode()

    def item(desk: tuple[str, str], seq: int) -> HeartbeatItem:
        headers = {k.lower(): v for k, v in signed_headers("POST", HB, *desk, seq, raw).items()}
        return coordinator.accept_heartbeat(headers, HB, raw)

    bad_values: list[dict[str, Any]] = [{"cpus": 2**70}, {"agent_version": "\ud800"}]
    if not coordinator.store.embedded:  # what SQLite holds but PostgreSQL does not
        bad_values += [{"users": 2**40}, {"policy": "a\x00b"}, {"policy": "x" * 400}]
    bad_desks = desks[: len(bad_values)]
    batch = [item(desk, 1) for desk in desks]
    for index, changes in enumerate(bad_values):
        batch[index] = _bypassing(batch[index], **changes)
    batch.reverse()  # the bad ones last: the split must find them wherever they are
    results = coordinator.store.heartbeats(batch, coordinator.clock(), 600.0)
    by_desk = {it.desktop_id: result for it, result in zip(batch, results, strict=True)}
    for desk in desks:
        if desk in bad_desks:
            assert isinstance(by_desk[desk[0]], UnstorableError), desk
        else:
            assert by_desk[desk[0]] == [], desk
    engine = coordinator.store.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        seqs = {row.id: row.last_seq for row in conn.execute(select(desktops))}
    assert {d[0]: seqs[d[0]] for d in desks} == {d[0]: 0 if d in bad_desks else 1 for d in desks}
    # The store's refusal reaches the desktop as 400 malformed, as the schema's would.
    bad = batch[-1]
    with pytest.raises(Exception, match="cannot hold") as info:
        coordinator.heartbeat_result(bad, by_desk[bad.desktop_id], coordinator.clock())
    assert getattr(info.value, "code", None) == "malformed"


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("agent_version", "0.1\ud800", "agent_version: holds a lone surrogate"),
        ("agent_version", "0.1\x00", "agent_version: holds NUL"),
        ("desktop", "desk00\x00", "desktop: holds NUL"),
    ],
)
def test_an_enrolment_with_a_value_no_store_holds_is_refused(
    coordinator: Coordinator, field: str, value: str, why: str
) -> None:
    """The enrol body goes through the same value rules: 400 ``malformed`` naming the field
    (a lone surrogate was a 500 before), and nothing is written."""
    engine = coordinator.store.engine  # type: ignore[attr-defined]
    before = dump(engine)
    body = json.loads(enrol_body("desk00"))
    body[field] = value
    with pytest.raises(ApiError) as info:
        coordinator.enrol(json.dumps(body).encode())
    assert info.value.code == "malformed"
    assert f"enrol {why}" in info.value.message
    assert dump(engine) == before


def test_the_openapi_document_shows_the_bounds() -> None:
    document = openapi_document()
    heartbeat_schema = document["components"]["schemas"]["Heartbeat"]
    users = heartbeat_schema["properties"]["state"]["properties"]["users"]
    assert users["maximum"] == protocol.MAX_INT == 2**31 - 1
    policy = heartbeat_schema["properties"]["state"]["properties"]["policy"]
    assert policy["pattern"] == protocol.TEXT_PATTERN
    error = document["components"]["schemas"]["Error"]
    assert error["properties"]["last_seq"]["maximum"] == protocol.MAX_SEQ
    (seq,) = [
        p
        for p in document["paths"]["/api/v1/heartbeat"]["post"]["parameters"]
        if p["name"] == "X-CVMC-Seq"
    ]
    assert seq["schema"]["pattern"] == protocol.SEQ_PATTERN
