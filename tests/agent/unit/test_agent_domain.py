"""The agent's pure core: config, policy engine, slot state machine, planner, wire format."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import itertools
import json
from typing import Any

import jsonschema
import pytest
import yaml
from agent.agent_fakes import TEST_PUBKEY, identity_files, lab_config, lab_config_dict
from hypothesis import given
from hypothesis import strategies as st

from cvmc import protocol
from cvmc.agent.domain import heartbeat
from cvmc.agent.domain.config import ConfigError, parse_config
from cvmc.agent.domain.engine import HostState, HwVirt, evaluate
from cvmc.agent.domain.planner import DeclineLease, StartVm, VacateVm, plan
from cvmc.agent.domain.seed import seed_files
from cvmc.agent.domain.slots import ALLOWED, IllegalTransitionError, Slot, SlotState, transition
from cvmc.gridmodel.policy import counts_as_present, parse_policy
from cvmc.protocol import Lease, parse_lease

MONDAY_NOON = dt.datetime(2026, 11, 23, 12, 0)
SATURDAY_NOON = dt.datetime(2026, 11, 28, 12, 0)
BOINC = "its-u11-boinc-20120415"
EL9 = "lab-el9-bulk-20261101"


def host(**kw: Any) -> HostState:
    base: dict[str, Any] = {
        "users": 0,
        "cpus": 4,
        "memory_total_mb": 16384,
        "memory_free_mb": 12000,
        "hw_virt": HwVirt(present=True),
    }
    base.update(kw)
    return HostState(**base)


# -- the slot state machine --------------------------------------------------------------

LIFE_CYCLE = [
    ("idle", "fetching"),
    ("fetching", "starting"),
    ("fetching", "vacating"),
    ("fetching", "stopped"),
    ("starting", "running"),
    ("starting", "vacating"),
    ("starting", "stopped"),
    ("running", "vacating"),
    ("running", "stopped"),
    ("vacating", "stopped"),
    ("stopped", "idle"),
    # grid_policy.suspend_minutes: saved on the owner's return, resumed or discarded.
    ("running", "suspending"),
    ("suspending", "suspended"),
    ("suspending", "vacating"),
    ("suspending", "stopped"),
    ("suspended", "resuming"),
    ("suspended", "stopped"),
    ("resuming", "running"),
    ("resuming", "stopped"),
]


def test_the_transition_table_is_the_documented_life_cycle() -> None:
    table = {(str(a), str(b)) for a, targets in ALLOWED.items() for b in targets}
    assert table == set(LIFE_CYCLE)


@pytest.mark.parametrize(("old", "new"), LIFE_CYCLE)
def test_every_transition_of_the_life_cycle(old: str, new: str) -> None:
    slot = Slot(0, SlotState(old))
    transition(slot, SlotState(new), 5.0, "why")
    assert slot.state == SlotState(new)
    assert slot.since == 5.0
    assert slot.history[-1] == (SlotState(old), SlotState(new), "why")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (a, b)
        for a, b in itertools.product(SlotState, SlotState)
        if (str(a), str(b)) not in set(LIFE_CYCLE)
    ],
)
def test_every_other_transition_is_refused(old: SlotState, new: SlotState) -> None:
    slot = Slot(1, old)
    with pytest.raises(IllegalTransitionError, match=f"slot 1: {old} -> {new}"):
        transition(slot, new, 1.0)
    assert slot.state is old


def test_idle_forgets_the_lease() -> None:
    slot = Slot(
        0,
        SlotState.STOPPED,
        lease=parse_lease(_lease("l-1"), 0.0),
        vm_name=BOINC,
        memory_mb=512,
        cpus=1,
    )
    transition(slot, SlotState.IDLE, 1.0)
    assert (slot.lease, slot.vm_name, slot.memory_mb, slot.cpus) == (None, None, 0, 0)


# -- config ------------------------------------------------------------------------------


def test_the_lab_inventory_is_a_valid_agent_config() -> None:
    config = lab_config()
    assert config.policy.max_vms == 2
    assert config.policy.reserve_mb == 1024
    assert config.policy.min_battery_percent == 50
    assert config.policy.require_hw_virtualization is False
    assert config.vm_types[EL9].down_bits == 40_000_000  # its bulk class
    assert config.vm_types[BOINC].bandwidth_class == "standard"
    assert config.agent.trusted_keys == (TEST_PUBKEY,)


def _broken(path: str, value: Any) -> dict[str, Any]:
    raw = lab_config_dict()
    node: Any = raw
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return raw


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("grid.policy.blackouts.0.start", "7:00", r"^grid_policy\.blackouts\[0\]\.start: "),
        ("grid.policy.blackouts.0.days", ["funday"], r"^grid_policy\.blackouts\[0\]\.days: "),
        ("grid.policy.min_battery_percent", 150, r"^grid_policy\.min_battery_percent: "),
        ("grid.policy.require_hw_virtualization", "yes", r"^grid_policy\.require_hw_virt"),
        ("grid.max_vms_per_desktop", 0, r"^grid_max_vms_per_desktop: "),
        ("grid.host_memory_reserve_mb", "1G", r"^grid_host_memory_reserve_mb: "),
        ("grid.vm_types.0.name", "Bad Name", r"^grid_vm_types\[0\]\.name: "),
        ("grid.vm_types.0.cpus", 0, r"^grid_vm_types\[its-u11-boinc-20120415\]\.cpus: "),
        ("grid.vm_types.0.image", "../etc/passwd", r"\.image: .* plain file name"),
        ("grid.vm_types.1.bandwidth_class", "gold", r"^grid_vm_types\[lab-el9-bulk-20261101\]"),
        ("grid.bandwidth_classes.0.down", "20", r"^grid_bandwidth_classes\[standard\]\.down: "),
        ("grid.coordinator_url", "http://lab-coordinator", r"^grid_coordinator_url: "),
        ("grid.vm_types.0.memory_mb", 4096, r"does not fit the smallest desktop"),
        ("agent.hypervisor", "hyperv", r"^agent\.hypervisor: "),
        ("agent.trusted_keys", [], r"^agent\.trusted_keys: "),
        ("agent.trusted_keys", ["not-a-key"], r"^agent\.trusted_keys\[0\]: "),
        ("agent.image_budget_mb", 10, r"^agent\.image_budget_mb: .* minimum of 64"),
        ("agent.heartbeat_s", 1, r"^agent\.heartbeat_s: "),
        ("agent.state_dir", _DELETE, r"^agent\.state_dir: missing"),
        ("agent.colour", "blue", r"^agent\.colour: unknown setting"),
        ("agent.qemu_accel", "xen", r"^agent\.qemu_accel: "),
    ],
)
def test_a_bad_config_names_the_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_broken(path, value))


@pytest.mark.parametrize("raw", [None, [], "grid", {"grid": {}, "agent": {}, "extra": 1}])
def test_a_config_that_is_not_the_right_shape(raw: Any) -> None:
    with pytest.raises(ConfigError, match=r"^(config|grid|agent)"):
        parse_config(raw)


# -- the policy engine ---------------------------------------------------------------------


def test_seed_default_policy_verdicts() -> None:
    config = lab_config().policy
    assert evaluate(config, MONDAY_NOON, host()).may_start
    blocked = evaluate(config, MONDAY_NOON, host(users=1))
    assert (blocked.may_run, blocked.may_start, blocked.blackout) == (False, False, "owner-workday")
    assert evaluate(config, SATURDAY_NOON, host(users=1)).may_start
    evening = MONDAY_NOON.replace(hour=18)
    assert evaluate(config, evening, host(users=1)).may_start


def test_owner_idle_rule_is_opt_in_and_waives_only_user_present_blackouts() -> None:
    seed = lab_config().policy
    assert seed.windows.owner_idle_minutes == 0  # off unless the model turns it on
    raw = lab_config_dict()
    raw["grid"]["policy"] = {**raw["grid"]["policy"], "owner_idle_minutes": 15}
    config = parse_config(raw).policy
    assert config.windows.owner_idle_minutes == 15
    # One owner logged on, not idle: the workday blackout applies as before.
    busy = evaluate(config, MONDAY_NOON, host(users=1, present=1))
    assert (busy.may_run, busy.blackout) == (False, "owner-workday")
    # The owner idle past the threshold: load may run, and the reason says why.
    idle = evaluate(config, MONDAY_NOON, host(users=1, present=0))
    assert (idle.may_run, idle.may_start, idle.blackout) == (True, True, None)
    assert "owner_idle_minutes (15 min)" in idle.reason
    assert "owner-workday waits" in idle.reason
    # Two sessions, one idle and one active: the active one holds load off.
    assert evaluate(config, MONDAY_NOON, host(users=2, present=1)).blackout == "owner-workday"
    # Outside the blackout nothing changes, and the reason is the plain one.
    assert evaluate(config, SATURDAY_NOON, host(users=1, present=0)).reason == "allowed"


def test_counts_as_present_follows_the_threshold_and_counts_the_unknown() -> None:
    off = parse_policy({})
    on = parse_policy({"owner_idle_minutes": 10})
    assert counts_as_present(off, 10_000.0)  # the seed's rule
    assert counts_as_present(on, None)  # the platform cannot tell: present
    assert counts_as_present(on, 599.9)
    assert not counts_as_present(on, 600.0)


def test_battery_rules() -> None:
    config = lab_config().policy
    low = evaluate(config, MONDAY_NOON, host(battery_percent=49, on_ac=False))
    assert (low.may_run, low.hard_stop) == (False, True)
    assert "min_battery_percent" in low.reason
    on_battery = evaluate(config, MONDAY_NOON, host(battery_percent=80, on_ac=False))
    assert (on_battery.may_run, on_battery.may_start) == (True, False)
    charging = evaluate(config, MONDAY_NOON, host(battery_percent=10, on_ac=True))
    assert charging.may_start


def test_hw_virt_requirement_and_conflicts() -> None:
    raw = lab_config_dict()
    raw["grid"]["policy"]["require_hw_virtualization"] = True
    config = parse_config(raw).policy
    held = evaluate(config, MONDAY_NOON, host(hw_virt=HwVirt(True, held_by="Hyper-V")))
    assert (held.may_run, held.may_start) == (True, False)
    assert "Hyper-V" in held.reason
    assert not evaluate(config, MONDAY_NOON, host(hw_virt=HwVirt(False))).may_start
    relaxed = lab_config().policy  # the lab does not require it (TCG)
    assert evaluate(relaxed, MONDAY_NOON, host(hw_virt=HwVirt(False))).may_start


def test_memory_below_the_reserve_blocks_starts() -> None:
    config = lab_config().policy
    tight = evaluate(config, MONDAY_NOON, host(memory_free_mb=1200))
    assert (tight.may_run, tight.may_start) == (True, False)


# -- the planner ----------------------------------------------------------------------------


def _lease(lease_id: str, vm_name: str = BOINC, **kw: Any) -> dict[str, Any]:
    return {
        "lease_id": lease_id,
        "vm_name": vm_name,
        "cpus": 1,
        "memory_mb": 512,
        "ttl_s": 300,
        **kw,
    }


def leases(*items: dict[str, Any], received: float = 0.0) -> list[Lease]:
    return [parse_lease(item, received) for item in items]


def run_plan(
    slots: list[Slot],
    items: list[Lease],
    *,
    h: HostState | None = None,
    when: dt.datetime = MONDAY_NOON,
    fresh: bool = True,
    now: float = 1.0,
    handled: set[str] | None = None,
) -> list[Any]:
    config = lab_config()
    verdict = evaluate(config.policy, when, h or host())
    return plan(
        config.policy,
        config.vm_types,
        verdict,
        h or host(),
        slots=slots,
        leases=items,
        fresh=fresh,
        handled=handled or set(),
        now=now,
    )


def test_plan_starts_within_max_vms_and_declines_the_rest() -> None:
    slots = [Slot(0), Slot(1)]
    actions = run_plan(slots, leases(_lease("a"), _lease("b", EL9, memory_mb=768), _lease("c")))
    starts = [a for a in actions if isinstance(a, StartVm)]
    assert [(s.slot, s.lease.lease_id, s.memory_mb) for s in starts] == [
        (0, "a", 512),
        (1, "b", 768),
    ]
    assert [a.decline.reason for a in actions if isinstance(a, DeclineLease)] == ["max_vms"]


def test_plan_memory_is_min_of_type_lease_and_free_minus_reserve() -> None:
    # 1800 MB free - 1024 reserve = 776: the first VM gets 512 (its type), the second only 264.
    actions = run_plan(
        [Slot(0), Slot(1)],
        leases(_lease("a", memory_mb=4096), _lease("b", EL9, memory_mb=768)),
        h=host(memory_free_mb=1800),
    )
    starts = [a for a in actions if isinstance(a, StartVm)]
    assert [(s.lease.lease_id, s.memory_mb) for s in starts] == [("a", 512), ("b", 264)]
    # With less, the second is declined for memory (below the 256 MB minimum).
    actions = run_plan(
        [Slot(0), Slot(1)], leases(_lease("a"), _lease("b", EL9)), h=host(memory_free_mb=1700)
    )
    assert [a.decline.reason for a in actions if isinstance(a, DeclineLease)] == ["memory"]


def test_plan_counts_memory_of_starts_in_flight() -> None:
    fetching = Slot(0, SlotState.FETCHING, lease=leases(_lease("a"))[0], memory_mb=512)
    actions = run_plan(
        [fetching, Slot(1)], leases(_lease("a"), _lease("b")), h=host(memory_free_mb=1700)
    )
    assert [a.decline.reason for a in actions if isinstance(a, DeclineLease)] == ["memory"]


def test_plan_declines_unknown_types_and_expired_leases() -> None:
    items = leases(_lease("x", "some-other-type"), _lease("y", ttl_s=10))
    actions = run_plan([Slot(0), Slot(1)], items, now=11.0)
    assert sorted(a.decline.reason for a in actions) == ["expired", "unknown_vm_type"]


def test_plan_starts_nothing_without_a_fresh_reply() -> None:
    assert run_plan([Slot(0), Slot(1)], leases(_lease("a")), fresh=False) == []


def test_plan_never_handles_a_lease_twice() -> None:
    assert run_plan([Slot(0), Slot(1)], leases(_lease("a")), handled={"a"}) == []


def test_plan_vacates_on_blackout_and_on_revocation() -> None:
    running = Slot(0, SlotState.RUNNING, lease=leases(_lease("a"))[0])
    vacating = Slot(1, SlotState.VACATING, lease=leases(_lease("b"))[0])
    actions = run_plan([running, vacating], [], h=host(users=1))
    assert actions == [VacateVm(0, "blackout owner-workday (a user is logged on)", False)]
    actions = run_plan([running, Slot(1)], [])
    assert actions == [VacateVm(0, "lease a revoked", False)]
    # A stale reply (coordinator unreachable) revokes nothing.
    assert run_plan([running, Slot(1)], [], fresh=False) == []


def test_plan_hard_stop_on_low_battery() -> None:
    running = Slot(0, SlotState.RUNNING, lease=leases(_lease("a"))[0])
    actions = run_plan(
        [running, Slot(1)], leases(_lease("a")), h=host(battery_percent=5, on_ac=False)
    )
    assert isinstance(actions[0], VacateVm)
    assert actions[0].hard is True


def test_plan_powers_a_revoked_backfill_vm_off_at_once_and_the_real_lease_waits() -> None:
    """Real demand preempts backfill: the backfill VM goes at once (hard), and the real lease
    in the same reply waits for its slot (one slot here) rather than a max_vms decline."""
    config = lab_config()
    assert config.policy.max_vms == 2
    spare = Slot(0, SlotState.RUNNING, lease=leases(_lease("b", backfill=True))[0], memory_mb=512)
    other = Slot(1, SlotState.RUNNING, lease=leases(_lease("o"))[0], memory_mb=512)
    actions = run_plan([spare, other], leases(_lease("o"), _lease("real")))
    assert actions == [VacateVm(0, "backfill lease b revoked", True)]
    # Next reply, the slot still being vacated: the lease keeps waiting, undeclined.
    leaving = Slot(0, SlotState.VACATING, lease=spare.lease, memory_mb=512)
    assert run_plan([leaving, other], leases(_lease("o"), _lease("real"))) == []
    # Once it is idle, the lease starts there.
    (start,) = run_plan([Slot(0), other], leases(_lease("o"), _lease("real")))
    assert isinstance(start, StartVm)
    assert (start.slot, start.lease.lease_id) == (0, "real")
    # With no slot being vacated, the same lease is declined as before.
    busy = Slot(0, SlotState.RUNNING, lease=leases(_lease("x"))[0], memory_mb=512)
    (decline,) = run_plan([busy, other], leases(_lease("x"), _lease("o"), _lease("real")))
    assert isinstance(decline, DeclineLease)
    assert decline.decline.reason == "max_vms"


def test_plan_waits_for_the_memory_of_a_vm_being_vacated() -> None:
    """1200 MB free minus the 1024 MB reserve holds no VM (the policy allows no start), but
    the 768 MB of the VM being vacated would: the lease waits instead of a decline (and is
    declined when nothing is being vacated)."""
    leaving = Slot(0, SlotState.VACATING, lease=leases(_lease("b"))[0], memory_mb=768)
    item = leases(_lease("real", EL9, memory_mb=768))
    assert run_plan([leaving, Slot(1)], item, h=host(memory_free_mb=1200)) == []
    (decline,) = run_plan([Slot(0), Slot(1)], item, h=host(memory_free_mb=1200))
    assert isinstance(decline, DeclineLease)
    assert decline.decline.reason == "policy"
    # Enough free for a VM, not for this one's 768 MB: it waits for the memory as well.
    assert run_plan([leaving, Slot(1)], item, h=host(memory_free_mb=1500)) == []
    (start,) = run_plan([Slot(0), Slot(1)], item, h=host(memory_free_mb=1500))
    assert isinstance(start, StartVm)
    assert start.memory_mb == 476  # as before: what is free beyond the reserve


def test_a_lease_says_whether_it_is_backfill_and_nothing_else() -> None:
    assert parse_lease(_lease("a"), 0.0).backfill is False
    assert parse_lease(_lease("a", backfill=True), 0.0).backfill is True
    with pytest.raises(ValueError, match=r"lease a.backfill: 'yes' is not true or false"):
        parse_lease(_lease("a", backfill="yes"), 0.0)


# -- wire format ---------------------------------------------------------------------------


def test_reply_parsing_declines_malformed_leases_and_keeps_good_ones() -> None:
    raw = {
        "server_time": "2026-11-23T12:00:00Z",
        "heartbeat_s": 60,
        "leases": [
            _lease("good"),
            _lease("bad-cpus", cpus=0),
            _lease("bad-name", "Robert'); DROP"),
            {"lease_id": "no good id!"},
            _lease("good"),
        ],
    }
    reply = protocol.parse_heartbeat_reply(raw, 5.0)
    assert [lease.lease_id for lease in reply.leases] == ["good"]
    assert [(d.lease_id, d.reason) for d in reply.problems] == [
        ("bad-cpus", "malformed"),
        ("bad-name", "malformed"),
    ]


@pytest.mark.parametrize(
    "raw",
    [[], {"heartbeat_s": 60}, {"heartbeat_s": 1, "leases": []}, {"heartbeat_s": 60, "leases": 3}],
)
def test_a_malformed_reply_raises(raw: Any) -> None:
    with pytest.raises(ValueError, match="heartbeat reply"):
        protocol.parse_heartbeat_reply(raw, 0.0)


def test_every_schema_is_a_valid_json_schema() -> None:
    for schema in (
        protocol.ENROL_REQUEST_SCHEMA,
        protocol.ENROL_REPLY_SCHEMA,
        protocol.HEARTBEAT_SCHEMA,
        protocol.HEARTBEAT_REPLY_SCHEMA,
        protocol.MANIFEST_SCHEMA,
        protocol.CATALOGUE_SCHEMA,
        protocol.ERROR_SCHEMA,
    ):
        jsonschema.Draft202012Validator.check_schema(schema)


def test_the_reply_schema_and_the_parser_agree() -> None:
    good = {"server_time": "x", "heartbeat_s": 30, "leases": [_lease("a")]}
    jsonschema.validate(good, protocol.HEARTBEAT_REPLY_SCHEMA)
    assert protocol.parse_heartbeat_reply(good, 0).leases[0].lease_id == "a"


def test_string_to_sign_covers_every_part() -> None:
    base = protocol.string_to_sign("POST", "/api/v1/heartbeat", "d-1", 7, b"{}")
    assert base.split(b"\n")[:4] == [b"POST", b"/api/v1/heartbeat", b"d-1", b"7"]
    for other in (
        protocol.string_to_sign("GET", "/api/v1/heartbeat", "d-1", 7, b"{}"),
        protocol.string_to_sign("POST", "/api/v1/images", "d-1", 7, b"{}"),
        protocol.string_to_sign("POST", "/api/v1/heartbeat", "d-2", 7, b"{}"),
        protocol.string_to_sign("POST", "/api/v1/heartbeat", "d-1", 8, b"{}"),
        protocol.string_to_sign("POST", "/api/v1/heartbeat", "d-1", 7, b"{ }"),
    ):
        assert other != base


@given(st.floats(5, 3600), st.integers(0, 100), st.floats(0, 0.999999))
def test_heartbeat_delay_bounds(base: float, failures: int, rand: float) -> None:
    cap = max(900.0, base)
    delay = heartbeat.heartbeat_delay(base, failures, cap, rand)
    if failures == 0:
        assert 0.9 * base <= delay <= 1.1 * base
    else:
        ceiling = min(cap, base * 2**failures)
        assert ceiling / 2 <= delay <= ceiling


def test_manifest_parsing() -> None:
    good = {
        "format_version": 1,
        "vm_name": BOINC,
        "file": "x.qcow2",
        "size": 3,
        "sha256": "a" * 64,
        "disk_format": "qcow2",
        "created": "2026-12-04T13:59:48+00:00",
    }
    assert protocol.parse_manifest(json.dumps(good).encode()).size == 3
    for key, value in [
        ("created", None),  # required: the agent refuses to go back to an older manifest
        ("created", "2026-12-04T13:59:48"),  # no UTC offset
        ("created", "yesterday"),
        ("created", "2026-12-04T13:59:48+00:00" + " " * 40),
        ("created", 1764856788),
        ("size", 0),
        ("sha256", "A" * 64),
        ("file", "../x"),
        ("disk_format", "iso"),
        ("format_version", 2),
        ("vm_name", "X"),
    ]:
        bad = copy.deepcopy(good)
        bad[key] = value
        with pytest.raises(ValueError, match=f"manifest.{key}"):
            protocol.parse_manifest(json.dumps(bad).encode())
    with pytest.raises(ValueError, match="not JSON"):
        protocol.parse_manifest(b"\xff")


# -- the seed's content ----------------------------------------------------------------------


def test_the_seed_is_the_grids_format_under_run_grid() -> None:
    meta, user = seed_files(
        desktop="lab-pc01",
        slot=1,
        vm_name=BOINC,
        lease_id="l-9",
        identity=identity_files(1),
        condor_token=b"TOKEN",
    )
    assert user.startswith(b"#cloud-config\n")
    doc = yaml.safe_load(user)
    files = {f["path"]: f for f in doc["write_files"]}
    assert base64.b64decode(files["/run/grid/vm_name"]["content"]) == f"{BOINC}\n".encode()
    assert base64.b64decode(files["/run/grid/slot"]["content"]) == b"1\n"
    key = files["/run/grid/vpn/client.key"]
    assert base64.b64decode(key["content"]) == identity_files(1)["client.key"]
    assert key["permissions"] == "0600"
    assert base64.b64decode(files["/run/grid/condor/token"]["content"]) == b"TOKEN"
    assert b"KEY1" not in user  # secrets only ever base64-encoded
    assert yaml.safe_load(meta) == {
        "instance-id": "cvmc-lab-pc01-slot1-l-9",
        # The VM's tunnel identity's name: unique in the pool, whatever its type.
        "local-hostname": "lab-pc01-vm1",
    }


def test_a_seed_is_readable_by_the_research_vms_reader(tmp_path: Any) -> None:
    """The research_vm role's reader (roles/research_vm/files/grid_seed.py) applies it."""
    import importlib.util  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    reader = Path(__file__).resolve().parents[3] / "roles/research_vm/files/grid_seed.py"
    spec = importlib.util.spec_from_file_location("grid_seed_reader", reader)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, user = seed_files(
        desktop="lab-pc01",
        slot=0,
        vm_name=BOINC,
        lease_id="l-1",
        identity=identity_files(0),
        condor_token=b"TOKEN",
    )
    written = {
        str(path): (content, mode) for path, content, mode in module.files_to_write(user.decode())
    }
    assert written["/run/grid/vpn/tls-crypt.key"] == (identity_files(0)["tls-crypt.key"], 0o600)
    assert written["/run/grid/vm_name"] == (f"{BOINC}\n".encode(), 0o644)
    assert written["/run/grid/condor/token"] == (b"TOKEN", 0o600)


@pytest.mark.parametrize(
    ("field", "value"), [("desktop", "x\nruncmd: [reboot]"), ("lease_id", "l-1/../../etc")]
)
def test_seed_refuses_injection(field: str, value: str) -> None:
    args: dict[str, Any] = {
        "desktop": "lab-pc01",
        "slot": 0,
        "vm_name": BOINC,
        "lease_id": "l-1",
        "identity": identity_files(0),
        "condor_token": b"t",
    }
    args[field] = value
    with pytest.raises(ValueError, match=field):
        seed_files(**args)


def test_seed_refuses_an_incomplete_identity() -> None:
    identity = identity_files(0)
    del identity["tls-crypt.key"]
    with pytest.raises(ValueError, match=r"tls-crypt\.key missing"):
        seed_files(
            desktop="d", slot=0, vm_name=BOINC, lease_id="l", identity=identity, condor_token=b"t"
        )
    identity = identity_files(0) | {"ca.crt": b"not a pem"}
    with pytest.raises(ValueError, match="ca_cert: not a PEM document"):
        seed_files(
            desktop="d", slot=0, vm_name=BOINC, lease_id="l", identity=identity, condor_token=b"t"
        )
