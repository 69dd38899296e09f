"""The image store: signed, verified, encrypted at rest, resumable, atomic, LRU under a budget.

Layout under ``root`` (a directory only the service account can read)::

    <sha256>.img    a complete, verified image (CVMCENC1, see ``crypto``)
    <sha256>.part   a download in progress (CVMCENC1 prefix; resumable after a kill)
    index.json      what each image is: its signed manifest and signature, and last use
    newest.json     per vm_name, the newest signed ``created`` accepted, and its SHA-256
                    (rollback protection; it outlives eviction)

``ensure`` does, in this order: check the manifest's minisign signature against the trusted
keys; check the manifest names the VM type and file the local catalogue expects; refuse a
manifest older than the newest one accepted for its vm_name (``image_rollback``: a validly
signed old image must not come back, say with a fixed vulnerability); make room
(LRU eviction, then a free-space check); download with ``Range`` from where a killed
download stopped; compare size and SHA-256 with the signed manifest; and only then install
by ``rename``. Nothing unverified is ever installed, and a power cut leaves either the old
state or the new one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import re
import shutil
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from http.client import HTTPMessage
from typing import IO, Any

from cvmc.agent.adapters import minisign
from cvmc.agent.adapters.crypto import HEADER, TAG, ChunkReader, ChunkWriter, CorruptError
from cvmc.agent.adapters.files import write_private
from cvmc.agent.adapters.http_deadline import (
    DeadlineError,
    DeadlineResponse,
    HttpStatusError,
    open_with_deadline,
)
from cvmc.agent.logs import log_event
from cvmc.agent.ports import ImageError, ImageStore, PlainSource, StoredImage
from cvmc.gridmodel import limits
from cvmc.protocol import CatalogueEntry, Manifest, parse_manifest
from cvmc.protocol.images import parse_created

__all__ = ["DownloadStats", "EncryptedImageStore"]

LOG = logging.getLogger("cvmc.agent.images")
READ = 64 * 1024
DURABLE_EVERY = 16 * 1024 * 1024
MIN_RATE_BYTES_S = 128 * 1024
"""A download's deadline allows its bytes at this rate (1 GiB: about 2 h 15 min) ..."""
DEADLINE_BASE_S = 60.0
"""... plus this much ..."""
DEADLINE_MAX_S = 4 * 3600.0
"""... and never more than this, per request."""
STALE_PART_S = 7 * 24 * 3600
NEWEST = "newest.json"
NEWEST_MAX_BYTES = 4 * 1024 * 1024  # one entry per VM type; a larger file is not ours
_SHA = re.compile(r"\A[0-9a-f]{64}\Z")


class DownloadStats:
    """Counters of the last download (for the resume benchmark and tests)."""

    def __init__(self) -> None:
        self.resumed_from = 0  # plaintext bytes already on disk when the download (re)started
        self.fetched = 0  # bytes received over the network
        self.reread = 0  # bytes re-read from disk to continue the digest
        self.restarts = 0  # the server ignored Range and the download started over


class _Source(PlainSource):
    def __init__(self, reader: ChunkReader) -> None:
        self._reader = reader
        self.size = reader.size

    def read_at(self, offset: int, length: int) -> bytes:
        return self._reader.read_at(offset, length)

    def close(self) -> None:
        self._reader.close()


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL the image URL rule allows (https, unless the lab's
    ``grid_images_allow_insecure_http``): a redirect must not downgrade the transport."""

    def __init__(self, allow_insecure_http: bool) -> None:
        super().__init__()
        self.allow_insecure_http = allow_insecure_http

    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        try:
            limits.image_url(
                newurl, allow_insecure_http=self.allow_insecure_http, name="image redirect"
            )
        except ValueError as exc:
            raise ImageError(
                "image_unavailable", f"{req.full_url} redirects ({code}) to a refused URL: {exc}"
            ) from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _chunk_overhead(size: int) -> int:
    return HEADER + (size // (64 * 1024) + 1) * TAG


class EncryptedImageStore(ImageStore):
    """The real image store (Linux and Windows alike)."""

    def __init__(
        self,
        root: str,
        *,
        key: bytes,
        trusted_keys: Sequence[minisign.PublicKey],
        budget_bytes: int,
        base_url: str = "",
        ssl_context: ssl.SSLContext | None = None,
        free_bytes: Callable[[str], int] | None = None,
        on_evict: Callable[[str], None] | None = None,
        in_use: Callable[[], set[str]] | None = None,
        timeout_s: float = 30.0,
        min_rate_bytes_s: float = MIN_RATE_BYTES_S,
        deadline_base_s: float = DEADLINE_BASE_S,
        deadline_max_s: float = DEADLINE_MAX_S,
        allow_insecure_http: bool = False,
    ) -> None:
        self.root = root
        self._key = key
        self._trusted = list(trusted_keys)
        self.budget = budget_bytes
        self.base_url = base_url
        self._ssl = ssl_context
        self.allow_insecure_http = allow_insecure_http
        self._redirects = _CheckedRedirects(allow_insecure_http)
        self._free = free_bytes or (lambda path: shutil.disk_usage(path).free)
        self.on_evict = on_evict
        self.in_use: Callable[[], set[str]] = in_use or set
        self._timeout = timeout_s
        self._min_rate = min_rate_bytes_s
        self._deadline_base = deadline_base_s
        self._deadline_max = deadline_max_s
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self.stats = DownloadStats()
        os.makedirs(root, mode=0o700, exist_ok=True)
        self._index: dict[str, dict[str, Any]] = self._load_index()
        self._newest: dict[str, tuple[dt.datetime, str]] = self._load_newest()
        self._reconcile()

    # -- index ---------------------------------------------------------------------------

    def _path(self, sha: str, suffix: str) -> str:
        if not _SHA.match(sha):
            raise ImageError("malformed", f"{sha!r} is not a SHA-256 digest")
        return os.path.join(self.root, f"{sha}.{suffix}")

    def _load_index(self) -> dict[str, dict[str, Any]]:
        path = os.path.join(self.root, "index.json")
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log_event(
                LOG,
                logging.ERROR,
                "images.index_unreadable",
                f"{path} is unreadable ({exc}); starting from an empty index",
            )
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict) and _SHA.match(k)}

    def _load_newest(self) -> dict[str, tuple[dt.datetime, str]]:
        """newest.json, raised to what the installed images' own signed manifests say (so a
        lost or damaged file never lowers the floor below what is on disk)."""
        path = os.path.join(self.root, NEWEST)
        newest: dict[str, tuple[dt.datetime, str]] = {}
        try:
            with open(path, "rb") as fh:
                data = json.loads(fh.read(NEWEST_MAX_BYTES + 1)[:NEWEST_MAX_BYTES])
            if not isinstance(data, dict):
                raise ValueError("not an object")
            for vm_name, item in data.items():
                if not isinstance(item, dict) or not _SHA.match(str(item.get("sha256"))):
                    raise ValueError(f"{vm_name!r}: not {{created, sha256}}")
                newest[str(vm_name)] = (parse_created(item.get("created")), item["sha256"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log_event(
                LOG,
                logging.ERROR,
                "images.newest_unreadable",
                f"{path} is unreadable ({exc}); the installed images' manifests set the floor",
            )
            newest = {}
        for sha, entry in self._index.items():
            try:
                manifest = parse_manifest(str(entry["manifest"]).encode())
            except (KeyError, ValueError):
                continue
            seen = newest.get(manifest.vm_name)
            if seen is None or manifest.created > seen[0]:
                newest[manifest.vm_name] = (manifest.created, sha)
        return newest

    def _check_rollback(self, manifest: Manifest) -> None:
        with self._lock:
            seen = self._newest.get(manifest.vm_name)
        if seen is None:
            return
        created, sha = seen
        if manifest.created < created or (manifest.created == created and manifest.sha256 != sha):
            raise ImageError(
                "image_rollback",
                f"the signed manifest for {manifest.vm_name} was created "
                f"{manifest.created.isoformat()} ({manifest.sha256[:12]}), but this desktop "
                f"already accepted one created {created.isoformat()} ({sha[:12]}); an image "
                "never goes back to an older one",
            )

    def _accept(self, manifest: Manifest) -> None:
        """Raise the floor for ``manifest.vm_name`` to it (written atomically: temp + rename)."""
        with self._lock:
            seen = self._newest.get(manifest.vm_name)
            if seen is not None and seen[0] >= manifest.created:
                return
            self._newest[manifest.vm_name] = (manifest.created, manifest.sha256)
            data = {
                name: {"created": created.isoformat(), "sha256": sha}
                for name, (created, sha) in sorted(self._newest.items())
            }
            write_private(
                os.path.join(self.root, NEWEST), json.dumps(data, indent=1).encode() + b"\n"
            )

    def _save_index(self) -> None:
        data = json.dumps(self._index, indent=1, sort_keys=True).encode()
        write_private(os.path.join(self.root, "index.json"), data)

    def _reconcile(self) -> None:
        """Drop index entries without a file, and files without an entry; remove temp files.

        The index is written only if an entry was dropped or it is missing, and a full disk
        does not stop the agent from starting: the index in memory is right, and it is saved
        next time.
        """
        with self._lock:
            gone = [s for s in self._index if not os.path.exists(self._path(s, "img"))]
            for sha in gone:
                del self._index[sha]
            for name in os.listdir(self.root):
                full = os.path.join(self.root, name)
                sha, _, suffix = name.partition(".")
                orphan = suffix == "img" and sha not in self._index
                if orphan or ".tmp" in name:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(full)
                    log_event(
                        LOG,
                        logging.WARNING,
                        "images.orphan_removed",
                        f"removed {name}, left by an interrupted run",
                        file=name,
                    )
            if gone or not os.path.exists(os.path.join(self.root, "index.json")):
                try:
                    self._save_index()
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    log_event(
                        LOG,
                        logging.ERROR,
                        "images.index_not_saved",
                        f"the disk is full: index.json keeps {len(gone)} entries without a "
                        "file until there is room (they are dropped again at the next start)",
                    )

    def installed(self) -> list[StoredImage]:
        with self._lock:
            return [
                StoredImage(
                    v["vm_name"], sha, int(v["size"]), float(v["last_used"]), str(v["disk_format"])
                )
                for sha, v in sorted(self._index.items())
            ]

    def touch(self, sha256: str) -> None:
        with self._lock:
            if sha256 in self._index:
                self._index[sha256]["last_used"] = time.time()
                self._save_index()

    # -- verification --------------------------------------------------------------------

    def check_manifest(self, manifest_bytes: bytes, signature_text: str) -> Manifest:
        """The manifest, once its signature verifies with a trusted key."""
        try:
            signature = minisign.parse_signature(signature_text)
            minisign.verify(self._trusted, signature, manifest_bytes)
        except minisign.SignatureError as exc:
            raise ImageError("signature_invalid", f"manifest {exc}") from None
        try:
            return parse_manifest(manifest_bytes)
        except ValueError as exc:
            raise ImageError("signature_invalid", f"signed but malformed: {exc}") from None

    def verify(self, sha256: str) -> None:
        with self._lock:
            entry = self._index.get(sha256)
        if entry is None:
            raise ImageError("image_unavailable", f"{sha256} is not installed")
        manifest = self.check_manifest(entry["manifest"].encode(), entry["signature"])
        if manifest.sha256 != sha256:
            raise ImageError("signature_invalid", "the index entry and its manifest disagree")
        reader = ChunkReader(self._path(sha256, "img"), self._key)
        try:
            if reader.size != manifest.size or reader.sha256() != manifest.sha256:
                raise ImageError("signature_invalid", f"{sha256}: content changed on disk")
        except CorruptError as exc:
            raise ImageError("signature_invalid", f"{sha256}: {exc}") from None
        finally:
            reader.close()

    def open(self, sha256: str) -> PlainSource:
        with self._lock:
            if sha256 not in self._index:
                raise ImageError("image_unavailable", f"{sha256} is not installed")
        return _Source(ChunkReader(self._path(sha256, "img"), self._key))

    # -- space ---------------------------------------------------------------------------

    def used_bytes(self) -> int:
        total = 0
        for name in os.listdir(self.root):
            if name.endswith((".img", ".part")):
                with contextlib.suppress(FileNotFoundError):
                    total += os.path.getsize(os.path.join(self.root, name))
        return total

    def gc(self, keep: set[str], need: int = 0) -> list[str]:
        """Evict least recently used images (never ``keep`` or in use) until ``need`` more
        bytes fit the budget; remove partial downloads untouched for a week."""
        removed: list[str] = []
        protected = set(keep) | self.in_use()
        now = time.time()
        for name in os.listdir(self.root):
            full = os.path.join(self.root, name)
            if name.endswith(".part") and name.partition(".")[0] not in protected:
                with contextlib.suppress(FileNotFoundError):
                    if now - os.path.getmtime(full) > STALE_PART_S:
                        os.unlink(full)
                        removed.append(name)
        with self._lock:
            by_age = sorted(self._index.items(), key=lambda item: item[1]["last_used"])
        for sha, entry in by_age:
            if self.used_bytes() + need <= self.budget:
                break
            if sha in protected:
                continue
            with self._lock:
                self._index.pop(sha, None)
                self._save_index()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(sha, "img"))
            removed.append(sha)
            log_event(
                LOG,
                logging.INFO,
                "images.evicted",
                f"evicted {entry['vm_name']} ({sha[:12]}), least recently used",
                sha256=sha,
                vm_name=entry["vm_name"],
            )
            if self.on_evict is not None:
                try:
                    self.on_evict(sha)
                except Exception as exc:
                    log_event(
                        LOG,
                        logging.ERROR,
                        "images.evict_base_failed",
                        f"could not remove the base disk of {sha[:12]}: {exc}",
                    )
        return removed

    def _make_room(self, manifest: Manifest) -> None:
        part = self._path(manifest.sha256, "part")
        have = os.path.getsize(part) if os.path.exists(part) else 0
        need = manifest.size + _chunk_overhead(manifest.size) - have
        if manifest.size + _chunk_overhead(manifest.size) > self.budget:
            raise ImageError(
                "disk_full",
                f"{manifest.file} ({manifest.size >> 20} MiB) is "
                f"larger than agent.image_budget_mb ({self.budget >> 20} MiB)",
            )
        self.gc({manifest.sha256}, need)
        if self.used_bytes() + need > self.budget:
            raise ImageError(
                "disk_full",
                f"no room for {manifest.file} within the image budget: the images in use fill it",
            )
        free = self._free(self.root)
        if free < need + 64 * 1024 * 1024:
            raise ImageError(
                "disk_full",
                f"{free >> 20} MiB free on disk, {manifest.file} needs "
                f"{need >> 20} MiB more (and 64 MiB to spare)",
            )

    # -- download ------------------------------------------------------------------------

    def ensure(
        self,
        entry: CatalogueEntry,
        *,
        expect_vm_name: str,
        expect_file: str,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Manifest:
        manifest = self.check_manifest(entry.manifest, entry.signature)
        if manifest.vm_name != expect_vm_name or manifest.file != expect_file:
            raise ImageError(
                "signature_invalid",
                f"the signed manifest is for {manifest.vm_name} "
                f"/ {manifest.file}, not {expect_vm_name} / {expect_file}",
            )
        self._check_rollback(manifest)  # an older manifest than one accepted: refused, even cached
        self._url(entry)  # an http:// (or otherwise refused) URL: refused before any change
        with self._lock:
            lock = self._locks.setdefault(manifest.sha256, threading.Lock())
        with lock:
            with self._lock:
                cached = manifest.sha256 in self._index
                if cached:
                    self._index[manifest.sha256]["last_used"] = time.time()
                    self._save_index()
            if not cached:
                self._make_room(manifest)
                self._download(entry, manifest, progress, cancel)
                self._install(manifest, entry)
            self._accept(manifest)
        return manifest

    def _download(
        self,
        entry: CatalogueEntry,
        manifest: Manifest,
        progress: Callable[[int, int], None] | None,
        cancel: threading.Event | None,
    ) -> None:
        part = self._path(manifest.sha256, "part")
        self.stats = stats = DownloadStats()
        writer: ChunkWriter | None = None
        try:
            if os.path.exists(part):
                try:
                    writer = ChunkWriter.resume(part, self._key, manifest.size)
                except CorruptError:
                    writer = None
            if writer is None:
                writer = ChunkWriter.create(part, self._key, manifest.size)
            stats.resumed_from = stats.reread = writer.written
            if writer.written:
                log_event(
                    LOG,
                    logging.INFO,
                    "images.resume",
                    f"resuming {manifest.file} at {writer.written >> 20} MiB",
                    file=manifest.file,
                    offset=writer.written,
                )
            writer = self._fetch(entry, manifest, writer, progress, cancel)
            writer.close()
        except OSError as exc:
            if writer is not None:
                with contextlib.suppress(OSError):
                    writer.close()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part)
                raise ImageError(
                    "disk_full",
                    f"the disk filled while downloading "
                    f"{manifest.file}; the partial download was removed",
                ) from None
            raise ImageError(
                "image_unavailable",
                f"{manifest.file}: {exc}; the partial download is kept and resumes next time",
            ) from None
        except BaseException:
            if writer is not None:
                with contextlib.suppress(OSError):
                    writer.close()
            raise
        digest = writer.digest.hexdigest()
        if writer.written != manifest.size or digest != manifest.sha256:
            os.unlink(part)
            raise ImageError(
                "signature_invalid",
                f"{manifest.file}: SHA-256 {digest} does not "
                f"match the signed manifest ({manifest.sha256}); download discarded",
            )

    def download_deadline(self, remaining_bytes: int) -> float:
        """How long one request for ``remaining_bytes`` may take in all: a base, plus the
        bytes at the slowest rate worth waiting for, never more than the cap. A request cut
        at its deadline keeps what it fetched; the next launch resumes from there."""
        return min(
            self._deadline_max, self._deadline_base + max(remaining_bytes, 0) / self._min_rate
        )

    def _url(self, entry: CatalogueEntry) -> str:
        url = urllib.parse.urljoin(self.base_url + "/", entry.url)
        try:
            return limits.image_url(url, allow_insecure_http=self.allow_insecure_http)
        except ValueError as exc:
            raise ImageError("image_unavailable", str(exc)) from None

    def _open(
        self, request: urllib.request.Request, url: str, remaining: int
    ) -> tuple[contextlib.ExitStack[bool | None], DeadlineResponse]:
        """Send ``request`` with the deadline for ``remaining`` bytes; the stack closes it."""
        deadline = self.download_deadline(remaining)
        opened = contextlib.ExitStack()
        try:
            response = opened.enter_context(
                open_with_deadline(
                    request,
                    timeout_s=self._timeout,
                    deadline_s=deadline,
                    context=self._ssl,
                    redirects=self._redirects,
                )
            )
        except HttpStatusError as exc:
            raise ImageError("image_unavailable", f"{url}: HTTP {exc.status}") from None
        except DeadlineError:
            raise ImageError(
                "image_unavailable", f"{url}: no reply within the download's {deadline:.0f} s"
            ) from None
        except OSError as exc:
            raise ImageError("image_unavailable", f"{url}: {exc}") from None
        return opened, response

    def _fetch(
        self,
        entry: CatalogueEntry,
        manifest: Manifest,
        writer: ChunkWriter,
        progress: Callable[[int, int], None] | None,
        cancel: threading.Event | None,
    ) -> ChunkWriter:
        url = self._url(entry)
        if writer.complete:
            return writer
        request = urllib.request.Request(  # noqa: S310 - https (or a lab's http), _url
            url, headers={"User-Agent": "cvmc-agent"}
        )
        if writer.written:
            request.add_header("Range", f"bytes={writer.written}-")
        # Redirects are checked against the same rule (_CheckedRedirects).
        opened, response = self._open(request, url, manifest.size - writer.written)
        with opened:
            if writer.written and response.status == 200:
                # The server ignored Range: start over (the old prefix is discarded).
                self.stats.restarts += 1
                writer.close()
                writer = ChunkWriter.create(
                    self._path(manifest.sha256, "part"), self._key, manifest.size
                )
            elif writer.written:
                expected = f"bytes {writer.written}-"
                if response.status != 206 or not str(
                    response.headers.get("Content-Range", "")
                ).startswith(expected):
                    raise ImageError(
                        "image_unavailable",
                        f"{url}: the server answered the Range request with {response.status}",
                    )
            last_durable = writer.written
            while not writer.complete:
                if cancel is not None and cancel.is_set():
                    writer.flush(durable=True)
                    raise ImageError("cancelled", "the download was cancelled; it resumes later")
                data = response.read(min(READ, manifest.size - writer.written))
                if not data:
                    raise ImageError(
                        "image_unavailable",
                        f"{url}: the connection closed at "
                        f"{writer.written} of {manifest.size} bytes; it resumes "
                        "next time",
                    )
                self.stats.fetched += len(data)
                writer.write(data)
                if writer.written - last_durable >= DURABLE_EVERY:
                    writer.flush(durable=True)
                    last_durable = writer.written
                if progress is not None:
                    progress(writer.written, manifest.size)
        return writer

    def _install(self, manifest: Manifest, entry: CatalogueEntry) -> None:
        os.replace(self._path(manifest.sha256, "part"), self._path(manifest.sha256, "img"))
        if hasattr(os, "O_DIRECTORY"):
            fd = os.open(self.root, os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        with self._lock:
            self._index[manifest.sha256] = {
                "vm_name": manifest.vm_name,
                "file": manifest.file,
                "size": manifest.size,
                "disk_format": manifest.disk_format,
                "last_used": time.time(),
                "manifest": manifest.raw.decode(),
                "signature": entry.signature,
            }
            self._save_index()
        log_event(
            LOG,
            logging.INFO,
            "images.installed",
            f"installed {manifest.file} ({manifest.size >> 20} MiB), signature and "
            "SHA-256 verified",
            sha256=manifest.sha256,
            vm_name=manifest.vm_name,
        )
