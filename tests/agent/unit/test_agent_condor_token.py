"""A lease's own HTCondor token: the agent puts it in that VM's seed, falls back to the
desktop's static ``condor.token``, declines ``no_identity`` with neither, and never logs it.

The control loop is the real one, with the fakes of ``agent.agent_fakes``; the seed is read
back from the user-data the agent handed the seed factory. ``DirIdentities`` runs on real files.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
from pathlib import Path

import pytest
from agent.agent_fakes import STATIC_TOKEN, World, identity_files, make_world, write_identity

from cvmc.agent.adapters.system import DirIdentities

MONDAY_NIGHT = dt.datetime(2026, 11, 23, 2, 0)
BOINC = "its-u11-boinc-20120415"
TOKEN_PATH = "/run/grid/condor/token"  # noqa: S105 - a path in the VM, not a secret


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def lease_token() -> str:
    """A fresh HS256 JWS with an HTCondor IDTOKEN's header and claims (random key)."""
    header = _b64url(json.dumps({"alg": "HS256", "kid": "RESEARCH_VM"}).encode())
    claims = _b64url(
        json.dumps(
            {
                "sub": "research-vm@lab.example",
                "iss": "lab.example",
                "jti": secrets.token_hex(16),
                "scope": "condor:/ADVERTISE_STARTD condor:/ADVERTISE_MASTER condor:/READ",
            }
        ).encode()
    )
    mac = hmac.new(secrets.token_bytes(32), f"{header}.{claims}".encode(), hashlib.sha256)
    return f"{header}.{claims}.{_b64url(mac.digest())}"


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record's message and every extra field it carries, as one string."""
    return "\n".join(
        f"{record.getMessage()} {sorted(map(str, vars(record).values()))}"
        for record in caplog.records
    )


def started(world: World) -> list[str]:
    return [str(slot.state) for slot in world.agent.slots]


def test_the_leases_token_reaches_that_vms_seed_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    world = make_world(MONDAY_NIGHT)
    first, second = lease_token(), lease_token()
    world.lease("l-1", BOINC, condor_token=first)
    world.lease("l-2", BOINC, condor_token=second)
    world.run_for(70)
    assert started(world) == ["running", "running"]
    by_lease = {slot.lease.lease_id: slot.index for slot in world.agent.slots if slot.lease}
    assert world.seed_file(by_lease["l-1"], TOKEN_PATH) == f"{first}\n".encode()
    assert world.seed_file(by_lease["l-2"], TOKEN_PATH) == f"{second}\n".encode()
    assert world.declines() == []
    # Not in a log line, a heartbeat or the status file: only in the seed.
    logged = everything_logged(caplog)
    events = [getattr(record, "event", "") for record in caplog.records]
    assert events.count("vm.launch") == 2  # the launches were logged, and captured here
    assert events.count("vm.running") == 2
    for token in (first, second):
        signature = token.rsplit(".", 1)[1]
        assert signature not in logged
        assert signature not in json.dumps(world.coordinator.heartbeats)
        assert signature not in json.dumps(world.statuses, default=str)


def test_a_lease_without_a_token_takes_the_desktops_static_one() -> None:
    world = make_world(MONDAY_NIGHT)
    world.lease("l-1", BOINC)
    world.run_for(70)
    assert "running" in started(world)
    slot = next(s.index for s in world.agent.slots if s.lease is not None)
    assert world.seed_file(slot, TOKEN_PATH) == STATIC_TOKEN


def test_the_leases_token_wins_over_the_static_one() -> None:
    world = make_world(MONDAY_NIGHT)
    token = lease_token()
    world.lease("l-1", BOINC, condor_token=token)
    world.run_for(70)
    slot = next(s.index for s in world.agent.slots if s.lease is not None)
    assert world.seed_file(slot, TOKEN_PATH) == f"{token}\n".encode()


def test_a_desktop_without_a_static_token_starts_leases_that_carry_one() -> None:
    world = make_world(MONDAY_NIGHT)
    world.identities.static_token = None
    token = lease_token()
    world.lease("l-1", BOINC, condor_token=token)
    world.run_for(70)
    assert "running" in started(world)
    slot = next(s.index for s in world.agent.slots if s.lease is not None)
    assert world.seed_file(slot, TOKEN_PATH) == f"{token}\n".encode()


def test_no_token_in_the_lease_or_on_the_desktop_declines_no_identity(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cvmc")
    world = make_world(MONDAY_NIGHT)
    world.identities.static_token = None
    world.lease("l-1", BOINC)
    world.run_for(70)
    assert world.declines() == [("l-1", "no_identity")]
    assert started(world) == ["idle", "idle"]
    assert world.store.ensured == []  # declined before any download
    assert world.seeds.seeds == {}
    assert world.hypervisor.vms == {}
    detail = next(d["detail"] for hb in world.coordinator.heartbeats for d in hb["declined"])
    assert "lease l-1 carried no HTCondor token" in detail
    assert "the desktop has none" in detail
    assert "lease l-1 carried no HTCondor token" in everything_logged(caplog)


def test_a_lease_with_a_bad_token_is_declined_malformed_without_echoing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    world = make_world(MONDAY_NIGHT)
    token = lease_token() + ".extra"
    world.lease("l-1", BOINC, condor_token=token)
    world.run_for(70)
    assert world.declines() == [("l-1", "malformed")]
    assert world.store.ensured == []
    signature = token.split(".")[2]
    assert signature not in everything_logged(caplog)
    assert signature not in json.dumps(world.coordinator.heartbeats)
    assert "lease l-1.condor_token" in json.dumps(world.coordinator.heartbeats)


# -- DirIdentities: the desktop's identity directory, on real files ---------------------------


def test_a_slot_without_condor_token_is_an_identity_without_one(tmp_path: Path) -> None:
    write_identity(tmp_path, slots=1)
    (tmp_path / "condor.token").unlink()
    identity = DirIdentities(str(tmp_path)).for_slot(0)
    assert identity is not None
    assert identity.files == identity_files(0)
    assert identity.condor_token is None


def test_the_slots_own_token_wins_over_the_shared_one(tmp_path: Path) -> None:
    write_identity(tmp_path, slots=2)
    (tmp_path / "slot1" / "condor.token").write_bytes(b"slot-one-token")
    identities = DirIdentities(str(tmp_path))
    one, zero = identities.for_slot(1), identities.for_slot(0)
    assert one is not None
    assert zero is not None
    assert one.condor_token == b"slot-one-token"
    assert zero.condor_token == (tmp_path / "condor.token").read_bytes()
    for shown in (repr(one), str(one)):  # secrets (token, VPN key) never in a repr
        assert "slot-one-token" not in shown
        assert "KEY1" not in shown


def test_missing_vpn_files_or_an_unreadable_token_are_no_identity(tmp_path: Path) -> None:
    write_identity(tmp_path, slots=2)
    (tmp_path / "slot0" / "client.key").unlink()
    (tmp_path / "slot1" / "condor.token").mkdir()  # there, but not a readable file
    identities = DirIdentities(str(tmp_path))
    assert identities.for_slot(0) is None
    assert identities.for_slot(1) is None
    assert identities.for_slot(2) is None  # no such slot
    assert DirIdentities(None).for_slot(0) is None
