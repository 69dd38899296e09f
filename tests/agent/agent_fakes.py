"""Fakes for every agent port, and a lab configuration, for the unit tests and benchmarks.

The fakes keep their state in plain attributes, so a test can both steer them (log a user
on, make the coordinator unreachable, make a VM ignore its ACPI button) and read what the
agent did to them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lab_model import model_vars

from cvmc.agent.domain.config import GRID_KEYS, AgentConfig, parse_config
from cvmc.agent.domain.engine import HwVirt
from cvmc.agent.ports import (
    Clock,
    CoordinatorClient,
    CoordinatorError,
    HostProbe,
    Hypervisor,
    HypervisorError,
    Identities,
    ImageError,
    ImageStore,
    PlainSource,
    Resources,
    ResourceSnapshot,
    SeedFactory,
    Session,
    Sessions,
    SleepInhibitor,
    SlotIdentity,
    StoredImage,
    VmSpec,
    Waker,
)
from cvmc.agent.service.agent import Agent, InlineExecutor
from cvmc.protocol import CatalogueEntry, Manifest, parse_manifest

ROOT = Path(__file__).resolve().parents[2]
# A real minisign public key shape (the unit tests never verify with it).
TEST_PUBKEY = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"


def lab_grid() -> dict[str, Any]:
    """The lab inventory's grid model, as the agent's ``grid`` section (no ``grid_`` prefix)."""
    data = model_vars("lab")
    grid = {key: data[f"grid_{key}"] for key in GRID_KEYS if f"grid_{key}" in data}
    # The seed's workday window, as a campus runs it (inventories/example). The lab's own window
    # covers the whole day, so that `make lab-job` shows an owner's logon at any hour; these
    # tests replay a day around the seed's window.
    seed_blackouts = model_vars("example")["grid_policy"]["blackouts"]
    grid["policy"] = {**grid["policy"], "blackouts": seed_blackouts}
    return grid


def lab_config_dict(state_dir: str = "/var/lib/cvmc", **agent: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "state_dir": state_dir,
        "hypervisor": "qemu",
        "image_budget_mb": 4096,
        "trusted_keys": [TEST_PUBKEY],
        "heartbeat_s": 60,
    }
    settings.update(agent)
    return {"grid": lab_grid(), "agent": settings}


def lab_config(**agent: Any) -> AgentConfig:
    return parse_config(lab_config_dict(**agent))


class FakeClock(Clock):
    """Local time and monotonic time that move only when someone sleeps (or jumps)."""

    def __init__(self, start: dt.datetime) -> None:
        self.start = start
        self.mono = 1000.0
        self.offset = 0.0  # wall-clock jumps

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.mono - 1000.0 + self.offset)

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        self.mono += max(seconds, 0.0)

    def jump(self, seconds: float) -> None:
        self.offset += seconds


class FakeSessions(Sessions):
    def __init__(self) -> None:
        self.current: list[Session] = []

    def sessions(self) -> list[Session]:
        return list(self.current)


class FakeResources(Resources):
    def __init__(self) -> None:
        self.snap = ResourceSnapshot(
            cpus=4, memory_total_mb=16384, memory_free_mb=12000, battery_percent=None, on_ac=None
        )
        self.disk_mb = 100_000

    def snapshot(self) -> ResourceSnapshot:
        return self.snap

    def disk_free_mb(self, path: str) -> int:
        return self.disk_mb


class FakeProbe(HostProbe):
    def __init__(self) -> None:
        self.value = HwVirt(present=True)

    def hw_virt(self) -> HwVirt:
        return self.value


@dataclass
class FakeVm:
    spec: VmSpec
    running: bool = False
    acpi_at: float | None = None
    saved: bool = False


class FakeHypervisor(Hypervisor):
    """VMs in a dict. A pressed ACPI button turns the VM off ``acpi_delay`` seconds later,
    unless ``ignore_acpi`` is set (a guest that never shuts down)."""

    name = "qemu"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.vms: dict[str, FakeVm] = {}
        self.base: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.acpi_delay = 1.0
        self.ignore_acpi = False
        self.fail_start = False
        self.max_running = 0
        self.saves_state = True
        self.fail_save = False
        self.fail_resume = False

    def version(self) -> str:
        return "7.2.22"

    def has_base(self, sha256: str) -> bool:
        return sha256 in self.base

    def prepare_base(self, sha256: str, disk_format: str, source: PlainSource) -> None:
        self.calls.append(("prepare_base", sha256))
        self.base.add(sha256)

    def remove_base(self, sha256: str) -> None:
        self.base.discard(sha256)

    def bases(self) -> list[str]:
        return sorted(self.base)

    def create(self, spec: VmSpec) -> None:
        if spec.vm_id in self.vms:
            raise HypervisorError(f"{spec.vm_id} exists")
        self.calls.append(("create", spec.vm_id))
        self.vms[spec.vm_id] = FakeVm(spec)

    def start(self, vm_id: str) -> None:
        self.calls.append(("start", vm_id))
        if self.fail_start:
            raise HypervisorError(f"{vm_id}: VBoxManage startvm failed (fake)")
        self.vms[vm_id].running = True
        self.max_running = max(self.max_running, sum(v.running for v in self.vms.values()))

    def is_running(self, vm_id: str) -> bool:
        vm = self.vms.get(vm_id)
        if vm is None or not vm.running:
            return False
        if vm.acpi_at is not None and not self.ignore_acpi and self.clock.mono >= vm.acpi_at:
            vm.running = False
        return vm.running

    def request_shutdown(self, vm_id: str) -> None:
        self.calls.append(("acpi", vm_id))
        self.vms[vm_id].acpi_at = self.clock.mono + self.acpi_delay

    def power_off(self, vm_id: str) -> None:
        self.calls.append(("poweroff", vm_id))
        if vm_id in self.vms:
            self.vms[vm_id].running = False

    def destroy(self, vm_id: str) -> None:
        self.calls.append(("destroy", vm_id))
        self.vms.pop(vm_id, None)

    def list_vms(self) -> list[str]:
        return sorted(self.vms)

    def save(self, vm_id: str) -> int:
        self.calls.append(("save", vm_id))
        vm = self.vms[vm_id]
        if self.fail_save or not vm.running:
            raise HypervisorError(f"{vm_id}: save failed (fake)")
        vm.running, vm.saved = False, True
        return vm.spec.memory_mb << 20

    def resume(self, vm_id: str) -> None:
        self.calls.append(("resume", vm_id))
        vm = self.vms[vm_id]
        if self.fail_resume or not vm.saved:
            raise HypervisorError(f"{vm_id}: resume failed (fake)")
        vm.running, vm.saved = True, False


def fake_manifest(vm_name: str, image: str, content: bytes | None = None) -> Manifest:
    body = content or vm_name.encode()
    raw = json.dumps(
        {
            "format_version": 1,
            "vm_name": vm_name,
            "file": image,
            "size": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "disk_format": "qcow2",
            "created": "2026-11-01T12:00:00+00:00",
        }
    ).encode()
    return parse_manifest(raw)


class FakeStore(ImageStore):
    """Installs whatever the catalogue names, unless told to fail with a decline reason."""

    def __init__(self) -> None:
        self.images: dict[str, StoredImage] = {}
        self.fail: dict[str, ImageError] = {}
        self.ensured: list[str] = []
        self.on_ensure: Callable[[], None] | None = None

    def installed(self) -> list[StoredImage]:
        return list(self.images.values())

    def ensure(
        self,
        entry: CatalogueEntry,
        *,
        expect_vm_name: str,
        expect_file: str,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Manifest:
        self.ensured.append(entry.vm_name)
        if self.on_ensure:
            self.on_ensure()
        if entry.vm_name in self.fail:
            raise self.fail[entry.vm_name]
        manifest = parse_manifest(entry.manifest)
        if progress:
            progress(manifest.size, manifest.size)
        self.images[manifest.sha256] = StoredImage(
            manifest.vm_name, manifest.sha256, manifest.size, 0.0, manifest.disk_format
        )
        return manifest

    def open(self, sha256: str) -> PlainSource:
        store = self

        class Source(PlainSource):
            size = store.images[sha256].size

            def read_at(self, offset: int, length: int) -> bytes:
                return b"\0" * max(0, min(length, self.size - offset))

        return Source()

    def verify(self, sha256: str) -> None:
        if sha256 not in self.images:
            raise ImageError("image_unavailable", "not installed")

    def touch(self, sha256: str) -> None:
        pass

    def gc(self, keep: set[str]) -> list[str]:
        return []


class FakeCoordinator(CoordinatorClient):
    """Answers heartbeats with ``self.leases``; ``reachable = False`` makes it fail."""

    def __init__(self, config: AgentConfig) -> None:
        self.leases: list[dict[str, Any]] = []
        self.reachable = True
        self.heartbeats: list[Mapping[str, Any]] = []
        self.heartbeat_s = 60
        self.wake: object = None  # the replies' wake list (grid_wake_on_lan), when set
        self.catalogue_entries = [
            {
                "vm_name": t.name,
                "url": f"https://lab-coordinator/images/{t.image}",
                "manifest": fake_manifest(t.name, t.image).raw.decode(),
                "signature": "fake",
            }
            for t in config.vm_types.values()
        ]

    def heartbeat(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self.reachable:
            raise CoordinatorError("unavailable", "connection refused (fake)")
        self.heartbeats.append(body)
        reply: dict[str, Any] = {
            "server_time": "2026-11-23T00:00:00Z",
            "heartbeat_s": self.heartbeat_s,
            "leases": list(self.leases),
        }
        if self.wake is not None:
            reply["wake"] = self.wake
        return reply

    def catalogue(self) -> Mapping[str, Any]:
        if not self.reachable:
            raise CoordinatorError("unavailable", "connection refused (fake)")
        return {"images": self.catalogue_entries}


class FakeSeeds(SeedFactory):
    def __init__(self) -> None:
        self.seeds: dict[int, tuple[bytes, bytes]] = {}
        self.created = 0
        self.leftovers: list[str] = []

    def create(self, slot: int, meta_data: bytes, user_data: bytes) -> str:
        self.seeds[slot] = (meta_data, user_data)
        self.created += 1
        return f"/seeds/slot{slot}.iso"

    def remove(self, slot: int) -> None:
        self.seeds.pop(slot, None)

    def remove_all(self) -> list[str]:
        gone = [f"/seeds/slot{s}.iso" for s in self.seeds] + self.leftovers
        self.seeds.clear()
        self.leftovers = []
        return gone


def identity_files(slot: int) -> dict[str, bytes]:
    """A slot's identity files as the desktop role deploys them (PEM-shaped test values)."""
    pem = "-----BEGIN CERTIFICATE-----\nTEST{}\n-----END CERTIFICATE-----\n"
    return {
        "client.conf": b"client\ndev tun\nremote lab-gateway 1194\n",
        "ca.crt": pem.format("CA").encode(),
        "client.crt": pem.format(f"SLOT{slot}").encode(),
        "client.key": (
            f"-----BEGIN PRIVATE KEY-----\nKEY{slot}\n-----END PRIVATE KEY-----\n".encode()
        ),
        "tls-crypt.key": (
            b"-----BEGIN OpenVPN Static key V1-----\n00\n-----END OpenVPN Static key V1-----\n"
        ),
    }


def write_identity(directory: Path, slots: int = 2) -> None:
    """Identity files for ``slots`` slots under ``directory`` (DirIdentities' layout)."""
    for slot in range(slots):
        slot_dir = directory / f"slot{slot}"
        slot_dir.mkdir(parents=True, exist_ok=True)
        for name, content in identity_files(slot).items():
            (slot_dir / name).write_bytes(content)
    (directory / "condor.token").write_text("eyJhbGciOiJIUzI1NiJ9.test.token")


#: The desktop's static HTCondor token in the fakes (the ``condor.token`` fallback).
STATIC_TOKEN = b"TOKEN"


class FakeIdentities(Identities):
    """Every slot has its VPN files (but those in ``missing``) and ``static_token`` (None: the
    desktop has no ``condor.token``)."""

    def __init__(self) -> None:
        self.missing: set[int] = set()
        self.static_token: bytes | None = STATIC_TOKEN

    def for_slot(self, slot: int) -> SlotIdentity | None:
        if slot in self.missing:
            return None
        return SlotIdentity(files=identity_files(slot), condor_token=self.static_token)


class FakeWaker(Waker):
    """A fixed MAC address; records the magic packets asked for (the real sender is
    tests/agent/unit/test_agent_wake.py's)."""

    def __init__(self, mac: str | None = "52:54:00:12:34:56") -> None:
        self.own = mac
        self.woken: list[str] = []

    def mac(self) -> str | None:
        return self.own

    def wake(self, macs: Sequence[str]) -> int:
        self.woken.extend(macs)
        return len(macs)


class FakeInhibitor(SleepInhibitor):
    """Records what the agent holds; ``refuse`` plays a platform that says no."""

    def __init__(self) -> None:
        self.held = False
        self.refuse = False
        self.calls: list[str] = []

    def hold(self, why: str) -> bool:
        self.calls.append(f"hold {why}")
        if self.refuse:
            return False
        self.held = True
        return True

    def release(self) -> None:
        self.calls.append("release")
        self.held = False


@dataclass
class World:
    """An agent wired to fakes, and the fakes, for one test."""

    agent: Agent
    clock: FakeClock
    sessions: FakeSessions
    resources: FakeResources
    probe: FakeProbe
    hypervisor: FakeHypervisor
    store: FakeStore
    coordinator: FakeCoordinator
    seeds: FakeSeeds
    identities: FakeIdentities
    statuses: list[dict[str, Any]] = field(default_factory=list)
    inhibitor: FakeInhibitor = field(default_factory=FakeInhibitor)
    waker: FakeWaker = field(default_factory=FakeWaker)

    def run_for(self, seconds: float) -> None:
        """Tick the agent until ``seconds`` of fake time have passed."""
        end = self.clock.mono + seconds
        while self.clock.mono < end:
            self.clock.sleep(min(self.agent.tick(), end - self.clock.mono))

    def lease(
        self,
        lease_id: str,
        vm_name: str,
        *,
        cpus: int = 1,
        memory_mb: int = 512,
        condor_token: str | None = None,
    ) -> None:
        lease: dict[str, Any] = {
            "lease_id": lease_id,
            "vm_name": vm_name,
            "cpus": cpus,
            "memory_mb": memory_mb,
            "ttl_s": 300,
        }
        if condor_token is not None:
            lease["condor_token"] = condor_token
        self.coordinator.leases.append(lease)

    def seed_file(self, slot: int, path: str) -> bytes | None:
        """The content the slot's seed writes at ``path`` in the VM (None: it writes nothing
        there), read back from the user-data the agent gave the seed factory."""
        _, user_data = self.seeds.seeds[slot]
        for entry in yaml.safe_load(user_data)["write_files"]:
            if entry["path"] == path:
                return base64.b64decode(entry["content"])
        return None

    def drop_lease(self, lease_id: str) -> None:
        self.coordinator.leases = [x for x in self.coordinator.leases if x["lease_id"] != lease_id]

    def states(self) -> list[str]:
        return [str(slot.state) for slot in self.agent.slots]

    def declines(self) -> list[tuple[str, str]]:
        return [
            (d["lease_id"], d["reason"])
            for hb in self.coordinator.heartbeats
            for d in hb["declined"]
        ]


def make_world(start: dt.datetime, config: AgentConfig | None = None, **agent: Any) -> World:
    config = config or lab_config(**{"poll_s": 1.0, **agent})
    clock = FakeClock(start)
    parts = {
        "sessions": FakeSessions(),
        "resources": FakeResources(),
        "probe": FakeProbe(),
        "hypervisor": FakeHypervisor(clock),
        "store": FakeStore(),
        "coordinator": FakeCoordinator(config),
        "seeds": FakeSeeds(),
        "identities": FakeIdentities(),
    }
    statuses: list[dict[str, Any]] = []
    inhibitor = FakeInhibitor()
    waker = FakeWaker()
    the_agent = Agent(
        config,
        desktop="lab-pc01",
        clock=clock,
        executor=InlineExecutor(),
        rand=lambda: 0.5,
        status_sink=statuses.append,
        inhibitor=inhibitor,
        waker=waker,
        **parts,  # type: ignore[arg-type]
    )
    return World(
        agent=the_agent,
        clock=clock,
        statuses=statuses,
        inhibitor=inhibitor,
        waker=waker,
        **parts,  # type: ignore[arg-type]
    )
