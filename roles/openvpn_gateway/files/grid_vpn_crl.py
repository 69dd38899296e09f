#!/usr/bin/python3
"""Renew the grid VPN's CRL before it expires: the gateway's daily timer runs this.

OpenVPN checks every client against the CRL (crl-verify) through OpenSSL, which refuses a
certificate when the CRL is past its next update ("CRL has expired"): once the CRL expires,
every VM is refused, the revoked and the good alike. Playbook runs rewrite the CRL when fewer
than 30 days remain, but nothing guarantees a playbook run in time; this script, run daily by
grid-vpn-crl.timer, does the same on the gateway. It re-signs the CRL with the same revoked
certificates and a new validity, writes it atomically (0644: OpenVPN reads it at every connect,
as its unprivileged user), and says so on stderr. A fresh CRL is left as it is.

It exits non-zero (the unit fails, and the journal says why) when the CRL cannot be renewed:
an encrypted CA key (openvpn_gateway_ca_passphrase; renew by a playbook run), or an unreadable
CA or CRL. Standard library and python3-cryptography only (Debian 12 ships 38.0).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
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


def run(args: Sequence[str], now: datetime.datetime | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grid-vpn-crl", description=__doc__.splitlines()[0])
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


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
