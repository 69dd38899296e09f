"""Encryption at rest for the image store: a seekable, authenticated chunk format.

File layout ("CVMCENC1")::

    header (32 bytes): magic "CVMCENC1" | chunk size (u32 BE) | nonce prefix (8) | zero (12)
    chunk i:           AES-256-GCM(key, nonce = prefix | i (u32 BE), plaintext chunk i,
                                   aad = header | i (u64 BE) | final (1 byte)) || tag (16)

Every chunk but the last holds exactly ``chunk size`` plaintext bytes; the last is sealed
with ``final = 1``, so truncating a finished file, reordering chunks or swapping chunks
between files is detected. A download writes chunks as they fill, so a partial file is a
valid prefix: after a kill the writer re-opens it, drops a torn last chunk and carries on
from the last whole one (see :class:`ChunkWriter`). Reads are random access
(:class:`ChunkReader`), which is what a hypervisor importing the image needs.

A stream of unknown length (a saved VM's state, ``grid_policy.suspend_minutes``) is written
with ``total=None``: the writer holds back the last chunk until :meth:`ChunkWriter.finish`
seals it as the final one, and refuses more than ``limit`` bytes.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["CHUNK", "HEADER", "TAG", "ChunkReader", "ChunkWriter", "CorruptError", "plain_size"]

MAGIC = b"CVMCENC1"
HEADER = 32
TAG = 16
CHUNK = 64 * 1024  # small chunks: a kill loses at most this much downloaded data


class CorruptError(ValueError):
    """The encrypted file is damaged, truncated, or was written with another key."""


def _header(chunk: int, prefix: bytes) -> bytes:
    return MAGIC + struct.pack(">I", chunk) + prefix + bytes(12)


def _parse_header(data: bytes) -> tuple[int, bytes]:
    if len(data) != HEADER or data[:8] != MAGIC or data[20:] != bytes(12):
        raise CorruptError("not a CVMCENC1 file (bad header)")
    chunk = struct.unpack(">I", data[8:12])[0]
    if not 4096 <= chunk <= 16 * 1024 * 1024:
        raise CorruptError(f"implausible chunk size {chunk}")
    return chunk, data[12:20]


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">Q", index) + (b"\1" if final else b"\0")


def plain_size(encrypted_size: int, chunk: int = CHUNK) -> int:
    """Plaintext bytes in a *complete* file of ``encrypted_size`` bytes."""
    body = encrypted_size - HEADER
    full, rest = divmod(body, chunk + TAG)
    return full * chunk + max(rest - TAG, 0)


class ChunkWriter:
    """Append-only writer of a CVMCENC1 file of a known plaintext ``total`` size.

    ``ChunkWriter.resume(path, key, total)`` re-opens a partial file: it verifies every whole
    chunk already there (feeding the plaintext to ``digest`` so the SHA-256 continues),
    truncates a torn tail, and returns the writer positioned at ``written``.
    """

    def __init__(
        self, fh: BinaryIO, key: bytes, total: int | None, header: bytes, chunk: int
    ) -> None:
        self._fh = fh
        self._aes = AESGCM(key)
        self._header = header
        self._chunk = chunk
        self._prefix = header[12:20]
        self.total = total
        #: With ``total=None``: the most plaintext the stream may carry.
        self.limit: int | None = None
        self.written = 0
        self._index = 0
        self._buffer = bytearray()
        self.digest = hashlib.sha256()
        self.reread = 0  # plaintext bytes re-read (and re-hashed) on resume

    @classmethod
    def create(cls, path: str, key: bytes, total: int | None, chunk: int = CHUNK) -> ChunkWriter:
        header = _header(chunk, os.urandom(8))
        fh = open(path, "wb")  # noqa: SIM115 - owned by the writer, closed by close()
        fh.write(header)
        return cls(fh, key, total, header, chunk)

    @classmethod
    def resume(cls, path: str, key: bytes, total: int) -> ChunkWriter:
        fh = open(path, "r+b")  # noqa: SIM115 - owned by the writer
        try:
            header = fh.read(HEADER)
            chunk, _ = _parse_header(header)
            writer = cls(fh, key, total, header, chunk)
            writer._replay()
        except BaseException:
            fh.close()
            raise
        return writer

    def _replay(self) -> None:
        """Verify the chunks already written; stop at the first torn or bad one."""
        sealed = self._chunk + TAG
        assert self.total is not None  # a stream is never resumed
        while self.written + self._chunk <= self.total:
            pos = HEADER + self._index * sealed
            self._fh.seek(pos)
            data = self._fh.read(sealed)
            if len(data) < sealed:
                break
            try:
                plain = self._aes.decrypt(
                    _nonce(self._prefix, self._index), data, _aad(self._header, self._index, False)
                )
            except InvalidTag:
                break
            self.digest.update(plain)
            self.reread += len(plain)
            self.written += len(plain)
            self._index += 1
        self._fh.seek(HEADER + self._index * sealed)
        self._fh.truncate()

    def write(self, data: bytes) -> None:
        if self.total is None:
            if self.limit is not None and self.written + len(self._buffer) + len(data) > self.limit:
                raise ValueError(f"the stream is longer than its limit of {self.limit} bytes")
            self._buffer += data
            while len(self._buffer) > self._chunk:  # the last chunk waits for finish()
                self._seal(bytes(self._buffer[: self._chunk]), final=False)
                del self._buffer[: self._chunk]
            return
        if self.written + len(self._buffer) + len(data) > self.total:
            raise ValueError("more data than the manifest's size")
        self._buffer += data
        while len(self._buffer) >= self._chunk:
            self._seal(bytes(self._buffer[: self._chunk]))
            del self._buffer[: self._chunk]
        if self.written + len(self._buffer) == self.total and self._buffer:
            self._seal(bytes(self._buffer))
            self._buffer.clear()

    def finish(self) -> int:
        """End a stream (``total=None``): seal what is left as the final chunk, then close.
        Returns the plaintext bytes written."""
        if self.total is not None:
            raise ValueError("finish() ends a stream; a file of known size completes itself")
        self.total = self.written + len(self._buffer)
        if self._buffer or not self.written:
            self._seal(bytes(self._buffer), final=True)
            self._buffer.clear()
        self.close()
        return self.total

    def _seal(self, plain: bytes, final: bool | None = None) -> None:
        if final is None:
            final = self.written + len(plain) == self.total
        sealed = self._aes.encrypt(
            _nonce(self._prefix, self._index), plain, _aad(self._header, self._index, final)
        )
        self._fh.write(sealed)
        self.digest.update(plain)
        self.written += len(plain)
        self._index += 1

    @property
    def complete(self) -> bool:
        return self.written == self.total

    def flush(self, durable: bool = False) -> None:
        self._fh.flush()
        if durable:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


class ChunkReader:
    """Random-access plaintext reads of a complete CVMCENC1 file."""

    def __init__(self, path: str, key: bytes) -> None:
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._header = self._fh.read(HEADER)
        self._chunk, self._prefix = _parse_header(self._header)
        self._aes = AESGCM(key)
        self.size = plain_size(os.fstat(self._fh.fileno()).st_size, self._chunk)
        self._last = (self.size - 1) // self._chunk if self.size else 0
        self._cache: tuple[int, bytes] | None = None

    def chunk(self, index: int) -> bytes:
        if self._cache and self._cache[0] == index:
            return self._cache[1]
        sealed = self._chunk + TAG
        self._fh.seek(HEADER + index * sealed)
        data = self._fh.read(sealed)
        try:
            plain = self._aes.decrypt(
                _nonce(self._prefix, index), data, _aad(self._header, index, index == self._last)
            )
        except InvalidTag:
            raise CorruptError(
                f"chunk {index} does not authenticate (damaged or truncated)"
            ) from None
        self._cache = (index, plain)
        return plain

    def read_at(self, offset: int, length: int) -> bytes:
        if offset >= self.size or length <= 0:
            return b""
        end = min(offset + length, self.size)
        out = bytearray()
        while offset < end:
            index, inner = divmod(offset, self._chunk)
            piece = self.chunk(index)[inner : inner + end - offset]
            out += piece
            offset += len(piece)
        return bytes(out)

    def chunks(self) -> Iterator[bytes]:
        """The plaintext, chunk by chunk (CorruptError at the first that fails)."""
        for index in range(self._last + 1 if self.size else 0):
            yield self.chunk(index)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for index in range(self._last + 1 if self.size else 0):
            digest.update(self.chunk(index))
        return digest.hexdigest()

    def close(self) -> None:
        self._fh.close()
