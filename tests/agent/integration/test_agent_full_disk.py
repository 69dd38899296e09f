"""The agent on a 100 % full disk, for real: its state directory on a small tmpfs filled to the
last byte. It must start, report the condition (heartbeat ``disk_free_mb`` 0, log events),
decline leases that need space (``disk_full``), and still vacate a VM when the owner logs on.

Mounting a tmpfs needs root (CAP_SYS_ADMIN); elsewhere the test is skipped, saying so.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from agent.agent_fakes import FakeClock, FakeHypervisor, FakeSessions
from agent.agent_images import make_image
from agent.agent_lab import LabDesktop, lab_desktop

from cvmc.agent import compose
from cvmc.agent.domain.config import parse_config
from cvmc.agent.ports import Session
from cvmc.agent.service.agent import Agent

VM = "its-u11-boinc-20120415"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 MiB tmpfs (room for one VM start, START_MIN_FREE_MB), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; this test fills a real filesystem")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path) -> None:
    """Fill the filesystem to its last byte (ENOSPC), as a desktop's full disk is."""
    with open(mount / "filler", "ab", buffering=0) as fh:
        for block in (65536, 4096, 512, 1):
            with pytest.raises(OSError, match="No space left on device"):  # noqa: PT012
                while True:  # until ENOSPC
                    fh.write(b"\0" * block)
    assert os.statvfs(mount).f_bavail == 0


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start(lab: LabDesktop, sessions: FakeSessions, hypervisor: FakeHypervisor) -> Agent:
    """A fresh agent process's start: build every adapter from the config, then startup()."""
    components = compose.build(parse_config(lab.config))
    components.sessions = sessions
    components.hypervisor = hypervisor  # no hypervisor in this test: the disk is the subject
    agent = components.agent("lab-pc01")
    agent.startup()
    return agent


def run_until(agent: Agent, check: Callable[[], bool], timeout_s: float, what: str) -> None:
    def step() -> bool:
        agent.tick()
        return check()

    wait_for(step, timeout_s, what)


def test_the_agent_starts_reports_and_vacates_on_a_full_disk(
    small_disk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cvmc")
    guest = make_image(tmp_path / "guest.qcow2", 200_000)
    lab = lab_desktop(
        tmp_path, any_logon=True, guest=guest, state_dir=str(small_disk / "state"), poll_s=0.05
    )
    coordinator = lab.coordinator
    sessions = FakeSessions()
    hypervisor = FakeHypervisor(FakeClock(dt.datetime(2026, 11, 23, 2, 0)))
    hypervisor.acpi_delay = 0.0
    try:
        # A VM runs (its image downloaded and installed on the small disk) ...
        coordinator.leases = [lab.lease("l-1", VM)]
        agent = start(lab, sessions, hypervisor)
        run_until(agent, lambda: agent.slots[0].state.value == "running", 30, "the VM")
        # ... then the disk fills to 100 %.
        fill(small_disk)

        # The owner logs on: the VM is still vacated and its slot released.
        sessions.current = [Session("alice", "console", "active")]
        run_until(agent, lambda: agent.slots[0].state.value == "idle", 30, "the VM to stop")
        assert hypervisor.vms == {}
        agent.drain(5)

        # The agent starts again on the full disk (a restart, or a reboot of the desktop) ...
        fill(small_disk)  # the vacated VM's seed was removed: fill that space too
        before = sorted(os.listdir(small_disk / "state"))
        caplog.clear()
        sessions.current = []
        coordinator.leases = [lab.lease("l-2", VM)]
        beats = len(coordinator.heartbeats)
        again = start(lab, sessions, hypervisor)
        declined: list[tuple[str, str]] = []

        def l2_declined() -> bool:
            declined[:] = [
                (d["lease_id"], d["reason"]) for b in coordinator.heartbeats for d in b["declined"]
            ]
            return ("l-2", "disk_full") in declined

        # ... heartbeats, reporting no free disk, and declines the lease that needs space.
        run_until(again, l2_declined, 30, "the lease declined with disk_full")
        again.drain(5)
        assert len(coordinator.heartbeats) > beats
        assert coordinator.heartbeats[-1]["resources"]["disk_free_mb"] == 0
        assert coordinator.errors == []
        assert hypervisor.vms == {}
        assert [s.state.value for s in again.slots] == ["idle", "idle"]
        # The full disk is in the log; nothing half-written was left behind.
        events = {getattr(r, "event", "") for r in caplog.records}
        assert {"agent.status_not_written", "agent.seq_not_saved"} <= events
        assert sorted(os.listdir(small_disk / "state")) == before
        assert not [n for n in os.listdir(small_disk / "state" / "images") if ".tmp" in n]
        # Once there is room again, the status file is written again.
        status_before = (small_disk / "state" / "status.json").read_text()
        (small_disk / "filler").unlink()
        sessions.current = [Session("bob", "console", "active")]
        run_until(
            again,
            lambda: (small_disk / "state" / "status.json").read_text() != status_before,
            30,
            "the status file",
        )
        assert json.loads((small_disk / "state" / "status.json").read_text())["users"] == 1
    finally:
        lab.close()
