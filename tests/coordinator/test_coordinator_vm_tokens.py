"""Research VMs' HTCondor tokens: the coordinator fetches one per offered lease from the minting
service's unix socket and puts it in that lease (issue 15, finding 3).

Real: a real unix socket served by a thread of this test in the service's place (one token
line per connection, then EOF), the real app, store (SQLite and PostgreSQL) and the agent's own
reply parser. The minting program itself, behind a real socket activation, is tested in
tests/coordinator/test_vm_token_cli.py; the last test here drives the coordinator with it.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from coordinator.coord_support import (
    BOINC,
    Clock,
    Desk,
    activated_minter,
    make_coordinator,
    running,
    scrape,
    set_demand,
    write_setup,
)
from starlette.testclient import TestClient

from cvmc.coordinator.adapters.vm_tokens import SocketVmTokens
from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.domain.config import ConfigError
from cvmc.coordinator.ports import VmTokenError
from cvmc.coordinator.service.coordinator import Coordinator
from cvmc.gridmodel.condor_token import jwt_key, token_claims
from cvmc.protocol.leases import CONDOR_TOKEN, MAX_CONDOR_TOKEN


def fake_jwt(n: int) -> str:
    """A string of the token's shape (three base64url parts); what it says does not matter
    here, since the coordinator only passes it on."""
    return f"eyJhbGciOiJIUzI1NiJ9.eyJuIjo{n:04d}fQ.c2lnbmF0dXJl{n:04d}"


@contextlib.contextmanager
def token_server(path: Path, reply: Callable[[int], bytes | None]) -> Iterator[list[int]]:
    """Serve ``reply(n)`` to the n-th connection on a unix socket at ``path`` (``None``: hold
    the connection open and say nothing). Yields the list of connection numbers served."""
    served: list[int] = []
    stop = threading.Event()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    listener.settimeout(0.1)
    held: list[socket.socket] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            n = len(served)
            served.append(n)
            data = reply(n)
            if data is None:
                held.append(conn)
                continue
            with conn:
                conn.sendall(data)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


@pytest.fixture
def sock_path() -> Iterator[Path]:
    # A unix socket's path is limited to 107 bytes; pytest's tmp_path can be longer.
    directory = Path(tempfile.mkdtemp(prefix="cvmc-vmtok-"))
    yield directory / "s"
    shutil.rmtree(directory)


# -- the adapter ----------------------------------------------------------------------------


def test_adapter_returns_the_token_line(sock_path: Path) -> None:
    with token_server(sock_path, lambda n: fake_jwt(n).encode() + b"\n"):
        tokens = SocketVmTokens(str(sock_path), 2.0)
        assert tokens.token() == fake_jwt(0)
        assert tokens.token() == fake_jwt(1)


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"", "not a token"),
        (b"not a token\n", "not a token"),
        (b"a.b\n", "not a token"),
        (b"\xff\xfe.\x00.zz\n", "not a token"),
        (b"A" * (MAX_CONDOR_TOKEN + 10), "longer than a token"),
        (b"aa.bb.cc\nsecond line\n", "not a token"),
    ],
)
def test_adapter_refuses_what_is_not_one_bounded_token(
    sock_path: Path, reply: bytes, why: str
) -> None:
    with token_server(sock_path, lambda n: reply), pytest.raises(VmTokenError, match=why) as caught:
        SocketVmTokens(str(sock_path), 2.0).token()
    assert "\\x" not in str(caught.value)  # the reply's bytes are not echoed


def test_adapter_gives_up_on_a_silent_service_within_its_deadline(sock_path: Path) -> None:
    with token_server(sock_path, lambda n: None):
        started = time.monotonic()
        with pytest.raises(VmTokenError, match=r"no token within 0\.5 s"):
            SocketVmTokens(str(sock_path), 0.5).token()
        assert time.monotonic() - started < 3


def test_adapter_reports_a_missing_service(sock_path: Path) -> None:
    with pytest.raises(VmTokenError, match=str(sock_path)):
        SocketVmTokens(str(sock_path), 0.5).token()


# -- the coordinator ------------------------------------------------------------------------


@pytest.fixture
def world(
    tmp_path: Path, db_url: str, sock_path: Path
) -> Iterator[tuple[Coordinator, TestClient, Clock, Path]]:
    clock = Clock()
    config = write_setup(tmp_path, db_url, vm_tokens={"socket": str(sock_path), "timeout_s": 1})
    coordinator = make_coordinator(config, clock)
    with TestClient(create_app(coordinator)) as client:
        yield coordinator, client, clock, sock_path
    coordinator.store.close()


def test_each_offered_lease_carries_its_own_token_until_started(world: Any) -> None:
    coordinator, client, _clock, path = world
    with token_server(path, lambda n: fake_jwt(n).encode() + b"\n") as served:
        desk = Desk(client, "desk00")
        assert desk.leases() == []
        set_demand(coordinator, (BOINC, 1), (BOINC, 1))
        coordinator.allocation_round()
        offered = desk.leases()
        assert len(offered) == 2
        tokens = {lease["lease_id"]: lease["condor_token"] for lease in offered}
        assert len(set(tokens.values())) == 2  # one token per VM start
        assert len(served) == 2
        # Level-triggered replies repeat each offered lease with the same token.
        again = desk.leases()
        assert {lease["lease_id"]: lease["condor_token"] for lease in again} == tokens
        assert len(served) == 2
        # Once started, the lease carries no token, and none is minted again.
        started = desk.leases(running(offered))
        assert started
        assert all("condor_token" not in lease for lease in started)
        assert len(served) == 2
    samples = scrape(client.get("/metrics").text)
    assert samples["cvmc_vm_tokens_minted_total"] == 2
    assert samples["cvmc_vm_token_failures_total"] == 0


def test_an_offered_lease_without_a_token_is_left_out_until_one_is_minted(world: Any) -> None:
    coordinator, client, _clock, path = world
    desk = Desk(client, "desk00")
    desk.leases()
    set_demand(coordinator, (BOINC, 1))
    coordinator.allocation_round()
    # No minting service: the lease is not offered yet (a desktop cannot start it without a
    # token), and the failure is counted.
    assert desk.leases() == []
    assert scrape(client.get("/metrics").text)["cvmc_vm_token_failures_total"] == 1
    with token_server(path, lambda n: fake_jwt(7).encode() + b"\n"):
        (lease,) = desk.leases()
    assert lease["vm_name"] == BOINC
    assert lease["condor_token"] == fake_jwt(7)


def test_no_token_in_leases_when_the_coordinator_mints_none(tmp_path: Path, db_url: str) -> None:
    coordinator = make_coordinator(write_setup(tmp_path, db_url), Clock())
    with TestClient(create_app(coordinator)) as client:
        desk = Desk(client, "desk00")
        desk.leases()
        set_demand(coordinator, (BOINC, 1))
        coordinator.allocation_round()
        (lease,) = desk.leases()
    coordinator.store.close()
    assert "condor_token" not in lease


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"socket": "run/cvmc-vm-token.sock"}, "vm_tokens.socket.*not an absolute path"),
        ({"socket": 5}, "vm_tokens.socket"),
        ({"timeout_s": 0}, "vm_tokens.timeout_s"),
        ({"timeout_s": 600}, "vm_tokens.timeout_s"),
        ({"sockets": "/run/x"}, "vm_tokens.sockets.*unknown key"),
    ],
)
def test_bad_vm_token_settings_are_refused_by_name(
    tmp_path: Path, section: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        write_setup(tmp_path, "sqlite:///unused.db", vm_tokens=section)


def test_leases_carry_tokens_the_real_minting_program_signed(
    tmp_path: Path, db_url: str, sock_path: Path
) -> None:
    """The coordinator against cvmc-vm-token behind a real socket activation: each offered
    lease's token is a research VM's, with the unit's identity, scope and lifetime, and its
    signature checks with the key (HTCondor's derivation, cvmc.gridmodel.condor_token)."""
    key = b"Zq8Lx2WmPb7Ck4VnRt9Hs3Jd6Fg1Ya5E"
    key_file = tmp_path / "RESEARCH_VM"
    key_file.write_bytes(key)
    key_file.chmod(0o400)
    args = ["--key-id", "RESEARCH_VM", "--identity", "research-vm@cm.lab", "--issuer", "cm.lab"]
    args += ["--lifetime", "600", "--authz", "ADVERTISE_STARTD", "--authz", "READ"]
    config = write_setup(tmp_path, db_url, vm_tokens={"socket": str(sock_path)})
    coordinator = make_coordinator(config, Clock())
    with activated_minter(sock_path, key_file, args), TestClient(create_app(coordinator)) as client:
        desk = Desk(client, "desk00")
        desk.leases()
        set_demand(coordinator, (BOINC, 1), (BOINC, 1))
        coordinator.allocation_round()
        leases = desk.leases()
    coordinator.store.close()
    assert len(leases) == 2
    seen = set()
    for lease in leases:
        token = lease["condor_token"]
        header, payload, signature = token.split(".")
        decoded = token_claims(token, bound=CONDOR_TOKEN, max_chars=MAX_CONDOR_TOKEN)
        assert decoded["header"] == {"alg": "HS256", "kid": "RESEARCH_VM"}
        claims = decoded["claims"]
        assert claims["sub"] == "research-vm@cm.lab"
        assert claims["iss"] == "cm.lab"
        assert claims["scope"] == "condor:/ADVERTISE_STARTD condor:/READ"
        assert claims["exp"] - claims["iat"] == 600
        expected = hmac.new(jwt_key(key, "RESEARCH_VM"), f"{header}.{payload}".encode(), "sha256")
        assert signature == base64.urlsafe_b64encode(expected.digest()).rstrip(b"=").decode()
        seen.add(claims["jti"])
    assert len(seen) == 2
