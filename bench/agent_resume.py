"""Resume cost after a kill mid-download. Prints figures; asserts nothing.

A child process downloads a signed image from a throttled loopback HTTP server into the
real image store and is killed with SIGKILL at a given fraction. A fresh store then resumes
with a Range request. The goal: re-read from the network no more than the missing bytes.

Usage: python bench/agent_resume.py [--mib 64] [--rate-mib 32]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from agent.agent_images import entry, make_image  # noqa: E402
from agent.agent_servers import RangeServer  # noqa: E402

from cvmc.agent.adapters import minisign  # noqa: E402
from cvmc.agent.adapters.image_store import EncryptedImageStore  # noqa: E402

VM, FILE = "its-u11-boinc-20120415", "its-u11-boinc-20120415.qcow2"
KEY = bytes(range(32))
CHILD = """
import sys
from pathlib import Path
from cvmc.agent.adapters import minisign
from cvmc.agent.adapters.image_store import EncryptedImageStore
from cvmc.protocol import CatalogueEntry
root, url, manifest, signature, pub = sys.argv[1:6]
store = EncryptedImageStore(root, key=bytes(range(32)),
    trusted_keys=[minisign.parse_public_key(pub)], budget_bytes=1 << 34,
    allow_insecure_http=True)
vm, file = "its-u11-boinc-20120415", "its-u11-boinc-20120415.qcow2"
store.ensure(CatalogueEntry(vm, url, Path(manifest).read_bytes(), Path(signature).read_text()),
    expect_vm_name=vm, expect_file=file)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rate-mib", type=float, default=32.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cvmc-resume-"))
    size = args.mib * 2**20
    image = make_image(tmp / FILE, size)
    key = minisign.SecretKey.generate()
    server = RangeServer({FILE: str(image)}, rate_bytes_s=args.rate_mib * 2**20)
    item = entry(key, image, VM, f"{server.url}/{FILE}", file_name=FILE)
    (tmp / "m.json").write_bytes(item.manifest)
    (tmp / "m.sig").write_text(item.signature)
    print(f"{args.mib} MiB image, served at {args.rate_mib:.0f} MiB/s, killed with SIGKILL")
    print(
        "| killed at | on disk after the kill | missing | re-fetched | extra | "
        "local re-read (re-hash) |"
    )
    print("|---|---|---|---|---|---|")
    try:
        for fraction in (0.25, 0.5, 0.75):
            root = tmp / f"store-{fraction}"
            server.rate = args.rate_mib * 2**20
            before = server.sent
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(root),
                    item.url,
                    str(tmp / "m.json"),
                    str(tmp / "m.sig"),
                    key.public.line(),
                ]
            )
            while server.sent - before < size * fraction and child.poll() is None:
                time.sleep(0.005)
            child.send_signal(signal.SIGKILL)
            child.wait()
            server.rate = None
            first = server.sent - before
            requests_before = len(server.sent_per_request)
            store = EncryptedImageStore(
                str(root),
                key=KEY,
                trusted_keys=[key.public],
                budget_bytes=1 << 34,
                allow_insecure_http=True,  # the loopback RangeServer speaks plain http
            )
            start = time.perf_counter()
            store.ensure(item, expect_vm_name=VM, expect_file=FILE)
            elapsed = time.perf_counter() - start
            refetched = sum(server.sent_per_request[requests_before:])  # the resume's requests
            on_disk = store.stats.resumed_from
            missing = size - on_disk
            print(
                f"| {100 * first / size:.0f} % sent | {on_disk / 2**20:.2f} MiB | "
                f"{missing / 2**20:.2f} MiB | {refetched / 2**20:.2f} MiB | "
                f"{refetched - missing} B | {store.stats.reread / 2**20:.2f} MiB "
                f"(resume took {elapsed:.2f} s) |"
            )
    finally:
        server.close()


if __name__ == "__main__":
    main()
