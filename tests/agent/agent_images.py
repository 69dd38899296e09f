"""Signed test images: a manifest and its minisign signature, as the coordinator serves them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cvmc.agent.adapters import minisign
from cvmc.protocol import CatalogueEntry


def make_image(path: Path, size: int, seed: int = 1) -> Path:
    """A file of ``size`` pseudo-random bytes (incompressible, reproducible)."""
    block = hashlib.sha256(f"cvmc-{seed}".encode()).digest() * 2048  # 64 KiB
    with open(path, "wb") as fh:
        left = size
        counter = 0
        while left > 0:
            piece = hashlib.sha256(counter.to_bytes(8, "big")).digest() + block
            fh.write(piece[: min(left, len(piece))])
            left -= min(left, len(piece))
            counter += 1
    return path


#: The signing time test manifests carry unless a test gives another.
CREATED = "2026-11-01T12:00:00+00:00"


def manifest_for(
    path: Path,
    vm_name: str,
    disk_format: str = "qcow2",
    file_name: str | None = None,
    created: str = CREATED,
) -> bytes:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return json.dumps(
        {
            "format_version": 1,
            "vm_name": vm_name,
            "file": file_name or path.name,
            "size": os.path.getsize(path),
            "sha256": digest,
            "disk_format": disk_format,
            "created": created,
        },
        sort_keys=True,
    ).encode()


def entry(
    key: minisign.SecretKey,
    path: Path,
    vm_name: str,
    url: str,
    *,
    disk_format: str = "qcow2",
    file_name: str | None = None,
    created: str = CREATED,
) -> CatalogueEntry:
    manifest = manifest_for(path, vm_name, disk_format, file_name, created)
    return CatalogueEntry(vm_name, url, manifest, minisign.sign(key, manifest))


def entry_json(item: CatalogueEntry) -> dict[str, str]:
    return {
        "vm_name": item.vm_name,
        "url": item.url,
        "manifest": item.manifest.decode(),
        "signature": item.signature,
    }
