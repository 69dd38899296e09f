"""Signed image manifests and the coordinator's catalogue of them, as they travel.

The signature itself is checked by the agent's image store before a manifest is parsed; the
coordinator parses manifests too, when it loads its catalogue directory.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cvmc.gridmodel.catalogue import IMAGE_FILE_PATTERN
from cvmc.gridmodel.classad import validate_vm_name
from cvmc.protocol.jsontext import loads_json

__all__ = [
    "DISK_FORMATS",
    "SHA256_HEX",
    "CatalogueEntry",
    "Manifest",
    "parse_catalogue",
    "parse_created",
    "parse_manifest",
]

SHA256_HEX = re.compile(r"\A[0-9a-f]{64}\Z")
#: A manifest's ``created``: ISO 8601 with a UTC offset, as ``cvmc image sign`` writes it.
CREATED_MAX_CHARS = 40
DISK_FORMATS: tuple[str, ...] = ("qcow2", "vdi", "vmdk", "raw")


@dataclass(frozen=True)
class Manifest:
    """A signed image manifest: what the image must be, byte for byte."""

    vm_name: str
    file: str
    size: int
    sha256: str
    disk_format: str
    #: When it was signed (timezone-aware): the agent never goes back to an older manifest
    #: for the same vm_name (rollback protection).
    created: dt.datetime
    raw: bytes  # the exact signed bytes


def parse_created(value: object, *, name: str = "manifest.created") -> dt.datetime:
    """An ISO 8601 time with a UTC offset (``2026-12-04T13:59:48+00:00``); ValueError names it."""
    wanted = "an ISO 8601 time with a UTC offset, like 2026-12-04T13:59:48+00:00"
    if not isinstance(value, str) or not 0 < len(value) <= CREATED_MAX_CHARS:
        raise ValueError(f"{name}: {value!r} is not {wanted}")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not {wanted}") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name}: {value!r} has no UTC offset; give {wanted}")
    return when


def parse_manifest(raw: bytes) -> Manifest:
    """Parse manifest bytes (after their signature was checked); ValueError names the field."""
    try:
        data = loads_json(raw)
    except ValueError as exc:
        raise ValueError(f"manifest: not JSON ({exc})") from None
    if not isinstance(data, Mapping) or data.get("format_version") != 1:
        raise ValueError("manifest.format_version: must be 1")
    vm_name = validate_vm_name(data.get("vm_name"), name="manifest.vm_name")
    file = data.get("file")
    if not isinstance(file, str) or not IMAGE_FILE_PATTERN.match(file):
        raise ValueError(f"manifest.file: {file!r} is not a plain file name")
    size = data.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"manifest.size: {size!r} is not a positive number of bytes")
    sha = data.get("sha256")
    if not isinstance(sha, str) or not SHA256_HEX.match(sha):
        raise ValueError(f"manifest.sha256: {sha!r} is not 64 lowercase hex digits")
    fmt = data.get("disk_format")
    if fmt not in DISK_FORMATS:
        raise ValueError(f"manifest.disk_format: {fmt!r} is not one of {', '.join(DISK_FORMATS)}")
    created = parse_created(data.get("created"))
    return Manifest(vm_name, file, size, sha, str(fmt), created, raw)


@dataclass(frozen=True)
class CatalogueEntry:
    vm_name: str
    url: str
    manifest: bytes
    signature: str


def parse_catalogue(raw: object) -> list[CatalogueEntry]:
    """The catalogue's entries (signatures are checked later, by the image store)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("images"), list):
        raise ValueError("catalogue: expected an object with an 'images' list")
    entries = []
    for i, item in enumerate(raw["images"]):
        if not isinstance(item, Mapping):
            raise ValueError(f"catalogue.images[{i}]: not an object")
        for key in ("vm_name", "url", "manifest", "signature"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ValueError(f"catalogue.images[{i}].{key}: missing or not a string")
        vm_name = validate_vm_name(item["vm_name"], name=f"catalogue.images[{i}].vm_name")
        entries.append(
            CatalogueEntry(vm_name, item["url"], item["manifest"].encode(), item["signature"])
        )
    return entries
