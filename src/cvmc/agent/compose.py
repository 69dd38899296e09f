"""The composition root: the one place that picks adapters and wires them to the agent."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import ssl
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from cvmc.agent.adapters.hostprobe import LinuxProbe, WindowsProbe
from cvmc.agent.adapters.http_coordinator import AgentState, HttpCoordinator
from cvmc.agent.adapters.image_store import EncryptedImageStore
from cvmc.agent.adapters.inhibit import LogindInhibitor, WindowsInhibitor
from cvmc.agent.adapters.keystore import KeyStore, default_keystore
from cvmc.agent.adapters.minisign import parse_public_key
from cvmc.agent.adapters.nocloud import IsoSeedFactory
from cvmc.agent.adapters.qemu import QemuDriver
from cvmc.agent.adapters.resources import PsutilResources
from cvmc.agent.adapters.system import DirIdentities, SystemClock, write_status
from cvmc.agent.adapters.virtualbox import VirtualBoxDriver
from cvmc.agent.adapters.wol import UdpWaker
from cvmc.agent.domain.config import AgentConfig, ConfigError, parse_config
from cvmc.agent.ports import HostProbe, Hypervisor, Sessions, SleepInhibitor
from cvmc.agent.service.agent import Agent

__all__ = ["Components", "build", "load_config", "sleep_inhibitor"]

DEFAULT_CONFIG = (
    "/etc/cvmc/agent.json" if sys.platform != "win32" else r"C:\ProgramData\cvmc\agent.json"
)


def load_config(path: str) -> AgentConfig:
    """Read and validate the JSON config; ConfigError names the file or the key."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config: {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config: {path} is not JSON (line {exc.lineno}: {exc.msg})") from None
    return parse_config(raw)


@dataclass
class Components:
    config: AgentConfig
    keystore: KeyStore
    hypervisor: Hypervisor
    store: EncryptedImageStore
    sessions: Sessions
    probe: HostProbe
    resources: PsutilResources

    def seeds(self) -> IsoSeedFactory:
        """The NoCloud seeds of the slots, in the state directory."""
        return IsoSeedFactory(os.path.join(self.config.agent.state_dir, "seeds"))

    def agent(self, desktop: str | None = None) -> Agent:
        config = self.config
        state_dir = config.agent.state_dir
        ssl_context = ssl.create_default_context(cafile=config.agent.coordinator_ca_file)
        coordinator = HttpCoordinator(
            config.coordinator_url,
            state=AgentState(state_dir, self.keystore.subkey("credential")),
            desktop=desktop or socket.getfqdn(),
            platform="windows" if sys.platform == "win32" else "linux",
            enrol_token_file=config.agent.enrol_token_file,
            ssl_context=ssl_context,
        )
        status_path = os.path.join(state_dir, "status.json")
        agent = Agent(
            config,
            desktop=(desktop or socket.gethostname()).split(".")[0],
            clock=SystemClock(),
            sessions=self.sessions,
            resources=self.resources,
            probe=self.probe,
            hypervisor=self.hypervisor,
            store=self.store,
            coordinator=coordinator,
            seeds=self.seeds(),
            identities=DirIdentities(config.agent.identity_dir),
            executor=concurrent.futures.ThreadPoolExecutor(
                max_workers=1 + config.policy.max_vms, thread_name_prefix="cvmc"
            ),
            status_sink=lambda status: write_status(status_path, status),
            inhibitor=sleep_inhibitor(),
            waker=UdpWaker(urlsplit(config.coordinator_url).hostname or "localhost"),
        )
        self.store.in_use = agent.images_in_use
        return agent


def sleep_inhibitor() -> SleepInhibitor:
    """This platform's sleep inhibitor (grid_policy.keep_awake; the agent holds it while VMs
    run)."""
    if sys.platform == "win32":  # pragma: no cover - Windows only
        return WindowsInhibitor()
    return LogindInhibitor()


def build(config: AgentConfig) -> Components:
    """Every adapter for this platform and config (no network I/O happens here)."""
    state_dir = config.agent.state_dir
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    keystore = default_keystore(state_dir)
    hypervisor: Hypervisor
    if config.agent.hypervisor == "qemu":
        hypervisor = QemuDriver(
            os.path.join(state_dir, "qemu"),
            disk_key=keystore.subkey("disk"),
            qemu=config.agent.qemu_binary,
            qemu_img=config.agent.qemu_img,
            accel=config.agent.qemu_accel,
            low_priority=config.vm_low_priority,
        )
    else:
        hypervisor = VirtualBoxDriver(
            os.path.join(state_dir, "virtualbox"),
            disk_key=keystore.subkey("disk"),
            vboxmanage=config.agent.vboxmanage,
            low_priority=config.vm_low_priority,
        )
    store = EncryptedImageStore(
        os.path.join(state_dir, "images"),
        key=keystore.subkey("images"),
        trusted_keys=[parse_public_key(k) for k in config.agent.trusted_keys],
        budget_bytes=config.agent.image_budget_mb * 1024 * 1024,
        base_url=config.coordinator_url,
        ssl_context=ssl.create_default_context(cafile=config.agent.coordinator_ca_file),
        on_evict=hypervisor.remove_base,
        allow_insecure_http=config.images_allow_insecure_http,
    )
    sessions: Sessions
    probe: HostProbe
    if sys.platform == "win32":  # pragma: no cover - Windows only
        from cvmc.agent.adapters.sessions_windows import WindowsSessions  # noqa: PLC0415

        sessions = WindowsSessions(idle=config.policy.windows.owner_idle_minutes > 0)
        probe = WindowsProbe()
    else:
        from cvmc.agent.adapters.sessions_linux import LinuxSessions  # noqa: PLC0415

        sessions = LinuxSessions(idle=config.policy.windows.owner_idle_minutes > 0)
        probe = LinuxProbe(config.agent.hypervisor)
    return Components(config, keystore, hypervisor, store, sessions, probe, PsutilResources())
