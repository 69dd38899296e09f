"""The gateway's CRL renewal (roles/openvpn_gateway/files/grid_vpn_crl.py, run daily by its
timer), checked with the real `openssl verify -crl_check`: the OpenSSL check OpenVPN's
crl-verify relies on. Issue 15 finding 9c."""

from __future__ import annotations

import datetime
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SCRIPT = Path(__file__).parents[2] / "roles/openvpn_gateway/files/grid_vpn_crl.py"
NOW = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grid_vpn_crl", SCRIPT)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["grid_vpn_crl"] = module
    spec.loader.exec_module(module)
    return module


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    cn: str, key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey, issuer: str
) -> x509.Certificate:
    ca = cn == issuer
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=400))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    return builder.sign(ca_key, hashes.SHA256())


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _cert("grid CA", self.ca_key, self.ca_key, "grid CA")
        self.good = _cert("lab-desktop-1-vm0", ec.generate_private_key(ec.SECP256R1()),
                          self.ca_key, "grid CA")  # fmt: skip
        self.gone = _cert("lab-desktop-2-vm0", ec.generate_private_key(ec.SECP256R1()),
                          self.ca_key, "grid CA")  # fmt: skip
        for name, cert in (("ca.crt", self.ca), ("good.crt", self.good), ("gone.crt", self.gone)):
            (root / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.write_key()

    def write_key(self, passphrase: bytes | None = None) -> None:
        algorithm: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        (self.root / "ca.key").write_bytes(
            self.ca_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algorithm
            )
        )

    def write_crl(self, last: datetime.datetime, next_: datetime.datetime) -> None:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(self.gone.serial_number)
            .revocation_date(last)
            .build()
        )
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca.subject)
            .last_update(last)
            .next_update(next_)
            .add_revoked_certificate(revoked)
            .sign(self.ca_key, hashes.SHA256())
        )
        (self.root / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))

    def verify(self, cert: str) -> subprocess.CompletedProcess[str]:
        """OpenSSL's verification with the CRL checked, at NOW, as OpenVPN's crl-verify does."""
        return subprocess.run(
            ["openssl", "verify", "-crl_check", "-attime", str(int(NOW.timestamp())),
             "-CAfile", str(self.root / "ca.crt"), "-CRLfile", str(self.root / "crl.pem"),
             str(self.root / cert)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    def args(self) -> list[str]:
        return [
            "renew", "--ca-cert", str(self.root / "ca.crt"), "--ca-key", str(self.root / "ca.key"),
            "--crl", str(self.root / "crl.pem"), "--days", "180", "--renew-days", "30",
        ]  # fmt: skip


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def test_an_expired_crl_refuses_every_client_and_the_timer_renews_it_first(pki: Pki) -> None:
    # What the timer prevents: past its next update, OpenSSL refuses the good certificate too.
    pki.write_crl(NOW - datetime.timedelta(days=181), NOW - datetime.timedelta(days=1))
    expired = pki.verify("good.crt")
    assert expired.returncode != 0
    assert "CRL has expired" in expired.stdout + expired.stderr
    # Ten days before it expires, the daily run renews it, keeping its revocations.
    pki.write_crl(NOW - datetime.timedelta(days=170), NOW + datetime.timedelta(days=10))
    assert _load().run(pki.args(), now=NOW) == 0
    crl = x509.load_pem_x509_crl((pki.root / "crl.pem").read_bytes())
    assert crl.next_update_utc == NOW + datetime.timedelta(days=180)
    assert [r.serial_number for r in crl] == [pki.gone.serial_number]
    assert crl.is_signature_valid(pki.ca_key.public_key())
    assert (pki.root / "crl.pem").stat().st_mode & 0o777 == 0o644
    assert pki.verify("good.crt").returncode == 0
    gone = pki.verify("gone.crt")
    assert gone.returncode != 0
    assert "certificate revoked" in gone.stdout + gone.stderr


def test_an_expired_crl_is_renewed_too(pki: Pki) -> None:
    pki.write_crl(NOW - datetime.timedelta(days=200), NOW - datetime.timedelta(days=20))
    assert _load().run(pki.args(), now=NOW) == 0
    assert pki.verify("good.crt").returncode == 0


def test_a_fresh_crl_is_left_as_it_is(pki: Pki) -> None:
    pki.write_crl(NOW - datetime.timedelta(days=10), NOW + datetime.timedelta(days=170))
    before = (pki.root / "crl.pem").read_bytes()
    assert _load().run(pki.args(), now=NOW) == 0
    assert (pki.root / "crl.pem").read_bytes() == before


def test_an_encrypted_ca_key_fails_loudly_and_changes_nothing(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    pki.write_key(b"vaulted")
    pki.write_crl(NOW - datetime.timedelta(days=170), NOW + datetime.timedelta(days=10))
    before = (pki.root / "crl.pem").read_bytes()
    assert _load().run(pki.args(), now=NOW) == 1
    assert "openvpn_gateway_ca_passphrase" in capsys.readouterr().err
    assert (pki.root / "crl.pem").read_bytes() == before


def test_a_crl_of_another_ca_is_refused(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = Pki(tmp_path / "other")
    other.write_crl(NOW - datetime.timedelta(days=170), NOW + datetime.timedelta(days=10))
    (pki.root / "crl.pem").write_bytes((other.root / "crl.pem").read_bytes())
    with pytest.raises(SystemExit, match="is not signed by"):
        _load().run(pki.args(), now=NOW)
