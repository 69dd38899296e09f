#!/usr/bin/python3
"""Read the research VM's identity from its cloud-init NoCloud seed, at boot.

The desktop's agent attaches a NoCloud seed to every VM it starts: an ISO 9660 volume labelled
`cidata` with `meta-data` and `user-data`, or, in containers and tests, the documented seed
directory /var/lib/cloud/seed/nocloud. The identity (VPN certificate and key, HTCondor token,
vm_name, slot) lives in user-data as a `#cloud-config` with `write_files`, the form cloud-init
itself understands. This reader applies only the `write_files` entries under /run/grid/ (a
tmpfs), so the identity is never written to the image's disk and a seed cannot touch anything
else. Images that run cloud-init get the same files from it. The meta-data's `local-hostname`
(the VM's tunnel identity, such as `lab-desktop-1-vm0`) becomes the host name, so that each
VM's HTCondor slots have a name of their own in the pool.

Exit codes: 0 when the identity was written, or when no seed is attached (the units that need
the identity then stay inactive); 1 when a seed is there but malformed.
Standard library plus PyYAML.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

SEED_DIR = Path(os.environ.get("GRID_SEED_DIR", "/var/lib/cloud/seed/nocloud"))
RUNTIME = PurePosixPath(os.environ.get("GRID_RUNTIME_DIR", "/run/grid"))
LABELS = ("/dev/disk/by-label/cidata", "/dev/disk/by-label/CIDATA")
HOSTS = Path(os.environ.get("GRID_HOSTS_FILE", "/etc/hosts"))
MAX_META_DATA = 4096  # bytes; the agent writes about 100
HOSTNAME = re.compile(r"\A[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def hostname_from(meta_data: str) -> str | None:
    """The meta-data's local-hostname, checked (one DNS label); None when it names none. Raises
    ValueError when the meta-data is malformed or the name is not a host name."""
    if len(meta_data.encode()) > MAX_META_DATA:
        raise ValueError(f"meta-data is larger than {MAX_META_DATA} bytes")
    doc = yaml.safe_load(meta_data) if meta_data.strip() else {}
    if not isinstance(doc, dict):
        raise ValueError("meta-data is not a mapping")
    name = doc.get("local-hostname")
    if name is None:
        return None
    if not isinstance(name, str) or not HOSTNAME.match(name):
        raise ValueError(f"meta-data local-hostname {name!r} is not a host name")
    return name


def hosts_with(hosts: str, name: str) -> str:
    """/etc/hosts with 127.0.1.1 naming ``name`` (Debian's line for the host's own name)."""
    lines = [line for line in hosts.splitlines() if not line.startswith("127.0.1.1")]
    return "\n".join([*lines, f"127.0.1.1\t{name}"]) + "\n"


def apply_hostname(name: str) -> str | None:
    """Set the kernel's host name, then the hosts file's own-name line (written to a temporary
    file, then renamed). None when both are set, else why not: a container may not set its
    host name (no CAP_SYS_ADMIN) and has a hosts file bind-mounted by its runtime."""
    try:
        socket.sethostname(name)
    except OSError as exc:
        return f"the kernel's host name: {exc.strerror or exc}"
    fd, tmp = tempfile.mkstemp(dir=HOSTS.parent, prefix=".hosts-")
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(hosts_with(HOSTS.read_text() if HOSTS.exists() else "", name))
        os.replace(tmp, HOSTS)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        return f"{HOSTS}: {exc.strerror or exc}"
    return None


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


def read_seed() -> tuple[str, str] | None:
    """(user-data, meta-data) from an attached cidata volume, else from the seed directory, else
    None. A missing meta-data reads as empty."""
    for device in LABELS:
        if os.path.exists(device):
            with tempfile.TemporaryDirectory() as mount:
                subprocess.run(["/usr/bin/mount", "-o", "ro", device, mount], check=True)
                try:
                    return _read_pair(Path(mount))
                finally:
                    subprocess.run(["/usr/bin/umount", mount], check=False)
    return _read_pair(SEED_DIR) if (SEED_DIR / "user-data").exists() else None


def _read_pair(directory: Path) -> tuple[str, str]:
    meta = directory / "meta-data"
    with open(meta, "rb") if meta.exists() else open(os.devnull, "rb") as handle:
        # Undecodable bytes become U+FFFD, which no host name holds: refused by hostname_from.
        meta_data = handle.read(MAX_META_DATA + 1).decode("utf-8", "replace")
    return (directory / "user-data").read_text(), meta_data


def main() -> int:
    seed = read_seed()
    if seed is None:
        print("grid-seed: no NoCloud seed attached; nothing to do")
        return 0
    user_data, meta_data = seed
    try:
        files = files_to_write(user_data)
        name = hostname_from(meta_data)
    except (ValueError, yaml.YAMLError) as exc:
        print(f"grid-seed: the seed is malformed: {exc}", file=sys.stderr)
        return 1
    write(files)
    print(f"grid-seed: wrote {len(files)} identity files under {RUNTIME}")
    if name is not None:
        failed = apply_hostname(name)
        if failed is None:
            print(f"grid-seed: host name {name}")
        else:  # the identity is written; only the name is missing (containers)
            print(f"grid-seed: host name {name} not set: {failed}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
