"""The agent's real HTTP adapter against the real coordinator, over real HTTPS on loopback.

uvicorn serves the app with a throw-away certificate; ``HttpCoordinator`` (the code desktops
run) enrols with a one-time token, heartbeats with bodies built by the agent's own
``build_heartbeat``, gets a lease, fetches the catalogue, recovers from lost sequence state,
and is refused once revoked.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent.agent_servers import self_signed
from coordinator.coord_support import (
    BOINC,
    Clock,
    make_coordinator,
    serve_in_thread,
    set_demand,
    token,
    write_setup,
)

from cvmc import protocol
from cvmc.agent.adapters.http_coordinator import AgentState, HttpCoordinator
from cvmc.agent.domain import heartbeat
from cvmc.agent.domain.engine import HostState, HwVirt, Verdict
from cvmc.agent.domain.slots import Slot, SlotState
from cvmc.agent.ports import CoordinatorError
from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.entrypoints.cli import main as cli
from cvmc.coordinator.service.coordinator import Coordinator
from cvmc.protocol import Lease


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Coordinator, str, str]]:
    """(coordinator, https base URL, CA file) with uvicorn in a thread on 127.0.0.1."""
    clock = Clock(time.time())
    coordinator = make_coordinator(write_setup(tmp_path, f"sqlite:///{tmp_path / 'c.db'}"), clock)
    cert, key = self_signed(tmp_path)
    app = create_app(coordinator)
    with serve_in_thread(app, ssl_certfile=cert, ssl_keyfile=key) as port:
        yield coordinator, f"https://127.0.0.1:{port}", cert


def store_key(desktop: str) -> bytes:
    return hashlib.sha256(desktop.encode()).digest()


def agent(tmp_path: Path, base: str, cafile: str, desktop: str) -> HttpCoordinator:
    token_file = tmp_path / f"{desktop}.token"
    token_file.write_text(token(desktop, issued_at=time.time()) + "\n")
    return HttpCoordinator(
        base,
        state=AgentState(str(tmp_path / f"{desktop}-state"), store_key(desktop)),
        desktop=desktop,
        platform="linux",
        enrol_token_file=str(token_file),
        ssl_context=ssl.create_default_context(cafile=cafile),
    )


def body(slots: list[Slot]) -> dict[str, Any]:
    return heartbeat.build_heartbeat(
        sent_at="2026-11-25T04:00:00+00:00",
        agent_version="0.1.0",
        host=HostState(
            users=0,
            cpus=4,
            memory_total_mb=16000,
            memory_free_mb=9000,
            hw_virt=HwVirt(present=True),
        ),
        verdict=Verdict(may_run=True, may_start=True, hard_stop=False, reason="allowed"),
        facts=heartbeat.DesktopFacts(
            disk_free_mb=50000, hypervisor="qemu", hypervisor_version="7.2", max_vms=2
        ),
        slots=slots,
        declined=[],
        images=[],
        now=100.0,
    )


def test_agent_adapter_enrols_heartbeats_leases_and_reads_the_catalogue(
    served: tuple[Coordinator, str, str], tmp_path: Path
) -> None:
    coordinator, base, cafile = served
    client = agent(tmp_path, base, cafile, "desk00")
    idle = [Slot(0), Slot(1)]
    reply = protocol.parse_heartbeat_reply(client.heartbeat(body(idle)), 0.0)
    assert reply.leases == ()
    assert reply.heartbeat_s == 60
    assert not (tmp_path / "desk00.token").exists()  # spent
    set_demand(coordinator, (BOINC, 1))
    coordinator.allocation_round()
    reply = protocol.parse_heartbeat_reply(client.heartbeat(body(idle)), 0.0)
    (lease,) = reply.leases
    assert (lease.vm_name, lease.cpus, lease.memory_mb) == (BOINC, 1, 512)
    running = Slot(
        0, SlotState.RUNNING, Lease(lease.lease_id, BOINC, 1, 512, 300, 0.0), BOINC, 512, 1
    )
    reply = protocol.parse_heartbeat_reply(client.heartbeat(body([running, Slot(1)])), 0.0)
    assert [x.lease_id for x in reply.leases] == [lease.lease_id]
    assert protocol.parse_catalogue(client.catalogue()) == []
    # The agent lost its sequence state (a restored backup): 409, and it continues above.
    (tmp_path / "desk00-state" / "seq.json").write_text('{"seq": 0}')
    client.state = AgentState(str(tmp_path / "desk00-state"), store_key("desk00"))
    reply = protocol.parse_heartbeat_reply(client.heartbeat(body([running, Slot(1)])), 0.0)
    assert [x.lease_id for x in reply.leases] == [lease.lease_id]
    # Revoked by the operator: the agent gets 403 revoked and drops its credential.
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "{coordinator.config.database.url}"\n')
    assert cli(["--config", str(config), "revoke-desktop", "desk00"]) == 0
    with pytest.raises(CoordinatorError) as caught:
        client.heartbeat(body(idle))
    assert caught.value.code == "revoked"
    assert client.state.credential() is None
