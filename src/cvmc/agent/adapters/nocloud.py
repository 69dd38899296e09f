"""A cloud-init NoCloud seed as an ISO 9660 image with Joliet names, written in Python.

cloud-init's NoCloud data source looks for a file system labelled ``cidata`` that holds
``meta-data`` and ``user-data``. ISO 9660 level 1 cannot spell those names, so the image
carries two directory trees over the same file data: the primary one (``META_DAT.;1``) and a
Joliet one (UCS-2, ``meta-data``), which every current reader (the Linux kernel, blkid,
isoinfo, xorriso, Windows) prefers. Layout, in 2048-byte sectors::

    0-15 system area | 16 primary volume descriptor | 17 Joliet supplementary descriptor
    18 terminator | 19-22 path tables (primary L, M; Joliet L, M)
    23 primary root directory | 24 Joliet root directory | 25.. file data

(ECMA-119 and the Joliet specification.) :class:`IsoSeedFactory` writes one seed per slot,
0600, by temp file and rename, and deletes it when the slot stops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import os
import struct
from collections.abc import Mapping

from cvmc.agent.adapters.files import write_private
from cvmc.agent.ports import SeedFactory

__all__ = ["IsoSeedFactory", "build_iso"]

SECTOR = 2048
_PVD, _SVD, _TERM, _PATHS, _ROOT, _JROOT, _DATA = 16, 17, 18, 19, 23, 24, 25


def _both16(value: int) -> bytes:
    return struct.pack("<H", value) + struct.pack(">H", value)


def _both32(value: int) -> bytes:
    return struct.pack("<I", value) + struct.pack(">I", value)


def _a(text: str, size: int) -> bytes:
    return text.encode("ascii").ljust(size, b" ")[:size]


def _ucs2(text: str, size: int) -> bytes:
    raw = text.encode("utf-16-be")
    return (raw + " ".encode("utf-16-be") * size)[:size]


def _dec_time(when: dt.datetime) -> bytes:
    return when.strftime("%Y%m%d%H%M%S").encode() + b"00" + b"\0"


def _dir_time(when: dt.datetime) -> bytes:
    return bytes([when.year - 1900, when.month, when.day, when.hour, when.minute, when.second, 0])


def _record(name: bytes, extent: int, size: int, when: dt.datetime, directory: bool) -> bytes:
    length = 33 + len(name) + (1 - len(name) % 2)
    record = (
        bytes([length, 0])
        + _both32(extent)
        + _both32(size)
        + _dir_time(when)
        + bytes([2 if directory else 0, 0, 0])
        + _both16(1)
        + bytes([len(name)])
        + name
    )
    return record.ljust(length, b"\0")


def _iso_name(name: str) -> bytes:
    """An ISO 9660 level 1 name: 8.3 upper-case d-characters, with version ``;1``."""
    stem, _, ext = name.upper().partition(".")
    clean = "".join(c if c.isalnum() else "_" for c in stem)[:8]
    ext = "".join(c if c.isalnum() else "_" for c in ext)[:3]
    return f"{clean}.{ext};1".encode("ascii")


def _directory(entries: list[bytes], extent: int, when: dt.datetime) -> bytes:
    dot = _record(b"\0", extent, SECTOR, when, True)
    dotdot = _record(b"\1", extent, SECTOR, when, True)
    data = dot + dotdot + b"".join(entries)
    if len(data) > SECTOR:
        raise ValueError("seed: too many files for one directory sector")
    return data.ljust(SECTOR, b"\0")


def _path_table(extent: int, little: bool) -> bytes:
    fmt = "<" if little else ">"
    return bytes([1, 0]) + struct.pack(f"{fmt}I", extent) + struct.pack(f"{fmt}H", 1) + b"\0\0"


def _descriptor(
    kind: int, label: str, total: int, root: bytes, *, paths: tuple[int, int], when: dt.datetime
) -> bytes:
    joliet = kind == 2
    text = _ucs2 if joliet else _a
    table = _path_table(0, True)
    body = (
        bytes([kind])
        + b"CD001\1\0"
        + text("", 32)
        + text(label, 32)
        + bytes(8)
        + _both32(total)
        + (b"%/E".ljust(32, b"\0") if joliet else bytes(32))
        + _both16(1)
        + _both16(1)
        + _both16(SECTOR)
        + _both32(len(table))
        + struct.pack("<I", paths[0])
        + bytes(4)
        + struct.pack(">I", paths[1])
        + bytes(4)
        + root
        + text("", 128)
        + text("", 128)
        + text("", 128)
        + text("CVMC NOCLOUD SEED", 128)
        + text("", 37)
        + text("", 37)
        + text("", 37)
        + _dec_time(when)
        + _dec_time(when)
        + b"0" * 16
        + b"\0"
        + b"0" * 16
        + b"\0"
        + b"\1\0"
    )
    return body.ljust(SECTOR, b"\0")


def build_iso(
    files: Mapping[str, bytes], *, label: str = "cidata", when: dt.datetime | None = None
) -> bytes:
    """The ISO image bytes holding ``files`` (name -> content) in its root directory."""
    when = when or dt.datetime(2026, 1, 1)
    names = sorted(files)
    extents: dict[str, int] = {}
    sector = _DATA
    for name in names:
        extents[name] = sector
        sector += max(1, -(-len(files[name]) // SECTOR))
    total = sector
    primary = [_record(_iso_name(n), extents[n], len(files[n]), when, False) for n in names]
    if len({_iso_name(n) for n in names}) != len(names):
        raise ValueError("seed: two file names map to the same ISO 9660 name")
    joliet = [_record(n.encode("utf-16-be"), extents[n], len(files[n]), when, False) for n in names]
    root = _record(b"\0", _ROOT, SECTOR, when, True)
    jroot = _record(b"\0", _JROOT, SECTOR, when, True)
    parts = [
        bytes(16 * SECTOR),
        _descriptor(1, label, total, root, paths=(19, 20), when=when),
        _descriptor(2, label, total, jroot, paths=(21, 22), when=when),
        (b"\xffCD001\1").ljust(SECTOR, b"\0"),
        _path_table(_ROOT, True).ljust(SECTOR, b"\0"),
        _path_table(_ROOT, False).ljust(SECTOR, b"\0"),
        _path_table(_JROOT, True).ljust(SECTOR, b"\0"),
        _path_table(_JROOT, False).ljust(SECTOR, b"\0"),
        _directory(primary, _ROOT, when),
        _directory(joliet, _JROOT, when),
    ]
    for name in names:
        data = files[name]
        parts.append(data.ljust(max(1, -(-len(data) // SECTOR)) * SECTOR, b"\0"))
    image = b"".join(parts)
    assert len(image) == total * SECTOR
    return image


class IsoSeedFactory(SeedFactory):
    """Seeds in ``directory`` (private to the service account): ``slot<N>.iso``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def _path(self, slot: int) -> str:
        return os.path.join(self.directory, f"slot{slot}.iso")

    def create(self, slot: int, meta_data: bytes, user_data: bytes) -> str:
        path = self._path(slot)
        write_private(path, build_iso({"meta-data": meta_data, "user-data": user_data}))
        return path

    def remove(self, slot: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(slot))

    def remove_all(self) -> list[str]:
        removed = []
        for path in sorted(glob.glob(os.path.join(self.directory, "slot*.iso*"))):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(path)
        return removed
