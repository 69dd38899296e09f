"""The agent's own RSS and CPU, idle and with two real QEMU VMs. Prints figures; asserts nothing.

The real `cvmc agent run` runs as a child process with real adapters (logind sessions, psutil,
the QEMU driver, the image store), against a loopback coordinator that follows
docs/coordinator-api.md and asks for a heartbeat every 5 s (production: 60 s), so the idle
figure is pessimistic. Only the agent's process is measured (the QEMU processes are not
the agent). Goals: at most 40 MB RSS, under 0.2 % of one core idle.

Usage: python bench/agent_footprint.py [--seconds 60]
Needs: scripts/test-deps.sh (QEMU and the tiny test guest).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from agent.agent_lab import GUEST, lab_desktop  # noqa: E402


def sample(proc: psutil.Process, seconds: float) -> tuple[float, float, float]:
    """(RSS MiB at the end, peak RSS MiB, CPU % of one core) over ``seconds``."""
    start_cpu = sum(proc.cpu_times()[:2])
    start = time.monotonic()
    peak = 0.0
    while time.monotonic() - start < seconds:
        peak = max(peak, proc.memory_info().rss / 2**20)
        time.sleep(1.0)
    cpu = sum(proc.cpu_times()[:2]) - start_cpu
    return proc.memory_info().rss / 2**20, peak, 100 * cpu / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    if not GUEST.exists():
        sys.exit("run scripts/test-deps.sh first (no test guest)")
    tmp = Path(tempfile.mkdtemp(prefix="cvmc-bench-"))
    lab = lab_desktop(tmp, any_logon=False, log_file=str(tmp / "agent.log"))
    coordinator, grid, config = lab.coordinator, lab.grid, lab.config
    (tmp / "agent.json").write_text(json.dumps(config))
    exe = str(Path(sys.executable).parent / "cvmc")
    child = subprocess.Popen(
        [exe, "agent", "run", "--config", str(tmp / "agent.json"), "--desktop", "bench-pc01"],
        stderr=subprocess.DEVNULL,
    )
    proc = psutil.Process(child.pid)
    try:
        time.sleep(10)
        idle = sample(proc, args.seconds)
        coordinator.leases = [
            lab.lease(f"l-{i}", t["name"]) for i, t in enumerate(grid["vm_types"])
        ]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            beat = coordinator.heartbeats[-1] if coordinator.heartbeats else {"slots": []}
            if [s["state"] for s in beat["slots"]] == ["running", "running"]:
                break
            time.sleep(1)
        else:
            sys.exit("the two VMs did not start; see " + str(tmp / "agent.log"))
        time.sleep(10)
        busy = sample(proc, args.seconds)
        qemu = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "process=cvmc-slot" in " ".join(p.info["cmdline"] or [])
        ]
    finally:
        child.terminate()
        child.wait(timeout=120)
        lab.close()
    print(
        f"agent footprint over {args.seconds:.0f} s each (python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores)"
    )
    print("| state | RSS at end | peak RSS | CPU (% of one core) |")
    print("|---|---|---|---|")
    for label, (rss, peak, cpu) in (("idle, no VMs", idle), ("two QEMU VMs running", busy)):
        print(f"| {label} | {rss:.1f} MiB | {peak:.1f} MiB | {cpu:.3f} % |")
    print(
        f"({len(qemu)} QEMU processes were running, not counted; agent exited {child.returncode})"
    )


if __name__ == "__main__":
    main()
