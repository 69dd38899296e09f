"""The CRL's way from the PKI host to a gateway that holds no CA key (issue 15, finding 9):
`grid-vpn-crl serve` behind systemd's own `systemd-socket-activate` (as
grid-vpn-crl-publish.socket runs it) and `grid-vpn-crl fetch` over real HTTP on loopback. A
CRL that the gateway must not install (another CA's, expired, older, dropping revocations,
oversized, not a CRL, too slow) is refused and changes nothing; an installed one is checked with
the real `openssl verify -crl_check`, as OpenVPN's crl-verify does. All real."""

from __future__ import annotations

import datetime
import http.server
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from unit.test_vpn_crl import NOW, SCRIPT, Pki, _load


def _crl(pki: Pki, last: datetime.datetime, days: int, serials: list[int]) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.ca.subject)
        .last_update(last)
        .next_update(last + datetime.timedelta(days=days))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build()
        )
    return builder.sign(pki.ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def publisher(crl: Path) -> Iterator[str]:
    """`grid-vpn-crl serve` as grid-vpn-crl-publish.socket runs it: one process per
    connection, the connection on stdin (Accept=yes), a clean environment."""
    activate = shutil.which("systemd-socket-activate")
    assert activate, "systemd-socket-activate is missing (Debian's systemd package)"
    port = _free_port()
    activator = subprocess.Popen(
        [activate, "--listen", f"127.0.0.1:{port}", "--accept", "--inetd",
         sys.executable, str(SCRIPT), "serve", "--crl", str(crl), "--timeout", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            assert activator.poll() is None, activator.stderr.read() if activator.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the publisher never listened"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/crl.pem"
    finally:
        activator.terminate()
        activator.wait(10)


class Sites:
    """A PKI host (`pki/`, the CRL it serves) and a gateway (`gw/`, the CA certificate and the
    CRL OpenVPN reads) sharing one CA."""

    def __init__(self, root: Path) -> None:
        self.pki = Pki(root)
        self.served = root / "served.pem"
        self.installed = root / "crl.pem"

    def fetch(self, url: str, *extra: str) -> int:
        args = ["fetch", "--url", url, "--ca-cert", str(self.pki.root / "ca.crt"),
                "--crl", str(self.installed), *extra]  # fmt: skip
        return int(_load().run(args, now=NOW))


@pytest.fixture
def sites(tmp_path: Path) -> Sites:
    return Sites(tmp_path)


def test_the_gateway_installs_the_pki_hosts_newer_crl_and_refuses_the_revoked(
    sites: Sites, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = sites.pki
    sites.installed.write_bytes(_crl(pki, NOW - datetime.timedelta(days=20), 180, []))
    newer = _crl(pki, NOW - datetime.timedelta(days=1), 180, [pki.gone.serial_number])
    sites.served.write_bytes(newer)
    assert pki.verify("gone.crt").returncode == 0  # not revoked yet on the gateway
    with publisher(sites.served) as url:
        assert sites.fetch(url) == 0
        assert "installed" in capsys.readouterr().err
        assert sites.installed.read_bytes() == newer
        assert sites.installed.stat().st_mode & 0o777 == 0o644
        # Fetching the same CRL again changes nothing and says nothing.
        mtime = sites.installed.stat().st_mtime_ns
        assert sites.fetch(url) == 0
        assert sites.installed.stat().st_mtime_ns == mtime
        assert capsys.readouterr().err == ""
    gone = pki.verify("gone.crt")
    assert gone.returncode != 0
    assert "certificate revoked" in gone.stdout + gone.stderr
    assert pki.verify("good.crt").returncode == 0


def test_a_gateway_without_a_crl_takes_the_first_valid_one(sites: Sites) -> None:
    served = _crl(sites.pki, NOW - datetime.timedelta(days=1), 180, [])
    sites.served.write_bytes(served)
    with publisher(sites.served) as url:
        assert sites.fetch(url) == 0
    assert sites.installed.read_bytes() == served


def _refused(sites: Sites, served: bytes, capsys: pytest.CaptureFixture[str], why: str) -> None:
    before = _crl(sites.pki, NOW - datetime.timedelta(days=5), 180, [sites.pki.gone.serial_number])
    sites.installed.write_bytes(before)
    sites.served.write_bytes(served)
    with publisher(sites.served) as url:
        assert sites.fetch(url) == 1
    err = capsys.readouterr().err
    assert "refused" in err
    assert "unchanged" in err
    assert why in err
    assert sites.installed.read_bytes() == before


def test_an_older_crl_is_refused_a_replay_cannot_unrevoke(
    sites: Sites, capsys: pytest.CaptureFixture[str]
) -> None:
    # Validly signed and not expired, but older than the installed one, and without the
    # revocation: what an attacker on the path would replay to let a revoked VM back in.
    old = _crl(sites.pki, NOW - datetime.timedelta(days=30), 180, [])
    _refused(sites, old, capsys, "older than the installed one")


def test_a_crl_of_the_same_date_must_not_drop_a_revocation(
    sites: Sites, capsys: pytest.CaptureFixture[str]
) -> None:
    same_date = _crl(sites.pki, NOW - datetime.timedelta(days=5), 180, [])
    _refused(sites, same_date, capsys, "drops 1 revocation")


def test_a_crl_of_the_same_date_that_adds_a_revocation_is_installed(sites: Sites) -> None:
    pki = sites.pki
    sites.installed.write_bytes(_crl(pki, NOW - datetime.timedelta(days=5), 180, []))
    added = _crl(pki, NOW - datetime.timedelta(days=5), 180, [pki.gone.serial_number])
    sites.served.write_bytes(added)
    with publisher(sites.served) as url:
        assert sites.fetch(url) == 0
    assert sites.installed.read_bytes() == added


def test_another_cas_crl_is_refused(
    sites: Sites, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "other").mkdir()
    other = Pki(tmp_path / "other")
    # The same subject, another key: only the signature tells them apart.
    forged = _crl(other, NOW - datetime.timedelta(days=1), 180, [])
    _refused(sites, forged, capsys, "not signed by the grid's CA")


def test_an_expired_crl_is_refused(sites: Sites, capsys: pytest.CaptureFixture[str]) -> None:
    expired = _crl(sites.pki, NOW - datetime.timedelta(days=200), 180, [])
    _refused(sites, expired, capsys, "expired")


def test_something_else_than_one_crl_is_refused(
    sites: Sites, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _crl(sites.pki, NOW - datetime.timedelta(days=1), 180, [])
    _refused(sites, b"<html>captive portal</html>", capsys, "not one PEM CRL")
    _refused(sites, good + good, capsys, "not one PEM CRL")
    _refused(sites, good.replace(b"A", b"B", 40), capsys, "refused")


def test_an_unreachable_pki_host_changes_nothing(
    sites: Sites, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _crl(sites.pki, NOW - datetime.timedelta(days=5), 180, [])
    sites.installed.write_bytes(before)
    assert sites.fetch(f"http://127.0.0.1:{_free_port()}/crl.pem") == 1
    assert "cannot fetch" in capsys.readouterr().err
    assert sites.installed.read_bytes() == before


class _Evil(http.server.BaseHTTPRequestHandler):
    mode = "huge"

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        if self.mode == "huge":
            block = b"-----BEGIN X509 CRL-----\n" + b"A" * 65536
            for _ in range(300):  # 19 MiB, above MAX_CRL_BYTES
                self.wfile.write(block)
        else:  # a drip: one byte every 0.2 s, for ever
            for _ in range(1000):
                self.wfile.write(b"-")
                self.wfile.flush()
                time.sleep(0.2)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def evil(mode: str) -> Iterator[str]:
    handler = type("Handler", (_Evil,), {"mode": mode})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/crl.pem"
    finally:
        server.shutdown()
        server.server_close()


def test_an_oversized_answer_is_cut_off_and_refused(
    sites: Sites, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _crl(sites.pki, NOW - datetime.timedelta(days=5), 180, [])
    sites.installed.write_bytes(before)
    with evil("huge") as url:
        assert sites.fetch(url) == 1
    assert "larger than" in capsys.readouterr().err
    assert sites.installed.read_bytes() == before


def test_a_dripping_server_is_given_up_at_the_deadline(
    sites: Sites, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _crl(sites.pki, NOW - datetime.timedelta(days=5), 180, [])
    sites.installed.write_bytes(before)
    with evil("drip") as url:
        assert sites.fetch(url, "--deadline", "1") == 1
    assert "within 1 s" in capsys.readouterr().err
    assert sites.installed.read_bytes() == before


def _raw(url: str, request: bytes) -> bytes:
    host, port = url.split("/")[2].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return reply


def test_the_publisher_serves_only_the_crl(sites: Sites) -> None:
    crl = _crl(sites.pki, NOW - datetime.timedelta(days=1), 180, [])
    sites.served.write_bytes(crl)
    with publisher(sites.served) as url:
        assert _raw(url, b"GET /crl.pem HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\n" + crl)
        head = _raw(url, b"HEAD /crl.pem HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 OK")
        assert f"Content-Length: {len(crl)}".encode() in head
        assert head.endswith(b"\r\n\r\n")
        assert _raw(url, b"GET /ca.key HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 404")
        assert _raw(url, b"GET /../ca.key HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 404")
        assert _raw(url, b"POST /crl.pem HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 405")
        assert _raw(url, b"garbage\r\n\r\n").startswith(b"HTTP/1.0 400")
        assert _raw(url, b"GET /crl.pem HTTP/1.0\r\nX: " + b"a" * 20000).startswith(b"HTTP/1.0 400")
        # A client that sends nothing is dropped after --timeout (2 s), and the next is served.
        with socket.create_connection(("127.0.0.1", int(url.split(":")[2].split("/")[0]))) as idle:
            idle.settimeout(15)
            assert idle.recv(10) == b""
        assert _raw(url, b"GET /crl.pem HTTP/1.0\r\n\r\n").endswith(crl)
    sites.served.unlink()
    with publisher(sites.served) as url:
        assert _raw(url, b"GET /crl.pem HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 503")
