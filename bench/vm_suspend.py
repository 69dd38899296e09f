"""Suspend instead of shut down (``grid_policy.suspend_minutes``): what saving and resuming a
VM costs on this machine. Prints figures.

1. Sealing: the rate at which the agent seals a migration stream (AES-256-GCM chunks,
   ``crypto.ChunkWriter`` with no known size) into a file, and reads it back, for ``--seal-mib``
   of random data (incompressible, as a busy guest's RAM is). A save's time is about the VM's
   used RAM over the slower of this rate and the disk's write rate.
2. ``--qemu N``: the real QEMU driver with the tiny test guest (TCG or KVM, whichever the
   driver picks), booted with ``--memory`` MB: N rounds of save (QMP stop, migrate to the
   sealing pipe, QEMU exit) and resume (``-incoming defer``, the decrypted stream, ``cont``),
   with the state's size. The test guest touches little of its RAM, so the state is small.

    .venv/bin/python bench/vm_suspend.py [--seal-mib 1024] [--qemu 3] [--memory 1024]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from cvmc.agent.adapters.crypto import ChunkReader, ChunkWriter  # noqa: E402


def sealing(mib: int) -> None:
    block = os.urandom(1 << 20)
    with tempfile.TemporaryDirectory(prefix="cvmc-bench-") as tmp:
        path = os.path.join(tmp, "state.enc")
        key = os.urandom(32)
        start = time.perf_counter()
        writer = ChunkWriter.create(path, key, None)
        for _ in range(mib):
            writer.write(block)
        size = writer.finish()
        sealed = time.perf_counter() - start
        start = time.perf_counter()
        reader = ChunkReader(path, key)
        read = sum(len(chunk) for chunk in reader.chunks())
        reader.close()
        opened = time.perf_counter() - start
    assert size == read == mib << 20
    print(
        f"sealing {mib} MiB: written {mib / sealed:.0f} MiB/s ({sealed:.2f} s, fsync included), "
        f"read back {mib / opened:.0f} MiB/s ({opened:.2f} s)"
    )


def qemu(rounds: int, memory_mb: int) -> None:
    from agent.agent_lab import GUEST, GUEST_VM, prepared_driver  # noqa: PLC0415

    from cvmc.agent.adapters.nocloud import build_iso  # noqa: PLC0415
    from cvmc.agent.ports import VmSpec  # noqa: PLC0415

    if not GUEST.exists():
        print("qemu: the test guest is missing; run scripts/test-deps.sh")
        return
    with tempfile.TemporaryDirectory(prefix="cvmc-bench-") as tmp:
        driver, sha256, _ = prepared_driver(Path(tmp))
        seed = Path(tmp) / "seed.iso"
        seed.write_bytes(
            build_iso({"meta-data": b"instance-id: bench\n", "user-data": b"#cloud-config\n"})
        )
        spec = VmSpec("cvmc-slot0", 0, GUEST_VM, sha256, "qcow2", 1, memory_mb, 1, 1, str(seed), 1)
        driver.create(spec)
        driver.start("cvmc-slot0")
        log = Path(tmp) / "qemu" / "vms" / "cvmc-slot0" / "console.log"
        deadline = time.monotonic() + 180
        while "waiting for the power button" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise SystemExit("the guest did not boot in 180 s")
            time.sleep(0.2)
        saves, resumes, sizes = [], [], []
        for _ in range(rounds):
            start = time.perf_counter()
            sizes.append(driver.save("cvmc-slot0"))
            saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            driver.resume("cvmc-slot0")
            resumes.append(time.perf_counter() - start)
        driver.destroy("cvmc-slot0")
    print(
        f"qemu ({driver.accel()}, {memory_mb} MB guest, {rounds} rounds): state "
        f"{statistics.median(sizes) / 2**20:.1f} MiB, save median {statistics.median(saves):.2f} s "
        f"(max {max(saves):.2f}), resume median {statistics.median(resumes):.2f} s "
        f"(max {max(resumes):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seal-mib", type=int, default=1024)
    parser.add_argument("--qemu", type=int, default=0, metavar="ROUNDS")
    parser.add_argument("--memory", type=int, default=1024, metavar="MB")
    args = parser.parse_args()
    sealing(args.seal_mib)
    if args.qemu:
        qemu(args.qemu, args.memory)


if __name__ == "__main__":
    main()
