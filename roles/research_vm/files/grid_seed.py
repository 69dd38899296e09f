#!/usr/bin/python3
"""Read the research VM's identity from its cloud-init NoCloud seed, at boot.

The desktop's agent attaches a NoCloud seed to every VM it starts: an ISO 9660 volume labelled
`cidata` with `meta-data` and `user-data`, or, in containers and tests, the documented seed
directory /var/lib/cloud/seed/nocloud. The identity (VPN certificate and key, HTCondor token,
vm_name, slot) lives in user-data as a `#cloud-config` with `write_files`, the form cloud-init
itself understands. This reader applies only the `write_files` entries under /run/grid/ (a
tmpfs), so the identity is never written to the image's disk and a seed cannot touch anything
else. Images that run cloud-init get the same files from it.

Exit codes: 0 when the identity was written, or when no seed is attached (the units that need
the identity then stay inactive); 1 when a seed is there but malformed.
Standard library plus PyYAML.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

SEED_DIR = Path(os.environ.get("GRID_SEED_DIR", "/var/lib/cloud/seed/nocloud"))
RUNTIME = PurePosixPath(os.environ.get("GRID_RUNTIME_DIR", "/run/grid"))
LABELS = ("/dev/disk/by-label/cidata", "/dev/disk/by-label/CIDATA")


def files_to_write(user_data: str) -> list[tuple[PurePosixPath, bytes, int]]:
    """The write_files entries of a #cloud-config, checked; raises ValueError when malformed."""
    if not user_data.startswith("#cloud-config"):
        raise ValueError("user-data is not a #cloud-config document")
    doc = yaml.safe_load(user_data)
    if not isinstance(doc, dict) or not isinstance(doc.get("write_files"), list):
        raise ValueError("user-data has no write_files list")
    result = []
    for i, entry in enumerate(doc["write_files"]):
        if not isinstance(entry, dict) or "path" not in entry:
            raise ValueError(f"write_files[{i}] has no path")
        path = PurePosixPath(str(entry["path"]))
        if not path.is_absolute() or ".." in path.parts or RUNTIME not in path.parents:
            raise ValueError(f"write_files[{i}].path {path} is not under {RUNTIME}")
        content: Any = entry.get("content", "")
        encoding = str(entry.get("encoding", "text")).lower()
        if encoding in ("b64", "base64"):
            data = base64.b64decode(str(content), validate=True)
        elif encoding == "text":
            data = str(content).encode()
        else:
            raise ValueError(f"write_files[{i}].encoding {encoding!r} is not text or b64")
        mode = int(str(entry.get("permissions", "0600")), 8)
        if mode & 0o7000:
            raise ValueError(f"write_files[{i}].permissions {oct(mode)} sets special bits")
        result.append((path, data, mode))
    return result


def write(files: list[tuple[PurePosixPath, bytes, int]]) -> None:
    for path, data, mode in files:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".seed-")
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(tmp, target)


def read_seed() -> str | None:
    """user-data from an attached cidata volume, else from the seed directory, else None."""
    for device in LABELS:
        if os.path.exists(device):
            with tempfile.TemporaryDirectory() as mount:
                subprocess.run(["/usr/bin/mount", "-o", "ro", device, mount], check=True)
                try:
                    return (Path(mount) / "user-data").read_text()
                finally:
                    subprocess.run(["/usr/bin/umount", mount], check=False)
    seed = SEED_DIR / "user-data"
    return seed.read_text() if seed.exists() else None


def main() -> int:
    user_data = read_seed()
    if user_data is None:
        print("grid-seed: no NoCloud seed attached; nothing to do")
        return 0
    try:
        files = files_to_write(user_data)
    except (ValueError, yaml.YAMLError) as exc:
        print(f"grid-seed: the seed is malformed: {exc}", file=sys.stderr)
        return 1
    write(files)
    print(f"grid-seed: wrote {len(files)} identity files under {RUNTIME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
