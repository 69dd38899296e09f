#!/usr/bin/python3
"""Keep the grid VPN's CRL fresh on every gateway: renew it on the PKI host, serve it, fetch it.

OpenVPN checks every client against the CRL (crl-verify) through OpenSSL, which refuses a
certificate when the CRL is past its next update ("CRL has expired"): once the CRL expires,
every VM is refused, the revoked and the good alike. Playbook runs rewrite the CRL when fewer
than 30 days remain, but nothing guarantees a playbook run in time. Three subcommands:

- ``renew``, run daily by grid-vpn-crl.timer on the PKI host (grid_vpn_pki_host), the only host
  with the CA key: re-signs the CRL with the same revoked certificates and a new validity,
  writes it atomically (0644: OpenVPN reads it at every connect, as its unprivileged user), and
  says so on stderr. A fresh CRL is left as it is. It exits non-zero (the unit fails, and the
  journal says why) when the CRL cannot be renewed: an encrypted CA key
  (openvpn_gateway_ca_passphrase; renew by a playbook run), or an unreadable CA or CRL.
- ``serve``, run per connection by grid-vpn-crl-publish.socket on the PKI host (inetd style,
  the connection on stdin): answers ``GET /crl.pem`` with the CRL, a public, signed document.
- ``fetch``, run hourly by grid-vpn-crl-fetch.timer on a gateway that does not keep the PKI:
  downloads the CRL (bounded in size and time), checks that the CA signed it, that it has not
  expired and that it is not older than the installed one (a replayed CRL would un-revoke),
  then installs it atomically. A refused CRL changes nothing.

Standard library and python3-cryptography only (Debian 12 ships 38.0).
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def next_update(crl: x509.CertificateRevocationList) -> datetime.datetime:
    """The CRL's next update, in UTC (cryptography before 42 has only the naive property)."""
    aware = getattr(crl, "next_update_utc", None)
    if aware is not None:
        return aware  # type: ignore[no-any-return]
    naive = crl.next_update
    if naive is None:
        raise SystemExit("grid-vpn-crl: the CRL has no next update")
    return naive.replace(tzinfo=datetime.timezone.utc)  # noqa: UP017 - EL9's Python is 3.9


def renewed(
    crl: x509.CertificateRevocationList,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    now: datetime.datetime,
    days: int,
) -> x509.CertificateRevocationList:
    """The same revocations, signed again, valid from `now` for `days` days."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=days))
    )
    for revoked in crl:
        builder = builder.add_revoked_certificate(revoked)
    return builder.sign(ca_key, hashes.SHA256())


def due(crl: x509.CertificateRevocationList, now: datetime.datetime, renew_days: int) -> bool:
    """Whether the CRL expires within `renew_days` days (or has expired)."""
    return next_update(crl) - now < datetime.timedelta(days=renew_days)


def _write_atomic(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".crl-")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def renew(args: Sequence[str], now: datetime.datetime | None = None) -> int:
    """``renew``: re-sign the CRL on the PKI host when fewer than --renew-days remain."""
    parser = argparse.ArgumentParser(prog="grid-vpn-crl renew")
    parser.add_argument("--ca-cert", required=True)
    parser.add_argument("--ca-key", required=True)
    parser.add_argument("--crl", required=True)
    parser.add_argument("--days", type=int, required=True, help="validity of a renewed CRL")
    parser.add_argument("--renew-days", type=int, required=True, help="renew below this")
    opts = parser.parse_args(args)
    if not 0 < opts.renew_days < opts.days:
        raise SystemExit("grid-vpn-crl: --renew-days must be above 0 and below --days")
    now = now or datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017
    with open(opts.crl, "rb") as handle:
        crl = x509.load_pem_x509_crl(handle.read())
    if not due(crl, now, opts.renew_days):
        return 0
    with open(opts.ca_cert, "rb") as handle:
        ca_cert = x509.load_pem_x509_certificate(handle.read())
    with open(opts.ca_key, "rb") as handle:
        key_pem = handle.read()
    try:
        ca_key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        print(
            f"grid-vpn-crl: {opts.crl} expires {next_update(crl):%Y-%m-%d %H:%M} UTC and the CA "
            "key is encrypted (openvpn_gateway_ca_passphrase): run the gateway playbook to "
            "renew it, or every VM is refused once it expires",
            file=sys.stderr,
        )
        return 1
    # A tuple, not a union: EL9's Python is 3.9.
    if not isinstance(ca_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise SystemExit(f"grid-vpn-crl: {opts.ca_key} is not an EC or RSA key")
    if not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise SystemExit(f"grid-vpn-crl: {opts.crl} is not signed by {opts.ca_cert}")
    new = renewed(crl, ca_cert, ca_key, now=now, days=opts.days)
    _write_atomic(opts.crl, new.public_bytes(serialization.Encoding.PEM))
    print(
        f"grid-vpn-crl: renewed {opts.crl} ({len(new)} revoked), valid until "
        f"{next_update(new):%Y-%m-%d %H:%M} UTC",
        file=sys.stderr,
    )
    return 0


#: The largest CRL a gateway accepts: 24,000 revoked identities take about 1 MiB in PEM.
MAX_CRL_BYTES = 16 * 1024 * 1024
#: The largest request the publisher reads (a request line and a few headers).
MAX_REQUEST_BYTES = 8192
_PEM_BEGIN = b"-----BEGIN X509 CRL-----"


class RefusedError(Exception):
    """A fetched CRL that must not be installed; the message says why."""


def _revoked_serials(crl: x509.CertificateRevocationList) -> set[int]:
    return {revoked.serial_number for revoked in crl}


def last_update(crl: x509.CertificateRevocationList) -> datetime.datetime:
    """The CRL's last update, in UTC (cryptography before 42 has only the naive property)."""
    aware = getattr(crl, "last_update_utc", None)
    if aware is not None:
        return aware  # type: ignore[no-any-return]
    return crl.last_update.replace(tzinfo=datetime.timezone.utc)  # noqa: UP017


def checked(
    data: bytes,
    ca_cert: x509.Certificate,
    current: x509.CertificateRevocationList | None,
    now: datetime.datetime,
) -> x509.CertificateRevocationList:
    """The fetched CRL, if a gateway may install it in place of `current`; else `RefusedError`.

    It must be one PEM CRL, issued and signed by the grid's CA, not expired, and not older than
    the installed one. A CRL with the same last update must revoke at least what the installed
    one revokes (playbook runs add revocations without renewing the dates).
    """
    if len(data) > MAX_CRL_BYTES:
        raise RefusedError(f"the CRL is larger than {MAX_CRL_BYTES} bytes")
    if not data.lstrip().startswith(_PEM_BEGIN) or data.count(_PEM_BEGIN) != 1:
        raise RefusedError("the answer is not one PEM CRL")
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError as exc:
        raise RefusedError(f"the answer is not a CRL ({exc})") from None
    if crl.issuer != ca_cert.subject:
        raise RefusedError(f"the CRL's issuer is {crl.issuer.rfc4514_string()}, not the grid's CA")
    if not crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        raise RefusedError("the CRL is not signed by the grid's CA")
    if next_update(crl) <= now:
        raise RefusedError(f"the CRL expired on {next_update(crl):%Y-%m-%d %H:%M} UTC")
    if last_update(crl) > now + datetime.timedelta(minutes=10):
        raise RefusedError(f"the CRL's last update {last_update(crl):%Y-%m-%d %H:%M} UTC is ahead")
    if current is not None:
        if last_update(crl) < last_update(current):
            raise RefusedError(
                f"the CRL of {last_update(crl):%Y-%m-%d %H:%M} UTC is older than the installed "
                f"one ({last_update(current):%Y-%m-%d %H:%M} UTC)"
            )
        if last_update(crl) == last_update(current):
            dropped = _revoked_serials(current) - _revoked_serials(crl)
            if dropped:
                raise RefusedError(
                    f"the CRL has the installed one's date but drops {len(dropped)} revocation(s)"
                )
    return crl


def _download(url: str, limit: int, deadline_s: float) -> bytes:
    """The body at `url`, at most `limit` bytes, within `deadline_s` seconds in all."""
    if not url.startswith(("http://", "https://")):
        raise RefusedError(f"{url} is not an http(s) URL")
    deadline = time.monotonic() + deadline_s
    chunks: list[bytes] = []
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=min(deadline_s, 10.0)) as reply:  # noqa: S310
            if reply.status != 200:
                raise RefusedError(f"{url} answered {reply.status}")
            while True:
                if time.monotonic() > deadline:
                    raise RefusedError(f"{url} did not send the CRL within {deadline_s:g} s")
                chunk = reply.read1(65536)  # what has arrived: a drip meets the deadline
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise RefusedError(f"the CRL is larger than {limit} bytes")
                chunks.append(chunk)
    except (urllib.error.URLError, OSError) as exc:
        raise RefusedError(f"cannot fetch {url}: {exc}") from None
    return b"".join(chunks)


def fetch(args: Sequence[str], now: datetime.datetime | None = None) -> int:
    """``fetch``: install the PKI host's CRL on this gateway, if it passes `checked`."""
    parser = argparse.ArgumentParser(prog="grid-vpn-crl fetch")
    parser.add_argument("--url", required=True, help="the PKI host's CRL (grid-vpn-crl serve)")
    parser.add_argument("--ca-cert", required=True)
    parser.add_argument("--crl", required=True, help="the CRL OpenVPN reads (crl-verify)")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds, in all")
    opts = parser.parse_args(args)
    now = now or datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017
    with open(opts.ca_cert, "rb") as handle:
        ca_cert = x509.load_pem_x509_certificate(handle.read())
    current: x509.CertificateRevocationList | None = None
    current_bytes = b""
    try:
        with open(opts.crl, "rb") as handle:
            current_bytes = handle.read()
        current = x509.load_pem_x509_crl(current_bytes)
        if not current.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
            current = None
    except (OSError, ValueError):
        current = None
    try:
        data = _download(opts.url, MAX_CRL_BYTES, opts.deadline)
        crl = checked(data, ca_cert, current, now)
    except RefusedError as exc:
        print(f"grid-vpn-crl: refused, {opts.crl} is unchanged: {exc}", file=sys.stderr)
        return 1
    if data == current_bytes:
        return 0
    _write_atomic(opts.crl, data)
    print(
        f"grid-vpn-crl: installed {opts.crl} from {opts.url} ({len(crl)} revoked), valid "
        f"until {next_update(crl):%Y-%m-%d %H:%M} UTC",
        file=sys.stderr,
    )
    return 0


def _reply(status: str, body: bytes, content_type: str = "text/plain") -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def answer(request: bytes, crl_path: str) -> bytes:
    """The publisher's answer to one request: the CRL for ``GET /crl.pem``, else an error."""
    line = request.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _reply("400 Bad Request", b"bad request\n")
    method, target = parts[0], parts[1]
    if method not in (b"GET", b"HEAD"):
        return _reply("405 Method Not Allowed", b"GET only\n")
    if target != b"/crl.pem":
        return _reply("404 Not Found", b"only /crl.pem is here\n")
    try:
        with open(crl_path, "rb") as handle:
            body = handle.read(MAX_CRL_BYTES + 1)
    except OSError:
        return _reply("503 Service Unavailable", b"no CRL yet\n")
    reply = _reply("200 OK", body, "application/x-pem-file")
    return reply[: len(reply) - len(body)] if method == b"HEAD" else reply


def _drain(conn: socket.socket, deadline: float) -> None:
    """Read (and drop) what the client still sends, a bounded amount, so that closing does not
    reset the connection before the client has read the answer."""
    conn.shutdown(socket.SHUT_WR)
    drained = 0
    try:
        while drained < 16 * MAX_REQUEST_BYTES and time.monotonic() < deadline + 1:
            chunk = conn.recv(4096)
            if not chunk:
                return
            drained += len(chunk)
    except OSError:
        return


def serve(args: Sequence[str]) -> int:
    """``serve``: answer one connection, passed on stdin (systemd's Accept=yes)."""
    parser = argparse.ArgumentParser(prog="grid-vpn-crl serve")
    parser.add_argument("--crl", required=True)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to read a request")
    opts = parser.parse_args(args)
    conn = socket.socket(fileno=os.dup(0))
    try:
        conn.settimeout(opts.timeout)
        deadline = time.monotonic() + opts.timeout
        request = b""
        while b"\r\n\r\n" not in request and b"\n\n" not in request:
            if len(request) > MAX_REQUEST_BYTES or time.monotonic() > deadline:
                conn.sendall(_reply("400 Bad Request", b"request too long or too slow\n"))
                _drain(conn, deadline)
                return 1
            try:
                chunk = conn.recv(1024)
            except socket.timeout:  # noqa: UP041 - TimeoutError only from Python 3.10
                return 1
            if not chunk:
                break
            request += chunk
        conn.sendall(answer(request, opts.crl))
        return 0
    finally:
        conn.close()


def run(args: Sequence[str], now: datetime.datetime | None = None) -> int:
    """The command line: ``renew``, ``fetch`` or ``serve`` and its options."""
    commands = {"renew": renew, "fetch": fetch}
    if args and args[0] == "serve":
        return serve(args[1:])
    if not args or args[0] not in commands:
        print("usage: grid-vpn-crl {renew,fetch,serve} [options]", file=sys.stderr)
        return 2
    return commands[args[0]](args[1:], now)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
