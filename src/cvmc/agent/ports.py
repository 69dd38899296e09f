"""The ports: small abstract classes through which the control loop meets the world.

Each has a real adapter in ``cvmc.agent.adapters`` and a fake in the unit tests. Nothing
here does I/O.
"""

from __future__ import annotations

import datetime as dt
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cvmc.agent.domain.engine import HwVirt
from cvmc.protocol import CatalogueEntry, Manifest

__all__ = [
    "Clock",
    "CoordinatorClient",
    "CoordinatorError",
    "HostProbe",
    "Hypervisor",
    "HypervisorError",
    "Identities",
    "ImageError",
    "ImageStore",
    "PlainSource",
    "ResourceSnapshot",
    "Resources",
    "SeedFactory",
    "Session",
    "Sessions",
    "SleepInhibitor",
    "SlotIdentity",
    "StoredImage",
    "VmSpec",
    "Waker",
]


class Clock(ABC):
    """Wall-clock local time (for the policy windows) and monotonic time (for everything else)."""

    @abstractmethod
    def now(self) -> dt.datetime:
        """Local time, naive, as the policy windows are written."""

    @abstractmethod
    def monotonic(self) -> float:
        """Seconds that never jump."""

    @abstractmethod
    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        """Sleep, returning early when ``wake`` is set."""


@dataclass(frozen=True)
class Session:
    """One logged-on user session."""

    user: str
    kind: str  # "console", "rdp", "switched" (fast user switching), "tty", "ssh", "other"
    state: str  # platform state, e.g. "active", "disconnected", "online"
    #: Seconds without keyboard or mouse input, when the adapter was asked for it and the
    #: platform can tell (grid_policy.owner_idle_minutes); None: unknown, which counts as present.
    idle_s: float | None = None


class Sessions(ABC):
    """Who is logged on: console, remote desktop and switched-away sessions all count."""

    @abstractmethod
    def sessions(self) -> list[Session]:
        """The user sessions that exist now."""


@dataclass(frozen=True)
class ResourceSnapshot:
    cpus: int
    memory_total_mb: int
    memory_free_mb: int
    battery_percent: int | None
    on_ac: bool | None


class Resources(ABC):
    @abstractmethod
    def snapshot(self) -> ResourceSnapshot:
        """CPU count, memory, battery."""

    @abstractmethod
    def disk_free_mb(self, path: str) -> int:
        """Free space on the file system holding ``path``."""


class SleepInhibitor(ABC):
    """Keeps the desktop awake while research VMs run (``grid_policy.keep_awake``)."""

    @abstractmethod
    def hold(self, why: str) -> bool:
        """Keep the desktop from sleeping until :meth:`release`; idempotent. False when the
        platform refused (the agent runs on, and says so once)."""

    @abstractmethod
    def release(self) -> None:
        """Let the desktop sleep again; idempotent."""


class Waker(ABC):
    """Wake-on-LAN (``grid_wake_on_lan``): this desktop's MAC address, and magic packets for
    sleeping desktops on its subnet that the coordinator names."""

    @abstractmethod
    def mac(self) -> str | None:
        """The MAC address of the interface that reaches the coordinator; None if unknown."""

    @abstractmethod
    def wake(self, macs: Sequence[str]) -> int:
        """Send each a magic packet (UDP broadcast); the number sent. Never raises."""


class HostProbe(ABC):
    """Hardware virtualisation and what holds it."""

    @abstractmethod
    def hw_virt(self) -> HwVirt:
        """VT-x/AMD-V presence, and a conflicting hypervisor (Hyper-V, VBS) if any."""


class PlainSource(ABC):
    """Random-access plaintext of a verified image (decrypted on the fly)."""

    size: int

    @abstractmethod
    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles."""


@dataclass(frozen=True)
class VmSpec:
    """Everything a hypervisor needs to create one slot's VM."""

    vm_id: str
    slot: int
    vm_name: str
    image_sha256: str
    disk_format: str
    cpus: int
    memory_mb: int
    down_bits: int
    up_bits: int
    seed_iso: str
    disk_gb: int
    #: The type's CPU execution cap (percent of each virtual CPU); None: no cap.
    cpu_cap_percent: int | None = None


class HypervisorError(RuntimeError):
    """A hypervisor command failed; the message carries the command and its output."""


class Hypervisor(ABC):
    """One hypervisor (QEMU or VirtualBox) behind the same small interface."""

    name: str

    @abstractmethod
    def version(self) -> str:
        """The hypervisor's version, for the heartbeat and ``cvmc check``."""

    @abstractmethod
    def has_base(self, sha256: str) -> bool:
        """Whether the read-only, encrypted base disk of this image is prepared."""

    @abstractmethod
    def prepare_base(self, sha256: str, disk_format: str, source: PlainSource) -> None:
        """Import the verified image once as an encrypted, read-only base disk."""

    @abstractmethod
    def remove_base(self, sha256: str) -> None:
        """Forget a base disk (after the image store evicted its image)."""

    @abstractmethod
    def bases(self) -> list[str]:
        """The images (by digest) that have a prepared base disk."""

    @abstractmethod
    def create(self, spec: VmSpec) -> None:
        """Create the slot's VM and its differencing disk on the base."""

    @abstractmethod
    def start(self, vm_id: str) -> None:
        """Start the VM headless; return once it runs."""

    @abstractmethod
    def is_running(self, vm_id: str) -> bool:
        """Whether the VM is running (False for an absent VM)."""

    @abstractmethod
    def request_shutdown(self, vm_id: str) -> None:
        """Press the VM's ACPI power button (graceful)."""

    @abstractmethod
    def power_off(self, vm_id: str) -> None:
        """Pull the plug."""

    @abstractmethod
    def destroy(self, vm_id: str) -> None:
        """Remove the VM and discard its slot disk (idempotent: an absent VM is fine)."""

    @abstractmethod
    def list_vms(self) -> list[str]:
        """The VMs this agent owns (named ``cvmc-slot*``), running or not."""

    #: Whether :meth:`save` and :meth:`resume` work (``grid_policy.suspend_minutes``).
    saves_state: bool = False

    def save(self, vm_id: str) -> int:
        """Pause the running VM, write its state (RAM and devices) to disk, encrypted, and
        stop it; its disk and seed stay. Returns the bytes written. On failure the VM runs
        on (HypervisorError)."""
        raise HypervisorError(f"{vm_id}: {self.name} does not save VM state")

    def resume(self, vm_id: str) -> None:
        """Run a saved VM again from its state, then delete the state; HypervisorError if
        it cannot (the slot is then cleaned up like any stopped VM)."""
        raise HypervisorError(f"{vm_id}: {self.name} does not save VM state")


class ImageError(RuntimeError):
    """An image could not be made ready; ``reason`` is a lease decline reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class StoredImage:
    vm_name: str
    sha256: str
    size: int
    last_used: float
    disk_format: str


class ImageStore(ABC):
    """Verified, encrypted images under a disk budget."""

    @abstractmethod
    def installed(self) -> list[StoredImage]:
        """The installed (complete and verified) images."""

    @abstractmethod
    def ensure(
        self,
        entry: CatalogueEntry,
        *,
        expect_vm_name: str,
        expect_file: str,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Manifest:
        """Verify the entry's signed manifest, then download (resuming), check and install."""

    @abstractmethod
    def open(self, sha256: str) -> PlainSource:
        """Plaintext access to an installed image."""

    @abstractmethod
    def verify(self, sha256: str) -> None:
        """Re-check an installed image against its signed manifest; ImageError if it fails."""

    @abstractmethod
    def touch(self, sha256: str) -> None:
        """Mark as used now (for LRU eviction)."""

    @abstractmethod
    def gc(self, keep: set[str]) -> list[str]:
        """Evict to the budget (least recently used first, never ``keep``); return digests."""


class CoordinatorError(RuntimeError):
    """The coordinator could not be reached, or refused; ``code`` is its error code."""

    def __init__(self, code: str, message: str, last_seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.last_seq = last_seq


class CoordinatorClient(ABC):
    @abstractmethod
    def heartbeat(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """Send one heartbeat; return the reply object."""

    @abstractmethod
    def catalogue(self) -> Mapping[str, Any]:
        """The signed image catalogue."""


@dataclass(frozen=True)
class SlotIdentity:
    """What a slot's VM needs to join: VPN identity and, optionally, the desktop's static
    HTCondor token (secrets). A lease's own token, when it carries one, takes the static
    token's place; a slot with no static token needs leases that carry one."""

    # name -> content, e.g. "client.crt", "client.key", "ca.crt" (the key a secret: no repr)
    files: Mapping[str, bytes] = field(repr=False)
    condor_token: bytes | None = field(default=None, repr=False)


class Identities(ABC):
    @abstractmethod
    def for_slot(self, slot: int) -> SlotIdentity | None:
        """The slot's identity, or None when the desktop has none for it."""


class SeedFactory(ABC):
    """Per-VM cloud-init NoCloud seeds."""

    @abstractmethod
    def create(self, slot: int, meta_data: bytes, user_data: bytes) -> str:
        """Write the slot's seed image; return its path."""

    @abstractmethod
    def remove(self, slot: int) -> None:
        """Delete the slot's seed (idempotent)."""

    @abstractmethod
    def remove_all(self) -> list[str]:
        """Delete every seed (orphans after a crash); return what was removed."""
