"""Loopback servers for the agent's integration tests and benchmarks.

- :class:`RangeServer`: an HTTP file server with ``Range`` support that counts the bytes it
  sends and can be throttled (so a test can kill a download half-way).
- :class:`CoordinatorServer`: the coordinator's HTTP contract (docs/coordinator-api.md) over
  TLS with a throw-away certificate: one-time-token enrolment, HMAC-checked requests, strictly
  increasing sequence numbers, leases and a signed catalogue. It is a test double written
  from the contract, not the coordinator service; it binds 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cvmc import protocol

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class RangeServer:
    """Serve ``files`` (name -> path) on 127.0.0.1 with Range support."""

    def __init__(
        self,
        files: dict[str, str],
        *,
        rate_bytes_s: float | None = None,
        honour_range: bool = True,
        tls: tuple[str, str] | None = None,
        redirects: dict[str, str] | None = None,
    ) -> None:
        """``tls``: (cert, key) to serve https; ``redirects``: name -> Location (a 302)."""
        self.files = files
        self.redirects = redirects or {}
        self.rate = rate_bytes_s
        self.honour_range = honour_range
        self.sent = 0
        self.requests: list[tuple[str, str | None]] = []
        self.sent_per_request: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                range_header = self.headers.get("Range")
                server.requests.append((name, range_header))
                server.sent_per_request.append(0)
                index = len(server.sent_per_request) - 1
                if name in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[name])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if name not in server.files:
                    self.send_error(404)
                    return
                data_path = server.files[name]
                size = os.path.getsize(data_path)
                start, end = 0, size - 1
                match = _RANGE.match(range_header or "")
                if match and server.honour_range:
                    start = int(match.group(1))
                    if match.group(2):
                        end = min(int(match.group(2)), size - 1)
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                with open(data_path, "rb") as fh:
                    fh.seek(start)
                    left = end - start + 1
                    began = time.monotonic()
                    sent_here = 0
                    while left > 0:
                        chunk = fh.read(min(16384, left))
                        try:
                            self.wfile.write(chunk)
                        except (BrokenPipeError, ConnectionResetError):
                            return
                        server.sent += len(chunk)
                        server.sent_per_request[index] += len(chunk)
                        sent_here += len(chunk)
                        left -= len(chunk)
                        if server.rate:
                            ahead = sent_here / server.rate - (time.monotonic() - began)
                            if ahead > 0:
                                time.sleep(ahead)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def self_signed(directory: Path) -> tuple[str, str]:
    """A throw-away certificate for 127.0.0.1 and localhost: (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    import ipaddress  # noqa: PLC0415

    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


class CoordinatorServer:
    """The documented coordinator contract on https://127.0.0.1:<port>."""

    def __init__(self, directory: Path, *, token: str = "one-time-token-0123456789") -> None:  # noqa: S107 - a test token
        self.tokens = {token}
        self.desktops: dict[str, dict[str, Any]] = {}
        self.leases: list[dict[str, Any]] = []
        self.catalogue: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.on_heartbeat: Callable[[dict[str, Any]], None] | None = None
        self.down = False
        #: A hostile coordinator: the ``last_seq`` its 409 replies name instead of the true one.
        self.claimed_last_seq: object = None
        self.hostile_reply: bytes | None = None  # sent as the heartbeat's 200 reply when set
        self.hostile_served = 0
        self.cert, key = self_signed(directory)
        self.key = key
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _error(self, code: str, message: str, **extra: Any) -> None:
                server.errors.append(code)
                self._reply(
                    protocol.ERROR_CODES[code][0], {"error": code, "message": message, **extra}
                )

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _authenticate(self, body: bytes) -> str | None:
                desktop = self.headers.get("X-CVMC-Desktop", "")
                record = server.desktops.get(desktop)
                if record is None:
                    self._error("unknown_desktop", "enrol first")
                    return None
                raw_seq = self.headers.get("X-CVMC-Seq", "")
                if not re.fullmatch(protocol.SEQ_PATTERN, raw_seq):
                    self._error("malformed", "X-CVMC-Seq")
                    return None
                seq = int(raw_seq)
                scheme, _, mac = self.headers.get("Authorization", "").partition(" ")
                expected = hmac.new(
                    record["credential"],
                    protocol.string_to_sign(self.command, self.path, desktop, seq, body),
                    hashlib.sha256,
                ).digest()
                if scheme != protocol.AUTH_SCHEME or not hmac.compare_digest(
                    base64.b64decode(mac or "=="), expected
                ):
                    self._error("bad_signature", "HMAC mismatch")
                    return None
                if seq <= record["last_seq"]:
                    claimed = server.claimed_last_seq
                    last = record["last_seq"] if claimed is None else claimed
                    self._error("replayed_sequence", "seq too low", last_seq=last)
                    return None
                record["last_seq"] = seq
                return desktop

            def do_POST(self) -> None:
                body = self._body()
                if server.down:
                    self._error("unavailable", "down for the test")
                    return
                if self.path == protocol.API_PREFIX + "/enrol":
                    data = json.loads(body)
                    if data.get("token") not in server.tokens:
                        self._error("invalid_token", "unknown or used token")
                        return
                    server.tokens.discard(data["token"])
                    desktop_id = f"d-{len(server.desktops) + 1}"
                    credential = os.urandom(32)
                    server.desktops[desktop_id] = {
                        "credential": credential,
                        "last_seq": 0,
                        "name": data["desktop"],
                    }
                    self._reply(
                        201,
                        {
                            "desktop_id": desktop_id,
                            "credential": base64.b64encode(credential).decode(),
                            "heartbeat_s": 60,
                        },
                    )
                    return
                if self.path == protocol.API_PREFIX + "/heartbeat":
                    if self._authenticate(body) is None:
                        return
                    beat = json.loads(body)
                    server.heartbeats.append(beat)
                    if server.on_heartbeat:
                        server.on_heartbeat(beat)
                    if server.hostile_reply is not None:
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(server.hostile_reply)))
                        self.end_headers()
                        self.wfile.write(server.hostile_reply)
                        server.hostile_served += 1
                        return
                    self._reply(
                        200,
                        {
                            "server_time": dt.datetime.now(dt.UTC).isoformat(),
                            "heartbeat_s": 5,
                            "leases": list(server.leases),
                        },
                    )
                    return
                self._error("malformed", f"no such endpoint {self.path}")

            def do_GET(self) -> None:
                if server.down:
                    self._error("unavailable", "down for the test")
                    return
                if self.path != protocol.API_PREFIX + "/images":
                    self._error("malformed", f"no such endpoint {self.path}")
                    return
                if self._authenticate(b"") is None:
                    return
                self._reply(200, {"images": server.catalogue})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class DripServer:
    """A hostile server on 127.0.0.1 that answers every request slowly: one byte every
    ``interval_s`` of a ``body`` (announced in full by ``Content-Length``), and, with
    ``drip_headers``, of its status line and headers too (``interval_s=0``: all at once).
    ``sent`` counts the body bytes written. Over TLS when ``directory`` is given (with a
    throw-away certificate, ``cert``)."""

    def __init__(
        self,
        body: bytes,
        *,
        interval_s: float = 1.0,
        drip_headers: bool = False,
        status: int = 200,
        directory: Path | None = None,
    ) -> None:
        self.body = body
        self.sent = 0
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _drip(self, data: bytes, count: bool) -> bool:
                if not interval_s:
                    try:
                        self.wfile.write(data)
                    except OSError:
                        return False
                    server.sent += len(data) if count else 0
                    return True
                for i in range(len(data)):
                    try:
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        return False
                    if count:
                        server.sent += 1
                    time.sleep(interval_s)
                return True

            def _answer(self) -> None:
                server.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                head = (
                    f"HTTP/1.1 {status} Slow\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(server.body)}\r\n\r\n"
                ).encode()
                if drip_headers:
                    if not self._drip(head, count=False):
                        return
                else:
                    self.wfile.write(head)
                self._drip(server.body, count=True)
                self.close_connection = True

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        scheme = "http"
        self.cert: str | None = None
        if directory is not None:
            self.cert, key = self_signed(directory)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert, key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
