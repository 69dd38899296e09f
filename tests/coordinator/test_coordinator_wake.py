"""Wake-on-LAN (``grid_wake_on_lan``, issue 18 item 2): the coordinator asks an awake desktop
on a sleeping one's subnet to wake it, when the round leaves demand unmet.

The pure ``plan_wakes`` rule by rule, then the real coordinator on SQLite and PostgreSQL over
its HTTP API, with each desktop's requests coming from its own client address (the address
the server sees; a heartbeat carries none). The agent that sends the packets:
tests/agent/unit/test_agent_wake.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from coordinator.coord_support import (
    BOINC,
    GRID,
    Clock,
    Desk,
    heartbeat,
    make_coordinator,
    scrape,
    set_demand,
    write_setup,
)
from starlette.testclient import TestClient

from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.domain.grid import parse_grid
from cvmc.coordinator.domain.leases import DesktopView
from cvmc.coordinator.domain.wake import WAKE_RETRY_S, WAKE_WITHIN_S, Wake, plan_wakes
from cvmc.coordinator.service.coordinator import Coordinator
from cvmc.gridmodel.wake import WakeOnLan

NOW = 1_000_000.0
ON = WakeOnLan(enabled=True, subnet_prefix=24, max_per_round=20)


def desk(
    name: str, address: str | None, *, online: bool, mac: str | None = None, **kw: object
) -> DesktopView:
    values: dict[str, object] = {
        "id": name,
        "department": "dept_a",
        "online": online,
        "may_start": True,
        "hw_virt": True,
        "max_vms": 2,
        "memory_free_mb": 8000,
        "address": address,
        "mac": mac,
        "last_seen": NOW if online else NOW - 3600,
    }
    values.update(kw)
    return DesktopView(**values)  # type: ignore[arg-type]


def wakes(desktops: list[DesktopView], unmet: int = 10, **kw: object) -> list[Wake]:
    options: dict[str, object] = {
        "unmet": unmet,
        "settings": ON,
        "max_vms_per_desktop": 2,
        "asked": {},
        "now": NOW,
    }
    options.update(kw)
    return plan_wakes(desktops, **options)  # type: ignore[arg-type]


def test_a_sleeper_is_woken_by_an_awake_desktop_on_its_subnet_only() -> None:
    pool = [
        desk("awake-a", "10.20.1.5", online=True),
        desk("awake-b", "10.30.0.4", online=True),
        desk("sleeper", "10.20.1.9", online=False, mac="52:54:00:00:00:09"),
        desk("far", "10.40.0.9", online=False, mac="52:54:00:00:00:10"),  # nobody awake there
    ]
    assert wakes(pool) == [Wake("sleeper", "awake-a", "52:54:00:00:00:09")]


def test_nothing_is_woken_without_unmet_demand_or_when_off() -> None:
    pool = [
        desk("awake", "10.20.1.5", online=True),
        desk("sleeper", "10.20.1.9", online=False, mac="52:54:00:00:00:09"),
    ]
    assert wakes(pool, unmet=0) == []
    assert wakes(pool, settings=WakeOnLan()) == []  # the default: off
    assert len(wakes(pool)) == 1


def test_only_desktops_that_may_be_asleep_and_able_to_work_are_woken() -> None:
    pool = [
        desk("awake", "10.20.1.5", online=True),
        desk("no-mac", "10.20.1.6", online=False),
        desk("revoked", "10.20.1.7", online=False, mac="52:54:00:00:00:07", revoked=True),
        desk(
            "gone",
            "10.20.1.8",
            online=False,
            mac="52:54:00:00:00:08",
            last_seen=NOW - WAKE_WITHIN_S - 1,
        ),
        desk("no-vt", "10.20.1.10", online=False, mac="52:54:00:00:00:0a", hw_virt=False),
        desk("asked", "10.20.1.11", online=False, mac="52:54:00:00:00:0b"),
        desk("ipv6", "fd00::11", online=False, mac="52:54:00:00:00:0c"),
        desk("never-seen", "10.20.1.13", online=False, mac="52:54:00:00:00:0d", last_seen=None),
    ]
    asked = {"asked": NOW - WAKE_RETRY_S + 1}
    assert wakes(pool, asked=asked) == []
    assert [w.sleeper_id for w in wakes(pool, asked={"asked": NOW - WAKE_RETRY_S})] == ["asked"]
    woken = wakes(pool, asked=asked, require_hw_virt=False)
    assert [w.sleeper_id for w in woken] == ["no-vt"]


def test_the_budget_is_the_unmet_vms_per_desktop_and_max_per_round() -> None:
    """Newest seen first; wakers take turns."""
    pool = [desk("awake-1", "10.20.1.1", online=True), desk("awake-2", "10.20.1.2", online=True)]
    pool += [
        desk(
            f"s{i}",
            f"10.20.1.{100 + i}",
            online=False,
            mac=f"52:54:00:00:01:{i:02x}",
            last_seen=NOW - 100 * (i + 1),
        )
        for i in range(6)
    ]
    assert [w.sleeper_id for w in wakes(pool, unmet=5)] == ["s0", "s1", "s2"]  # ceil(5 / 2)
    assert [w.waker_id for w in wakes(pool, unmet=5)] == ["awake-1", "awake-2", "awake-1"]
    capped = WakeOnLan(enabled=True, subnet_prefix=24, max_per_round=2)
    assert len(wakes(pool, unmet=100, settings=capped)) == 2
    # A /16 makes 10.20.x.x one broadcast domain; a /30 leaves every sleeper alone.
    far = [desk("awake", "10.20.9.1", online=True), *pool[2:]]
    assert wakes(far) == []
    wide = WakeOnLan(enabled=True, subnet_prefix=16, max_per_round=20)
    assert len(wakes(far, settings=wide)) == 5
    narrow = WakeOnLan(enabled=True, subnet_prefix=30, max_per_round=20)
    assert wakes(pool, settings=narrow) == []


def test_a_grid_file_with_bad_wake_on_lan_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"grid file: grid_wake_on_lan.enabled: 'yes' is not"):
        parse_grid({**GRID, "wake_on_lan": {"enabled": "yes"}})
    assert parse_grid(GRID).wake_on_lan == WakeOnLan()  # absent: off


# -- the real coordinator ------------------------------------------------------------------


@pytest.fixture
def waking(
    tmp_path: Path, db_url: str
) -> Iterator[tuple[Coordinator, Clock, dict[str, TestClient]]]:
    """A coordinator with grid_wake_on_lan on, and a client per desktop address."""
    config = write_setup(tmp_path, db_url)
    grid = {**GRID, "wake_on_lan": {"enabled": True, "subnet_prefix": 24, "max_per_round": 5}}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    clock = Clock()
    coordinator = make_coordinator(config, clock)
    app = create_app(coordinator)
    addresses = {"a": "10.20.1.5", "b": "10.20.1.9", "c": "10.30.0.4"}
    clients = {k: TestClient(app, client=(ip, 40000)) for k, ip in addresses.items()}
    with clients["a"], clients["b"], clients["c"]:
        yield coordinator, clock, clients
    coordinator.store.close()


def test_the_coordinator_asks_a_neighbour_to_wake_a_sleeping_desktop(
    waking: tuple[Coordinator, Clock, dict[str, TestClient]],
) -> None:
    coordinator, clock, clients = waking
    awake = Desk(clients["a"], "desk00.lab.example")
    sleeper = Desk(clients["b"], "desk01.lab.example")
    other = Desk(clients["c"], "desk04.lab.example")
    for each, mac in ((awake, "52:54:00:00:00:05"), (sleeper, "52:54:00:00:00:09")):
        body = heartbeat()
        body["resources"]["mac"] = mac
        assert each.leases(body) == []
    assert other.leases() == []  # no MAC reported: it is never woken
    clock.now += 200  # the sleeper has gone quiet (offline after 180 s); the others beat on
    awake.leases(heartbeat())
    other.leases(heartbeat())
    set_demand(coordinator, *[(BOINC, 1)] * 6)
    coordinator.allocation_round()  # 4 VMs on the two awake desktops; 2 jobs left unmet
    reply = awake.beat(heartbeat())
    assert reply.json()["wake"] == ["52:54:00:00:00:09"]
    assert "wake" not in other.beat(heartbeat()).json()  # another subnet: not asked
    metrics = scrape(clients["a"].get("/metrics").text)
    assert metrics["cvmc_wakes_requested_total"] == 1
    assert metrics["cvmc_wakes_sent_total"] == 1
    # Asked once per WAKE_RETRY_S; the reply stops carrying it after WAKE_DELIVER_S.
    clock.now += 200
    coordinator.allocation_round()
    assert "wake" not in awake.beat(heartbeat()).json()
    assert scrape(clients["a"].get("/metrics").text)["cvmc_wakes_requested_total"] == 1
