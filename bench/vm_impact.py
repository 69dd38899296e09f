"""How much a busy research VM slows the desktop owner's own work. Prints figures.

A fixed foreground CPU task (a pure-Python loop, pinned to one CPU) is timed alone, then beside
a busy VM pinned to the same CPU: once at normal priority, once at the agent's low priority
(``cvmc.agent.adapters.lowprio.lower_priority``: nice 19 and the idle I/O class, the same
function the QEMU driver runs before exec), and, where this process's cgroup is writable (v2
delegated, or v1's ``cpu`` controller), at low priority with a CPU cap (``CgroupCap``), its
cgroup at the lowest weight as the agent sets it and, for comparison, at the default weight.
Each case runs ``--runs`` times,
interleaved, and the medians are printed: the machine may be shared.

The busy VM is QEMU with the agent's own options (q35, ``-nodefaults``, the seccomp sandbox,
a read-only virtio disk) booting a one-sector disk whose boot code is ``jmp $``: SeaBIOS
boots it and the guest's vCPU then spins for ever, as a guest running a CPU burner does.

Usage: python bench/vm_impact.py [--runs 5] [--loops 4000000] [--cpu 0] [--accel tcg]
         [--cap 50]
Needs: qemu-system-x86_64 (scripts/test-deps.sh).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cvmc.agent.adapters.lowprio import CgroupCap, lower_priority  # noqa: E402
from cvmc.agent.adapters.qemu import SANDBOX  # noqa: E402

#: A 1 MiB disk whose boot sector is ``jmp $`` (EB FE) and the 0x55AA signature (SeaBIOS
#: boots no disk of a single sector).
SPIN_SECTOR = b"\xeb\xfe" + bytes(508) + b"\x55\xaa" + bytes(1024 * 1024 - 512)
HZ = os.sysconf("SC_CLK_TCK")


def foreground(loops: int) -> float:
    """The owner's task: seconds for ``loops`` iterations of a pure-Python loop."""
    start = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i * i % 7
    elapsed = time.perf_counter() - start
    assert total >= 0
    return elapsed


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def start_vm(disk: Path, accel: str, cpu: int, low: bool) -> subprocess.Popen[bytes]:
    argv = [
        "qemu-system-x86_64",
        "-name", "cvmc-bench,process=cvmc-bench",
        "-machine", f"q35,accel={accel}",
        "-cpu", "host" if accel == "kvm" else "max",
        "-m", "64", "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-sandbox", SANDBOX,
        "-blockdev", f"driver=file,node-name=f,filename={disk},read-only=on",
        "-blockdev", "driver=raw,node-name=d,file=f,read-only=on",
        "-device", "virtio-blk-pci,drive=d,bootindex=1",
    ]  # fmt: skip

    def prepare() -> None:
        os.sched_setaffinity(0, {cpu})
        if low:
            lower_priority()

    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=prepare,  # noqa: PLW1509 - a single-threaded bench
    )


def run_case(
    name: str, loops: int, start: Callable[[], subprocess.Popen[bytes] | None]
) -> tuple[float, float | None]:
    """Seconds of the foreground task, and the VM's CPU share meanwhile (None: no VM)."""
    proc = start()
    try:
        if proc is not None:
            time.sleep(2.0)  # past SeaBIOS, into the spinning boot sector
            if proc.poll() is not None:
                raise SystemExit(f"{name}: QEMU exited ({proc.returncode})")
            before = cpu_seconds(proc.pid)
        elapsed = foreground(loops)
        share = None if proc is None else (cpu_seconds(proc.pid) - before) / elapsed
        return elapsed, share
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)


def idle_share(start: Callable[[], subprocess.Popen[bytes] | None], seconds: float = 2.0) -> float:
    """The VM's CPU share while the owner does nothing: what a cap is for (heat, fan, battery)."""
    proc = start()
    assert proc is not None
    try:
        time.sleep(2.0)
        before, t0 = cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(seconds)
        return (cpu_seconds(proc.pid) - before) / (time.perf_counter() - t0)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--loops", type=int, default=4_000_000)
    parser.add_argument("--cpu", type=int, default=0, help="the CPU both are pinned to")
    parser.add_argument("--accel", choices=("tcg", "kvm"), default="tcg")
    parser.add_argument("--cap", type=int, default=50, help="cpu_cap_percent of the capped case")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    cgroup = CgroupCap()
    why = cgroup.unavailable()

    with tempfile.TemporaryDirectory(prefix="cvmc-impact-") as tmp:
        disk = Path(tmp) / "spin.img"
        disk.write_bytes(SPIN_SECTOR)

        def capped(group_low: bool) -> subprocess.Popen[bytes]:
            proc = start_vm(disk, args.accel, args.cpu, low=True)
            name = f"cvmc-bench-{'low' if group_low else 'default'}"
            problem = cgroup.apply(name, proc.pid, args.cap, 1, low=group_low)
            if problem is not None:
                proc.kill()
                raise SystemExit(f"capped: {problem}")
            return proc

        cases: dict[str, Callable[[], subprocess.Popen[bytes] | None]] = {
            "alone": lambda: None,
            "busy VM, normal priority": lambda: start_vm(disk, args.accel, args.cpu, low=False),
            "busy VM, low priority (nice 19, idle I/O)": lambda: start_vm(
                disk, args.accel, args.cpu, low=True
            ),
        }
        if why is None:
            # The agent's cap (its group at the lowest weight), and the same cap in a group of
            # the default weight, as the agent set it before: the group competes as one task.
            cases[f"busy VM, low priority + cpu_cap_percent={args.cap}"] = lambda: capped(True)
            cases["  the same, its cgroup at default weight"] = lambda: capped(False)
        results: dict[str, list[tuple[float, float | None]]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, start in cases.items():  # interleaved: drifting load hits every case
                results[name].append(run_case(name, args.loops, start))
        idle: dict[str, list[float]] = {"uncapped": []}
        if why is None:
            idle[f"cpu_cap_percent={args.cap}"] = []
        for _ in range(args.runs):
            idle["uncapped"].append(
                idle_share(lambda: start_vm(disk, args.accel, args.cpu, low=True))
            )
            if why is None:
                idle[f"cpu_cap_percent={args.cap}"].append(idle_share(lambda: capped(True)))
        cgroup.remove("cvmc-bench-low")
        cgroup.remove("cvmc-bench-default")

    alone = statistics.median(t for t, _ in results["alone"])
    print(
        f"foreground: {args.loops} Python loop iterations on CPU {args.cpu}, VM accel "
        f"{args.accel}, {args.runs} runs per case, medians (load average before: "
        f"{os.getloadavg()[0]:.2f})"
    )
    for name, runs in results.items():
        median = statistics.median(t for t, _ in runs)
        shares = [s for _, s in runs if s is not None]
        vm = f", VM got {statistics.median(shares) * 100:.0f}% of a CPU" if shares else ""
        print(
            f"  {name:<48} {median:6.3f} s  x{median / alone:4.2f}"
            f"  (min {min(t for t, _ in runs):.3f}, max {max(t for t, _ in runs):.3f}){vm}"
        )
    print("the owner idle (no foreground task), the VM alone at low priority, medians:")
    for name, shares in idle.items():
        print(f"  {name:<48} VM got {statistics.median(shares) * 100:.0f}% of a CPU")
    if why is not None:
        print(f"  capped case not run: {why}")


if __name__ == "__main__":
    main()
