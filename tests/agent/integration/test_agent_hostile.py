"""A real agent process (``cvmc agent run``, real QEMU) against a hostile coordinator, and
``cvmc agent cleanup`` after the agent died (issue 15, finding 4).

The coordinator is the loopback contract double of tests/agent/agent_servers.py: it leases a
VM, then answers every heartbeat with 40 kB of nested brackets. The agent must log the reply
as malformed and carry on; killed with SIGKILL (a crash: nothing of its own runs), it leaves
its VM running, and ``cvmc agent cleanup`` (the unit's ``ExecStopPost=``) removes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent.agent_lab import GUEST, lab_desktop

VM = "its-u11-boinc-20120415"
SRC = Path(__file__).resolve().parents[3] / "src"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None or not GUEST.exists(),
        reason="QEMU or the test guest is missing: run scripts/test-deps.sh",
    ),
]


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def cvmc(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cvmc.agent.entrypoints.cli", "--config", str(config), *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def qemu_pid(vm_dir: Path) -> int | None:
    """The VM's QEMU process, if it runs (the driver's pid file, checked against /proc)."""
    try:
        pid = int((vm_dir / "qemu.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    return pid if vm_dir.name.encode() in cmdline and state != "Z" else None


def test_a_hostile_coordinator_does_not_kill_the_agent_and_cleanup_removes_its_vm(
    tmp_path: Path,
) -> None:
    lab = lab_desktop(tmp_path, any_logon=True, poll_s=0.5, heartbeat_s=5, vacate_deadline_s=5)
    coordinator = lab.coordinator
    coordinator.leases = [lab.lease("l-1", VM)]
    config = tmp_path / "agent.json"
    config.write_text(json.dumps(lab.config))
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        cvmc(config, "agent", "run", "--desktop", "lab-pc01"),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env(),
    )
    vm_dir = tmp_path / "state" / "qemu" / "vms" / "cvmc-slot0"
    try:
        wait_for(lambda: qemu_pid(vm_dir) is not None, 120, "the leased VM's QEMU process")
        vm = qemu_pid(vm_dir)
        coordinator.hostile_reply = b"[" * 20000 + b"]" * 20000
        served = coordinator.hostile_served
        wait_for(lambda: coordinator.hostile_served >= served + 2, 60, "two hostile replies")
        time.sleep(1.0)  # one more tick after the second hostile reply
        assert agent.poll() is None, (tmp_path / "agent.log").read_text()[-2000:]
        text = (tmp_path / "agent.log").read_text()
        assert "coordinator.unreachable" in text
        assert "nested deeper than 32" in text
        assert "Traceback" not in text
        assert qemu_pid(vm_dir) == vm  # the VM ran on: a bad reply is no reason to stop it

        agent.send_signal(signal.SIGKILL)  # a crash: the agent cleans nothing up itself
        agent.wait(timeout=30)
        assert qemu_pid(vm_dir) == vm  # the orphan ExecStopPost= is there for

        done = subprocess.run(
            cvmc(config, "agent", "cleanup"),
            check=False,
            capture_output=True,
            text=True,
            env=env(),
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "agent.cleanup" in done.stderr
        assert qemu_pid(vm_dir) is None
        assert (
            not Path(f"/proc/{vm}").exists()
            or vm_dir.name.encode() not in Path(f"/proc/{vm}/cmdline").read_bytes()
        )
        assert not vm_dir.exists()
        assert os.listdir(tmp_path / "state" / "seeds") == []

        again = subprocess.run(
            cvmc(config, "agent", "cleanup"),
            check=False,
            capture_output=True,
            text=True,
            env=env(),
            timeout=120,
        )
        assert again.returncode == 0, again.stderr
        assert "removed 0 item(s)" in again.stderr
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=30)
        pid = qemu_pid(vm_dir)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        log.close()
        lab.close()
