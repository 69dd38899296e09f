"""What a research VM's HTCondor token costs the coordinator: minting in-process, the minting
program's start-to-exit, and a whole fetch through a real socket activation as the coordinator
makes it (SocketVmTokens against cvmc-vm-token behind systemd-socket-activate, Accept=yes).
Prints figures; asserts nothing.

Usage: python bench/vm_tokens.py [--count 50]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cvmc.coordinator.adapters.vm_tokens import SocketVmTokens  # noqa: E402
from cvmc.gridmodel.condor_token import mint_token  # noqa: E402

KEY = b"Zq8Lx2WmPb7Ck4VnRt9Hs3Jd6Fg1Ya5E"
AUTHZ = ["ADVERTISE_STARTD", "ADVERTISE_MASTER", "READ"]
ARGS = ["--key-id", "RESEARCH_VM", "--identity", "research-vm@cm.lab", "--issuer", "cm.lab"]
ARGS += ["--lifetime", "43200"] + [x for a in AUTHZ for x in ("--authz", a)]


def timed(fn: Callable[[], object], count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def show(what: str, seconds: list[float], unit: str = "ms") -> None:
    scale = 1e6 if unit == "µs" else 1e3
    ordered = sorted(seconds)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    print(
        f"{what:<52} median {statistics.median(seconds) * scale:8.2f} {unit}   "
        f"p95 {p95 * scale:8.2f} {unit}   (n={len(seconds)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50)
    count = parser.parse_args().count
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory(prefix="cvmc-vmtok-") as tmp:
        key_file = Path(tmp) / "RESEARCH_VM"
        key_file.write_bytes(KEY)
        key_file.chmod(0o400)

        def mint() -> str:
            return mint_token(
                KEY,
                key_id="RESEARCH_VM",
                identity="research-vm@cm.lab",
                issuer="cm.lab",
                authz=AUTHZ,
                lifetime_s=43200,
                now=int(time.time()),
                jti=os.urandom(16).hex(),
            )

        show("mint_token, in process", timed(mint, count * 20), "µs")
        program = [sys.executable, "-m", "cvmc.coordinator.entrypoints.vm_token"]
        program += ["--key-file", str(key_file), *ARGS]
        show(
            "cvmc-vm-token, start to exit",
            timed(lambda: subprocess.run(program, env=env, capture_output=True, check=True), count),
        )
        activate = shutil.which("systemd-socket-activate")
        if activate is None:
            print("fetch through a socket activation: skipped (no systemd-socket-activate)")
            return 0
        sock = Path(tmp) / "s"
        activator = subprocess.Popen(
            [
                activate,
                *("--listen", str(sock), "--accept", "--inetd"),
                f"--setenv=PYTHONPATH={ROOT / 'src'}",
                *program,
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            while not sock.exists():
                time.sleep(0.02)
            tokens = SocketVmTokens(str(sock), 10.0)
            show("a fetch as the coordinator makes it (one per lease)", timed(tokens.token, count))
        finally:
            activator.terminate()
            activator.wait(10)
    print(f"on {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
