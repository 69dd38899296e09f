"""The image catalogue from ``images.dir``: the admins' signed manifests, served as they are.

For each ``<file>.manifest.json`` with its ``<file>.manifest.json.minisig`` (written by
``cvmc image sign`` on an admin's machine) the catalogue lists the exact manifest text, the
signature text, and ``images.base_url + file``. The server never signs anything and holds no
signing key; agents verify every signature themselves. A manifest that does not parse, names
another file, or lacks its signature or image file is left out (and logged).
"""

from __future__ import annotations

import logging
import os
import threading

from cvmc.coordinator.ports import CatalogueSource
from cvmc.protocol import parse_manifest

__all__ = ["DirectoryCatalogue"]

log = logging.getLogger("cvmc.coordinator.catalogue")
SUFFIX = ".manifest.json"
MAX_MANIFEST = 64 * 1024


class DirectoryCatalogue(CatalogueSource):
    def __init__(self, directory: str, base_url: str) -> None:
        self.directory = directory
        self.base_url = base_url
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._entries: list[dict[str, str]] = []

    def _scan(self) -> tuple[tuple[str, int, int], ...]:
        stamp = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return ()
        for name in names:
            if name.endswith((SUFFIX, SUFFIX + ".minisig")):
                st = os.stat(os.path.join(self.directory, name))
                stamp.append((name, st.st_mtime_ns, st.st_size))
        return tuple(stamp)

    def entries(self) -> list[dict[str, str]]:
        with self._lock:
            stamp = self._scan()
            if stamp != self._stamp:
                self._entries = self._load([name for name, _, _ in stamp if name.endswith(SUFFIX)])
                self._stamp = stamp
            return list(self._entries)

    def _load(self, manifests: list[str]) -> list[dict[str, str]]:
        entries = []
        for name in manifests:
            path = os.path.join(self.directory, name)
            try:
                with open(path, "rb") as fh:
                    raw = fh.read(MAX_MANIFEST + 1)
                with open(path + ".minisig", encoding="utf-8") as fh:
                    signature = fh.read(4096)
                if len(raw) > MAX_MANIFEST:
                    raise ValueError("larger than 64 KiB")
                manifest = parse_manifest(raw)
                if name != manifest.file + SUFFIX:
                    raise ValueError(f"names file {manifest.file!r}, not {name[: -len(SUFFIX)]!r}")
                if not os.path.isfile(os.path.join(self.directory, manifest.file)):
                    raise ValueError(f"the image file {manifest.file!r} is missing")
                text = raw.decode("utf-8")
            except (OSError, ValueError) as exc:
                log.warning("catalogue: %s left out: %s", name, exc)
                continue
            entries.append(
                {
                    "vm_name": manifest.vm_name,
                    "url": self.base_url + manifest.file,
                    "manifest": text,
                    "signature": signature,
                }
            )
        return entries
