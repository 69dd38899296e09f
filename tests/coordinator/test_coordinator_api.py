"""API tests: the real app (Starlette), real store (SQLite and PostgreSQL), real demand parser.

Each bad request gets its documented 4xx and leaves every table exactly as it was.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from coordinator.coord_support import (
    BOINC,
    BULK,
    ENROL_KEY,
    HB,
    Clock,
    Desk,
    dump,
    enrol_body,
    heartbeat,
    make_coordinator,
    running,
    scrape,
    set_demand,
    signed_headers,
    write_setup,
)
from starlette.testclient import TestClient

from cvmc import protocol
from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.entrypoints.cli import main as cli
from cvmc.coordinator.service.coordinator import Coordinator


def test_enrol_heartbeat_lease_run_and_revoke_when_demand_drops(setup: Any) -> None:
    coordinator, client, clock = setup
    a, b = Desk(client, "desk00.lab.example"), Desk(client, "desk04")
    assert a.leases() == []
    assert b.leases() == []
    set_demand(coordinator, (BOINC, 1), (BOINC, 1), (BOINC, 1), (BULK, 1), (None, 1))
    coordinator.allocation_round()
    got_a, got_b = a.leases(), b.leases()
    assert sorted(x["vm_name"] for x in got_a + got_b) == sorted([BOINC, BOINC, BOINC, BULK])
    assert len(got_a) == 2  # two departments, two slots each
    assert len(got_b) == 2
    assert all(0 < x["ttl_s"] <= 300 for x in got_a + got_b)
    # The same set again: level-triggered, nothing new.
    coordinator.allocation_round()
    assert {x["lease_id"] for x in a.leases()} == {x["lease_id"] for x in got_a}
    # Both VMs run; one BOINC job finishes: the newest running BOINC lease is revoked.
    a.leases(running(got_a))
    b.leases(running(got_b))
    clock.now += 30
    set_demand(coordinator, (BOINC, 2), (BOINC, 2), (BULK, 2))
    result = coordinator.allocation_round()
    assert list(result.revoked.values()) == ["demand"]
    assert not result.new
    remaining = [x for x in a.leases(running(got_a)) + b.leases(running(got_b))]
    assert sorted(x["vm_name"] for x in remaining) == sorted([BOINC, BOINC, BULK])
    samples = scrape(client.get("/metrics").text)
    assert samples[f'cvmc_leases{{vm_name="{BOINC}"}}'] == 2
    assert samples['cvmc_leases_revoked_total{reason="demand"}'] == 1


@pytest.mark.parametrize("busy", [0, 1])
def test_demand_drop_revokes_the_vm_without_a_job(tmp_path: Path, db_url: str, busy: int) -> None:
    """Two VMs run, one job remains, running on one of them: the round revokes the other.
    The job's VM is named by its StartdPrincipal's address, its tunnel address, which the grid
    file's address plan maps to a desktop and slot (the heartbeat gave the lease's slot)."""
    config = write_setup(tmp_path, db_url)
    grid = json.loads(Path(config.grid.model_file).read_text())
    grid["vpn_layout"] = [{"name": "vpn-a", "port": 1194, "network": "10.64.0.0/18"}]
    Path(config.grid.model_file).write_text(json.dumps(grid))
    clock = Clock()
    coordinator = make_coordinator(config, clock)
    try:
        with TestClient(create_app(coordinator)) as client:
            desks = [Desk(client, "desk00.lab.example"), Desk(client, "desk04")]
            assert [desk.leases() for desk in desks] == [[], []]
            set_demand(coordinator, (BOINC, 1), (BOINC, 1))
            coordinator.allocation_round()
            got = [desk.leases() for desk in desks]
            assert [len(leases) for leases in got] == [1, 1]
            # Each VM runs in its desktop's slot 1: desk00's is 10.64.0.3, desk04's 10.64.0.11
            # (10.64.0.0 + 2 + index 4 * 2 slots + slot 1).
            beats = [
                heartbeat(
                    slots=[
                        {"slot": 0, "state": "idle", "vm_name": None, "lease_id": None},
                        {
                            "slot": 1,
                            "state": "running",
                            "vm_name": BOINC,
                            "lease_id": leases[0]["lease_id"],
                        },
                    ]
                )
                for leases in got
            ]
            for desk, beat in zip(desks, beats, strict=True):
                desk.leases(beat)
            clock.now += 30
            address = ["10.64.0.3", "10.64.0.11"][busy]
            Path(config.demand.job_ads_file).write_text(
                f'ClusterId = 100\nProcId = 0\nJobStatus = 2\nvm_name = "{BOINC}"\n'
                f'RequestCpus = 1\nRequestMemory = 256\nOwner = "alice"\n'
                f'StartdPrincipal = "execute-side@matchsession/{address}"\n'
            )
            coordinator.demand_at = float("-inf")
            result = coordinator.allocation_round()
            assert result is not None
            idle = got[1 - busy][0]["lease_id"]
            assert result.revoked == {idle: "demand"}
            left = [desk.leases(beat) for desk, beat in zip(desks, beats, strict=True)]
            assert [x["lease_id"] for x in left[busy]] == [got[busy][0]["lease_id"]]
            assert left[1 - busy] == []
            samples = scrape(client.get("/metrics").text)
            assert samples[f'cvmc_vms_with_jobs{{vm_name="{BOINC}"}}'] == 1
    finally:
        coordinator.store.close()


def test_unstarted_lease_expires_and_offline_desktop_loses_leases(setup: Any) -> None:
    coordinator, client, clock = setup
    a, b = Desk(client, "desk00"), Desk(client, "desk04")
    a.leases(), b.leases()
    set_demand(coordinator, (BOINC, 1), (BOINC, 1))
    coordinator.allocation_round()
    lease_a, lease_b = a.leases(), b.leases()
    assert len(lease_a) == len(lease_b) == 1
    b.leases(running(lease_b))  # b starts its VM; a never does
    clock.now += 301
    b.leases(running(lease_b))
    # a's offer expired: its heartbeat no longer carries it, and the round drops it.
    assert a.leases() == []
    result = coordinator.allocation_round()
    assert lease_b[0]["lease_id"] not in result.revoked
    # b goes silent: offline after 180 s, its lease is revoked.
    clock.now += 200
    a.leases()
    set_demand(coordinator, (BOINC, 1), (BOINC, 1))
    result = coordinator.allocation_round()
    assert result.revoked.get(lease_b[0]["lease_id"]) == "offline"
    assert all(lease.desktop_id == a.id for lease in result.new)


def test_declined_lease_is_dropped_and_the_type_backs_off(setup: Any) -> None:
    coordinator, client, _ = setup
    a = Desk(client, "desk00")
    a.leases()
    set_demand(coordinator, (BULK, 1))
    coordinator.allocation_round()
    (lease,) = a.leases()
    declined = heartbeat(declined=[{"lease_id": lease["lease_id"], "reason": "image_unavailable"}])
    assert a.leases(declined) == []
    samples = scrape(client.get("/metrics").text)
    assert samples['cvmc_leases_declined_total{reason="image_unavailable"}'] == 1
    assert samples['cvmc_leases_declined_total{reason="memory"}'] == 0
    result = coordinator.allocation_round()
    assert result.new == []  # the only desktop declined this type: no new offer for 600 s


def test_fair_across_departments(setup: Any) -> None:
    coordinator, client, _ = setup
    desks = [Desk(client, f"desk{i:02d}") for i in range(10)]
    for desk in desks:
        desk.leases()
    set_demand(coordinator, *[(BOINC, 1)] * 6)
    result = coordinator.allocation_round()
    by_dept: dict[str, int] = {}
    for lease in result.new:
        index = next(i for i, d in enumerate(desks) if d.id == lease.desktop_id)
        dept = ["dept_chem"] * 4 + ["dept_phys"] * 4 + ["default"] * 2
        by_dept[dept[index]] = by_dept.get(dept[index], 0) + 1
    assert by_dept == {"dept_chem": 2, "dept_phys": 2, "default": 2}


def test_owner_present_or_policy_closed_desktop_gets_nothing(setup: Any) -> None:
    coordinator, client, _ = setup
    a = Desk(client, "desk00")
    a.leases(heartbeat(users=1, may_start=False))
    set_demand(coordinator, (BOINC, 1))
    assert coordinator.allocation_round().new == []
    assert coordinator.counts.desktops["owner_present"] == 1


def test_a_vm_saved_while_its_owner_is_back_keeps_its_lease(setup: Any) -> None:
    """grid_policy.suspend_minutes: a desktop whose owner came back reports its VM saved
    (``suspended``) with its lease; the coordinator holds that lease as running, rounds keep
    it while its job's demand lasts, and it goes once the desktop reports the slot stopped."""
    coordinator, client, clock = setup
    a = Desk(client, "desk00")
    a.leases()
    set_demand(coordinator, (BOINC, 1))
    coordinator.allocation_round()
    (lease,) = a.leases()
    a.leases(running([lease]))
    saved = heartbeat(
        users=1,
        may_start=False,
        slots=[{"slot": 0, "state": "suspended", "vm_name": BOINC, "lease_id": lease["lease_id"]}],
    )
    for _ in range(3):
        clock.now += 60
        assert [x["lease_id"] for x in a.leases(saved)] == [lease["lease_id"]]
        result = coordinator.allocation_round()
        assert result.revoked == {}
        assert result.new == []
    assert coordinator.counts.running == {BOINC: 1}
    assert coordinator.counts.desktops["owner_present"] == 1
    stopped = heartbeat(
        users=1,
        may_start=False,
        slots=[{"slot": 0, "state": "stopped", "vm_name": BOINC, "lease_id": lease["lease_id"]}],
    )
    assert a.leases(stopped) == []


# -- bad input: a clear 4xx, and nothing written ------------------------------------------


def _engine(coordinator: Coordinator) -> Any:
    return coordinator.store.engine  # type: ignore[attr-defined]


def test_bad_requests_write_nothing(setup: Any) -> None:
    coordinator, client, _ = setup
    a, b = Desk(client, "desk00"), Desk(client, "desk04")
    a.leases()
    before = dump(_engine(coordinator))
    raw = json.dumps(heartbeat()).encode()

    def post(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        reply = client.post(HB, content=body, headers=headers)
        jsonschema.validate(reply.json(), protocol.ERROR_SCHEMA)
        return reply.status_code, reply.json()

    # replayed heartbeat (the same sequence number again)
    status, body = post(raw, signed_headers("POST", HB, a.id, a.credential, a.seq, raw))
    assert (status, body["error"], body["last_seq"]) == (409, "replayed_sequence", a.seq)
    # malformed JSON, correctly signed
    bad = b'{"sent_at": '
    status, body = post(bad, signed_headers("POST", HB, a.id, a.credential, a.seq + 1, bad))
    assert (status, body["error"]) == (400, "malformed")
    # valid JSON that breaks the schema (unknown field), correctly signed
    extra = json.dumps({**heartbeat(), "surprise": 1}).encode()
    status, body = post(extra, signed_headers("POST", HB, a.id, a.credential, a.seq + 1, extra))
    assert (status, body["error"]) == (400, "malformed")
    assert "surprise" in body["message"]
    # oversized body (> 64 KiB)
    big = json.dumps({**heartbeat(), "pad": "x" * 70000}).encode()
    status, body = post(big, signed_headers("POST", HB, a.id, a.credential, a.seq + 1, big))
    assert (status, body["error"]) == (413, "too_large")
    # foreign credential: b's key with a's id
    status, body = post(raw, signed_headers("POST", HB, a.id, b.credential, a.seq + 1, raw))
    assert (status, body["error"]) == (401, "bad_signature")
    # a body changed after signing
    headers = signed_headers("POST", HB, a.id, a.credential, a.seq + 1, raw)
    status, body = post(raw.replace(b'"users": 0', b'"users": 1'), headers)
    assert (status, body["error"]) == (401, "bad_signature")
    # unknown desktop, missing headers
    status, body = post(raw, signed_headers("POST", HB, "d-nobody", a.credential, 99, raw))
    assert (status, body["error"]) == (401, "unknown_desktop")
    status, body = post(raw, {"Content-Type": "application/json"})
    assert (status, body["error"]) == (401, "unknown_desktop")
    assert dump(_engine(coordinator)) == before
    # The sequence did not move: the next honest heartbeat still works.
    assert a.beat().status_code == 200


@pytest.mark.parametrize(
    "sent_at", ["2024-01-01T12:99:00Z", "2026-13-01T00:00:00Z", "yesterday", "2026-11-23"]
)
def test_heartbeat_with_a_sent_at_that_is_no_date_time_is_refused(setup: Any, sent_at: str) -> None:
    """The schema says ``format: date-time`` (RFC 3339); the coordinator holds it to that
    (found by fuzzing past authentication: such a heartbeat was accepted)."""
    coordinator, client, _ = setup
    a = Desk(client, "desk00")
    a.leases()
    before = dump(_engine(coordinator))
    reply = a.beat({**heartbeat(), "sent_at": sent_at})
    assert (reply.status_code, reply.json()["error"]) == (400, "malformed")
    assert "sent_at" in reply.json()["message"]
    assert dump(_engine(coordinator)) == before


def test_bad_enrolments_write_nothing(setup: Any) -> None:
    coordinator, client, _ = setup
    Desk(client, "desk00")
    before = dump(_engine(coordinator))
    cases = [
        (enrol_body("desk00"), 401, "invalid_token"),  # used before
        (enrol_body("nothere"), 401, "invalid_token"),  # not a desktop of the grid
        (  # desk01's token presented by desk02
            json.dumps({**json.loads(enrol_body("desk01")), "desktop": "desk02"}).encode(),
            401,
            "invalid_token",
        ),
        (b"[1, 2", 400, "malformed"),
        (enrol_body("desk01", platform="beos"), 400, "malformed"),
        (enrol_body("desk01", pad="x" * 70000), 413, "too_large"),
    ]
    for body, status, error in cases:
        reply = client.post("/api/v1/enrol", content=body)
        assert (reply.status_code, reply.json()["error"]) == (status, error), body[:80]
    assert dump(_engine(coordinator)) == before


def test_deeply_nested_bodies_get_400_and_write_nothing(setup: Any) -> None:
    """Issue 15, finding 4: 40 kB of nested brackets made ``json.loads`` raise RecursionError
    (an unauthenticated 500). The depth is checked before parsing: 400 ``malformed``."""
    coordinator, client, _ = setup
    a = Desk(client, "desk00")
    a.leases()
    before = dump(_engine(coordinator))
    nested = b"[" * 20000 + b"]" * 20000
    assert len(nested) == 40000
    reply = client.post("/api/v1/enrol", content=nested)
    assert (reply.status_code, reply.json()["error"]) == (400, "malformed")
    assert "deeper than 32" in reply.json()["message"]
    objects = b'{"a":' * 8000 + b"1" + b"}" * 8000
    reply = client.post("/api/v1/enrol", content=objects)
    assert (reply.status_code, reply.json()["error"]) == (400, "malformed")
    signed = signed_headers("POST", HB, a.id, a.credential, a.seq + 1, nested)
    reply = client.post(HB, content=nested, headers=signed)
    assert (reply.status_code, reply.json()["error"]) == (400, "malformed")
    assert dump(_engine(coordinator)) == before
    assert a.beat().status_code == 200


def test_stale_credential_after_reenrolment_and_revocation(setup: Any, tmp_path: Path) -> None:
    coordinator, client, _ = setup
    old = Desk(client, "desk00")
    old.leases()
    reply = client.post("/api/v1/enrol", content=enrol_body("desk00", generation=2))
    assert reply.status_code == 201
    new_id, new_cred = reply.json()["desktop_id"], reply.json()["credential"]
    before = dump(_engine(coordinator))
    stale = old.beat()
    assert (stale.status_code, stale.json()["error"]) == (401, "unknown_desktop")
    assert dump(_engine(coordinator)) == before
    # Revoked with the CLI (as the role does): 403 revoked, and nothing written.
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'[database]\nurl = "{coordinator.config.database.url}"\n'
        f'[enrolment]\nkey_file = "{coordinator.config.enrolment.key_file}"\n'
    )
    # desk09 never enrolled: exit 3 names it, and DESK00 is revoked all the same.
    assert cli(["--config", str(config), "revoke-desktop", "DESK00.lab.example", "desk09"]) == 3
    before = dump(_engine(coordinator))
    raw = json.dumps(heartbeat()).encode()
    reply = client.post(
        HB, content=raw, headers=signed_headers("POST", HB, new_id, new_cred, 1, raw)
    )
    assert (reply.status_code, reply.json()["error"]) == (403, "revoked")
    assert dump(_engine(coordinator)) == before


def test_catalogue_serves_the_admins_signed_manifests(setup: Any, tmp_path: Path) -> None:
    from cvmc.agent.adapters import minisign  # noqa: PLC0415
    from cvmc.agent.entrypoints.cli import main as agent_cli  # noqa: PLC0415

    coordinator, client, _ = setup
    key = minisign.SecretKey.generate()
    key_file = tmp_path / "admin.key"
    key_file.write_text(key.file_text())
    images = Path(coordinator.config.images.dir)
    image = images / f"{BOINC}.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(4096))
    assert (
        agent_cli(
            ["image", "sign", "--key", str(key_file), "--image", str(image), "--vm-name", BOINC]
        )
        == 0
    )
    (images / "orphan.qcow2.manifest.json").write_text("{}")  # unsigned, broken: left out
    a = Desk(client, "desk00")
    a.seq += 1
    headers = signed_headers("GET", "/api/v1/images", a.id, a.credential, a.seq, b"")
    reply = client.get("/api/v1/images", headers=headers)
    assert reply.status_code == 200, reply.text
    jsonschema.validate(reply.json(), protocol.CATALOGUE_SCHEMA)
    (item,) = protocol.parse_catalogue(reply.json())
    assert item.url == f"/images/{BOINC}.qcow2"
    assert item.manifest == (images / f"{BOINC}.qcow2.manifest.json").read_bytes()
    signature = minisign.parse_signature(item.signature)
    minisign.verify([key.public], signature, item.manifest)
    # The GET moved the sequence: replaying it is refused.
    replay = client.get("/api/v1/images", headers=headers)
    assert (replay.status_code, replay.json()["last_seq"]) == (409, a.seq)


def test_health_metrics_openapi_and_dashboard(setup: Any) -> None:
    coordinator, client, _ = setup
    assert client.get("/healthz").json() == {"status": "ok"}
    Desk(client, "desk00").leases()
    coordinator.allocation_round()
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = [line.split()[2] for line in metrics.text.splitlines() if line.startswith("# TYPE")]
    assert "cvmc_desktops" in families
    assert "cvmc_http_requests_total" in families
    samples = scrape(metrics.text)  # the whole exposition, by prometheus_client's parser
    assert samples['cvmc_desktops{state="idle"}'] == 1
    assert samples['cvmc_http_requests_total{route="heartbeat",status="200"}'] == 1
    doc = client.get("/openapi.json").json()
    assert (
        doc["components"]["schemas"]["Heartbeat"]["properties"]
        == (protocol.HEARTBEAT_SCHEMA["properties"])
    )
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="chart"' in page.text
    assert client.get("/static/dashboard.css").status_code == 200


def test_metrics_show_unfit_jobs_from_real_ads(setup: Any) -> None:
    """Real job ads (condor_submit 23.9.6, fixtures/htcondor): jobs too big for the type they
    name are not demand, and /metrics counts them by type."""
    coordinator, client, _ = setup
    real = Path(__file__).parent / "fixtures" / "htcondor" / "condor_q_long_23.9.6.txt"
    Path(coordinator.config.demand.job_ads_file).write_text(real.read_text())
    coordinator.demand_at = float("-inf")
    coordinator.allocation_round()
    text = client.get("/metrics").text
    assert "# TYPE cvmc_demand_unfit_jobs gauge" in text
    samples = scrape(text)
    assert samples[f'cvmc_demand_unfit_jobs{{vm_name="{BOINC}"}}'] == 2
    assert samples[f'cvmc_demand_unfit_jobs{{vm_name="{BULK}"}}'] == 1
    assert samples[f'cvmc_demand_jobs{{vm_name="{BOINC}"}}'] == 4
    assert samples[f'cvmc_demand_jobs{{vm_name="{BULK}"}}'] == 1
    assert samples["cvmc_unnamed_jobs"] == 4
    # Nothing unfit: the family is there, at 0 for every type.
    set_demand(coordinator, (BOINC, 1))
    coordinator.allocation_round()
    samples = scrape(client.get("/metrics").text)
    assert samples[f'cvmc_demand_unfit_jobs{{vm_name="{BOINC}"}}'] == 0


def test_secrets_never_reach_the_log(setup: Any, caplog: pytest.LogCaptureFixture) -> None:
    coordinator, client, _ = setup
    caplog.set_level(logging.DEBUG)
    body = enrol_body("desk05")
    a = Desk(client, "desk05")
    a.leases()
    set_demand(coordinator, (BOINC, 1))
    coordinator.allocation_round()
    a.leases()
    client.post("/api/v1/enrol", content=body)  # used again: refused
    token = json.loads(body)["token"]
    assert "enrolled desk05" in caplog.text  # the log does speak
    for secret in (token, token.rsplit(".", 1)[1], a.credential, ENROL_KEY):
        assert secret not in caplog.text
