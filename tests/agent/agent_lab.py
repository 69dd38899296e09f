"""A lab desktop for the real agent: loopback coordinator and image servers, signed
catalogue, identities, enrolment token and a config in the grid model's shape. Shared by the
QEMU integration test and the benchmarks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.agent_fakes import lab_grid, write_identity
from agent.agent_images import entry, entry_json
from agent.agent_servers import CoordinatorServer, RangeServer

from cvmc.agent.adapters import minisign
from cvmc.agent.adapters.image_store import EncryptedImageStore
from cvmc.agent.adapters.qemu import QemuDriver

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / ".cache" / "agent-guest" / "guest.qcow2"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
GUEST_VM = "its-u11-boinc-20120415"
GUEST_FILE = f"{GUEST_VM}.qcow2"


@dataclass
class LabDesktop:
    config: dict[str, Any]
    coordinator: CoordinatorServer
    images: RangeServer
    key: minisign.SecretKey
    grid: dict[str, Any]

    def lease(self, lease_id: str, vm_name: str, memory_mb: int = 256) -> dict[str, Any]:
        return {
            "lease_id": lease_id,
            "vm_name": vm_name,
            "cpus": 1,
            "memory_mb": memory_mb,
            "ttl_s": 600,
        }

    def close(self) -> None:
        self.coordinator.close()
        self.images.close()


def lab_desktop(tmp: Path, *, any_logon: bool, guest: Path = GUEST, **agent: Any) -> LabDesktop:
    """Every VM type of the lab grid served as ``guest`` (the test guest), signed with a fresh
    key.

    ``any_logon`` replaces the policy by one in which any logon stops grid load, whatever
    the day and hour (so a test does not depend on when it runs).
    """
    key = minisign.SecretKey.generate()
    coordinator = CoordinatorServer(tmp)
    grid = lab_grid()
    grid["coordinator_url"] = coordinator.url
    if any_logon:
        grid["policy"]["blackouts"] = [
            {
                "name": "any-logon",
                "applies": "user_present",
                "days": ALL_DAYS,
                "start": "00:00",
                "end": "23:59",
            }
        ]
    # Images over https with the coordinator's certificate (the agent trusts it), as in the lab.
    images = RangeServer(
        {t["image"]: str(guest) for t in grid["vm_types"]}, tls=(coordinator.cert, coordinator.key)
    )
    coordinator.catalogue = [
        entry_json(
            entry(key, guest, t["name"], f"{images.url}/images/{t['image']}", file_name=t["image"])
        )
        for t in grid["vm_types"]
    ]
    write_identity(tmp / "identity")
    (tmp / "enrol.token").write_text("one-time-token-0123456789\n")
    settings = {
        "state_dir": str(tmp / "state"),
        "hypervisor": "qemu",
        "image_budget_mb": 512,
        "trusted_keys": [key.public.line()],
        "coordinator_ca_file": coordinator.cert,
        "enrol_token_file": str(tmp / "enrol.token"),
        "identity_dir": str(tmp / "identity"),
        **agent,
    }
    return LabDesktop({"grid": grid, "agent": settings}, coordinator, images, key, grid)


def prepared_driver(tmp_path: Path) -> tuple[QemuDriver, str, bytes]:
    """A QEMU driver under ``tmp_path`` with the test guest (named ``GUEST_VM``) imported as
    its encrypted base: (driver, digest, disk key)."""
    key = minisign.SecretKey.generate()
    server = RangeServer({GUEST_FILE: str(GUEST)})
    try:
        store = EncryptedImageStore(
            str(tmp_path / "images"),
            key=os.urandom(32),
            trusted_keys=[key.public],
            budget_bytes=256 << 20,
            allow_insecure_http=True,  # the loopback RangeServer speaks plain http
        )
        manifest = store.ensure(
            entry(key, GUEST, GUEST_VM, f"{server.url}/{GUEST_FILE}", file_name=GUEST_FILE),
            expect_vm_name=GUEST_VM,
            expect_file=GUEST_FILE,
        )
    finally:
        server.close()
    disk_key = os.urandom(32)
    driver = QemuDriver(str(tmp_path / "qemu"), disk_key=disk_key)
    source = store.open(manifest.sha256)
    driver.prepare_base(manifest.sha256, "qcow2", source)
    source.close()
    return driver, manifest.sha256, disk_key
