"""The agent's HTTP calls end at an overall deadline, and hostile replies are errors, not
crashes (issue 15, findings 4 and 8). Real loopback servers, the agent's real clients.

A server that drips one byte per second never trips a socket timeout (each ``recv`` gets its
byte well within it); only the deadline cuts it. The bound checked is the server's own
count: the call returned before the server had sent half its body (no timing asserts)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest
from agent.agent_images import entry, make_image
from agent.agent_servers import DripServer, self_signed

from cvmc.agent.adapters import minisign
from cvmc.agent.adapters.http_coordinator import AgentState, HttpCoordinator
from cvmc.agent.adapters.image_store import EncryptedImageStore
from cvmc.agent.ports import CoordinatorError, ImageError

VM = "its-u11-boinc-20120415"
FILE = "its-u11-boinc-20120415.qcow2"
BODY = json.dumps({"server_time": "2026-01-01T00:00:00Z", "pad": "x" * 40}).encode()


def client(tmp_path: Path, server: DripServer, *, deadline_s: float) -> HttpCoordinator:
    state = AgentState(str(tmp_path / "state"), bytes(32))
    state.save_credential("d-1", bytes(range(32)))
    context = ssl.create_default_context(cafile=server.cert)
    return HttpCoordinator(
        server.url,
        state=state,
        desktop="desk00",
        platform="linux",
        enrol_token_file=None,
        ssl_context=context,
        timeout_s=10.0,  # above the drip interval: the socket timeout never fires
        deadline_s=deadline_s,
    )


@pytest.mark.parametrize("drip_headers", [False, True], ids=["body", "headers"])
def test_a_dripping_coordinator_is_cut_at_the_heartbeats_deadline(
    tmp_path: Path, drip_headers: bool
) -> None:
    server = DripServer(BODY, interval_s=1.0, drip_headers=drip_headers, directory=tmp_path)
    try:
        with pytest.raises(CoordinatorError) as caught:
            client(tmp_path, server, deadline_s=2.0).heartbeat({"x": 1})
        assert caught.value.code == "unavailable"
        assert "no reply within 2 s" in str(caught.value)
        assert server.sent < len(BODY) // 2
        assert server.requests == 1
    finally:
        server.close()


def test_a_dripping_image_server_is_cut_at_the_downloads_deadline(tmp_path: Path) -> None:
    signer = minisign.SecretKey.generate()
    image = make_image(tmp_path / FILE, 256)
    server = DripServer(image.read_bytes(), interval_s=1.0)
    store = EncryptedImageStore(
        str(tmp_path / "store"),
        key=bytes(range(32)),
        trusted_keys=[signer.public],
        budget_bytes=1 << 20,
        timeout_s=10.0,
        deadline_base_s=2.0,
        min_rate_bytes_s=1e9,
        # The dripping server speaks plain HTTP on loopback; the https-only rule has its own
        # tests in test_agent_image_store.py.
        allow_insecure_http=True,
    )
    try:
        assert 2.0 <= store.download_deadline(256) < 2.1
        item = entry(signer, image, VM, f"{server.url}/images/{FILE}")
        with pytest.raises(ImageError) as caught:
            store.ensure(item, expect_vm_name=VM, expect_file=FILE)
        assert caught.value.reason == "image_unavailable"
        assert "deadline" in str(caught.value)
        assert server.sent < 128
        assert store.installed() == []
    finally:
        server.close()


def test_a_downloads_deadline_scales_with_its_size_and_is_capped(tmp_path: Path) -> None:
    store = EncryptedImageStore(
        str(tmp_path / "store"), key=bytes(range(32)), trusted_keys=[], budget_bytes=1
    )
    small, big, huge = (store.download_deadline(n) for n in (0, 1 << 30, 1 << 40))
    assert small == 60.0
    assert small < big < huge
    assert huge == 4 * 3600.0


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("status", [200, 409, 500])
def test_nested_json_from_the_coordinator_is_a_malformed_reply(tmp_path: Path, status: int) -> None:
    server = DripServer(nested(20000), interval_s=0.0, status=status, directory=tmp_path)
    try:
        with pytest.raises(CoordinatorError) as caught:
            client(tmp_path, server, deadline_s=20.0).heartbeat({"x": 1})
        assert caught.value.code == ("malformed" if status == 200 else "unavailable")
    finally:
        server.close()


def test_enrolment_reply_nested_json_is_malformed(tmp_path: Path) -> None:
    server = DripServer(nested(5000), interval_s=0.0, directory=tmp_path)
    token = tmp_path / "token"
    token.write_text("t" * 20)
    try:
        coordinator = HttpCoordinator(
            server.url,
            state=AgentState(str(tmp_path / "state"), bytes(32)),
            desktop="desk00",
            platform="linux",
            enrol_token_file=str(token),
            ssl_context=ssl.create_default_context(cafile=server.cert),
        )
        with pytest.raises(CoordinatorError) as caught:
            coordinator.enrol()
        assert caught.value.code == "malformed"
        assert token.exists()
    finally:
        server.close()


class GarbageServer:
    """TLS on 127.0.0.1 that answers any request with bytes that are not HTTP."""

    def __init__(self, directory: Path, reply: bytes) -> None:
        self.cert, key = self_signed(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        listener = socket.create_server(("127.0.0.1", 0))
        self.sock = context.wrap_socket(listener, server_side=True)
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"

        def serve() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = self.sock.accept()
                    with conn:
                        conn.recv(65536)
                        conn.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    "reply",
    [b"HELLO WORLD\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", b""],
    ids=["not-http", "short-body", "nothing"],
)
def test_a_reply_that_is_not_http_is_an_unavailable_coordinator(
    tmp_path: Path, reply: bytes
) -> None:
    """http.client's own errors (BadStatusLine, IncompleteRead) are no OSError: they used to
    escape the agent's handlers like the nested JSON did."""
    server = GarbageServer(tmp_path, reply)
    try:
        coordinator = HttpCoordinator(
            server.url,
            state=AgentState(str(tmp_path / "state"), bytes(32)),
            desktop="desk00",
            platform="linux",
            enrol_token_file=None,
            ssl_context=ssl.create_default_context(cafile=server.cert),
            timeout_s=10.0,
        )
        coordinator.state.save_credential("d-1", bytes(range(32)))
        with pytest.raises(CoordinatorError) as caught:
            coordinator.heartbeat({"x": 1})
        assert caught.value.code == "unavailable"
    finally:
        server.close()
