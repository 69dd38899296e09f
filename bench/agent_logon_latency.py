"""Time from a logon to the research VM being stopped (and its slot cleaned). Prints figures.

The real agent (control loop, QEMU driver, image store, seeds, coordinator client) runs
in-process with its default poll interval (1 s); only the Sessions port is a stand-in, so the
benchmark decides when "the owner logs on". The guest is the tiny test guest, which obeys
the ACPI power button at once, so this measures the agent's own latency. Goal: under 5 s.

Usage: python bench/agent_logon_latency.py [--runs 3]
Needs: scripts/test-deps.sh (QEMU and the tiny test guest).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from agent.agent_fakes import FakeSessions  # noqa: E402
from agent.agent_lab import LabDesktop, lab_desktop  # noqa: E402

from cvmc.agent import compose  # noqa: E402
from cvmc.agent.domain.config import parse_config  # noqa: E402
from cvmc.agent.ports import Session  # noqa: E402

VM, FILE = "its-u11-boinc-20120415", "its-u11-boinc-20120415.qcow2"


def setup(tmp: Path) -> tuple[compose.Components, LabDesktop]:
    """Real adapters against loopback servers, with a policy where any logon stops load."""
    lab = lab_desktop(tmp, any_logon=True)
    return compose.build(parse_config(lab.config)), lab


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    components, lab = setup(Path(tempfile.mkdtemp(prefix="cvmc-latency-")))
    tmp = Path(components.config.agent.state_dir).parent
    coordinator = lab.coordinator
    sessions = FakeSessions()
    components.sessions = sessions
    agent = components.agent("bench-pc01")
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    qemu = components.hypervisor
    off, idle = [], []
    try:
        for run in range(args.runs):
            sessions.current = []
            coordinator.leases = [
                {"lease_id": f"l-{run}", "vm_name": VM, "cpus": 1, "memory_mb": 256, "ttl_s": 600}
            ]
            log = tmp / "state" / "qemu" / "vms" / "cvmc-slot0" / "console.log"
            deadline = time.monotonic() + 180
            while not (log.exists() and "waiting for the power button" in log.read_text()):
                if time.monotonic() > deadline:
                    sys.exit("the VM did not boot")
                time.sleep(0.1)
            time.sleep(random.uniform(0, 1))  # land anywhere between two ticks  # noqa: S311
            logon = time.monotonic()
            sessions.current = [Session("owner", "console", "active")]
            stopped = None
            while agent.slots[0].state.value != "idle":
                if stopped is None and not qemu.is_running("cvmc-slot0"):
                    stopped = time.monotonic() - logon
                time.sleep(0.01)
            idle.append(time.monotonic() - logon)
            off.append(stopped if stopped is not None else idle[-1])
    finally:
        stop.set()
        thread.join(timeout=60)
        lab.close()
    print(f"logon -> VM stopped, {args.runs} runs, poll_s=1, accel={qemu.accel()}")  # type: ignore[attr-defined]
    print("| measure | median | max |")
    print("|---|---|---|")
    print(f"| logon -> QEMU process gone | {statistics.median(off):.2f} s | {max(off):.2f} s |")
    print(
        f"| logon -> slot idle (disk, seed discarded) | {statistics.median(idle):.2f} s | "
        f"{max(idle):.2f} s |"
    )


if __name__ == "__main__":
    main()
