"""A read-only NBD server (fixed newstyle) on a unix socket, serving a :class:`PlainSource`.

The QEMU driver imports a verified image into an encrypted qcow2 base with ``qemu-img
convert`` reading from this export, so the image's plaintext never touches the disk: the
store keeps it encrypted, and this server decrypts on demand, in memory. It implements the
parts of the protocol (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md)
a client needs for reading: NBD_OPT_EXPORT_NAME, NBD_OPT_INFO/GO with NBD_INFO_EXPORT,
NBD_OPT_ABORT, and the READ and DISC commands. Everything else is refused politely.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading

from cvmc.agent.ports import PlainSource

__all__ = ["NbdServer"]

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY = 0x67446698
FLAG_FIXED, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_INFO, OPT_GO = 1, 2, 6, 7
REP_ACK, REP_INFO, REP_ERR_UNSUP = 1, 3, 2**31 + 1
INFO_EXPORT = 0
T_HAS_FLAGS, T_READ_ONLY = 1, 2
CMD_READ, CMD_DISC = 0, 2
EPERM, EINVAL = 1, 22
MAX_READ = 32 * 1024 * 1024


class NbdServer:
    """Serve ``source`` read-only at ``path`` until :meth:`close`."""

    def __init__(self, source: PlainSource, path: str) -> None:
        self.source = source
        self.path = path
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        os.chmod(path, 0o600)
        self._sock.listen(4)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="nbd", daemon=True)
        self._thread.start()

    def __enter__(self) -> NbdServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, ConnectionError, struct.error):
            if self._handshake(conn):
                self._transmit(conn)

    @staticmethod
    def _recv(conn: socket.socket, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the client closed the connection")
            data += chunk
        return bytes(data)

    def _reply(self, conn: socket.socket, option: int, kind: int, data: bytes = b"") -> None:
        conn.sendall(struct.pack(">QIII", REPLY_MAGIC, option, kind, len(data)) + data)

    def _handshake(self, conn: socket.socket) -> bool:
        conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED | FLAG_NO_ZEROES))
        (client_flags,) = struct.unpack(">I", self._recv(conn, 4))
        no_zeroes = bool(client_flags & FLAG_NO_ZEROES)
        flags = T_HAS_FLAGS | T_READ_ONLY
        while True:
            magic, option, length = struct.unpack(">QII", self._recv(conn, 16))
            if magic != IHAVEOPT or length > 65536:
                return False
            data = self._recv(conn, length)
            if option == OPT_EXPORT_NAME:
                conn.sendall(
                    struct.pack(">QH", self.source.size, flags) + (b"" if no_zeroes else bytes(124))
                )
                return True
            if option == OPT_ABORT:
                self._reply(conn, option, REP_ACK)
                return False
            if option in (OPT_INFO, OPT_GO):
                info = struct.pack(">HQH", INFO_EXPORT, self.source.size, flags)
                self._reply(conn, option, REP_INFO, info)
                self._reply(conn, option, REP_ACK)
                if option == OPT_GO:
                    return True
                continue
            del data
            self._reply(conn, option, REP_ERR_UNSUP)

    def _transmit(self, conn: socket.socket) -> None:
        while True:
            magic, _flags, kind, handle, offset, length = struct.unpack(
                ">IHHQQI", self._recv(conn, 28)
            )
            if magic != REQUEST_MAGIC:
                return
            if kind == CMD_DISC:
                return
            if kind != CMD_READ:
                if kind == 1:  # a write: drain its payload, then refuse
                    self._recv(conn, length)
                conn.sendall(
                    struct.pack(">IIQ", SIMPLE_REPLY, EPERM if kind == 1 else EINVAL, handle)
                )
                continue
            if length > MAX_READ or offset + length > self.source.size:
                conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY, EINVAL, handle))
                continue
            with self._lock:
                data = self.source.read_at(offset, length)
            conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY, 0, handle) + data)
