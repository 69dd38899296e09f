"""The sealed stream a saved VM is written as (crypto.ChunkWriter with ``total=None``): it
reads back whole, refuses to grow past its limit, and a cut or a flipped byte is detected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cvmc.agent.adapters.crypto import CHUNK, HEADER, TAG, ChunkReader, ChunkWriter, CorruptError

KEY = bytes(range(32))


def sealed(path: Path, data: bytes, pieces: int = 7) -> int:
    writer = ChunkWriter.create(str(path), KEY, None)
    step = max(len(data) // pieces, 1)
    for i in range(0, len(data), step):
        writer.write(data[i : i + step])
    return writer.finish()


@pytest.mark.parametrize("size", [1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17])
def test_a_stream_of_any_length_reads_back_whole(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "state.enc"
    assert sealed(path, data) == size
    reader = ChunkReader(str(path), KEY)
    assert reader.size == size
    assert b"".join(reader.chunks()) == data
    reader.close()
    assert data[:64] not in path.read_bytes()


def test_a_stream_past_its_limit_is_refused(tmp_path: Path) -> None:
    writer = ChunkWriter.create(str(tmp_path / "state.enc"), KEY, None)
    writer.limit = 100_000
    writer.write(bytes(99_000))
    with pytest.raises(ValueError, match="longer than its limit of 100000 bytes"):
        writer.write(bytes(2_000))
    writer.close()


def test_a_cut_stream_or_a_flipped_byte_does_not_read(tmp_path: Path) -> None:
    path = tmp_path / "state.enc"
    sealed(path, os.urandom(3 * CHUNK))
    whole = path.read_bytes()
    path.write_bytes(whole[: HEADER + 2 * (CHUNK + TAG)])  # the last chunk gone
    reader = ChunkReader(str(path), KEY)
    with pytest.raises(CorruptError):
        b"".join(reader.chunks())
    reader.close()
    flipped = bytearray(whole)
    flipped[HEADER + 10] ^= 1
    path.write_bytes(bytes(flipped))
    reader = ChunkReader(str(path), KEY)
    with pytest.raises(CorruptError):
        b"".join(reader.chunks())
    reader.close()


def test_a_file_of_known_size_cannot_be_finished_as_a_stream(tmp_path: Path) -> None:
    writer = ChunkWriter.create(str(tmp_path / "image.enc"), KEY, 10)
    with pytest.raises(ValueError, match="finish"):
        writer.finish()
    writer.close()
