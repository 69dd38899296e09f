#!/usr/bin/python
"""Issue and revoke the research VMs' VPN client certificates in one pass."""

from __future__ import annotations

DOCUMENTATION = r"""
module: grid_vpn_pki
short_description: Keep one client certificate per VPN identity, and revoke the rest
description:
  - Makes the set of client certificates under O(dir) equal to O(identities). Each identity
    gets an EC P-256 key (mode 0600) and a certificate for TLS client authentication signed by
    the grid CA. Certificates that are missing, signed by another CA, or due to expire within
    O(renew_days) are issued again, and the old ones are revoked.
  - An identity that is no longer listed (its desktop left the inventory) has its certificate
    revoked and its key and certificate removed. The module keeps the revocation list in
    C(revoked.json) and returns it, so that the CRL can be written from it
    (M(community.crypto.x509_crl)).
  - One call handles every identity. That matters at campus scale, where 12,000 desktops with
    two VMs each have 24,000 identities and a loop of per-certificate tasks would take hours.
  - Files are written to a temporary name and renamed. Private keys are never returned.
  - Supports check mode, which reports what would be issued and revoked and writes nothing.
version_added: "0.1.0"
options:
  dir:
    description: Directory that holds C(issued/), C(private/) and C(revoked.json).
    type: path
    required: true
  ca_cert:
    description: Path of the CA certificate (PEM).
    type: path
    required: true
  ca_key:
    description: Path of the CA private key (PEM).
    type: path
    required: true
  ca_key_passphrase:
    description: Passphrase of the CA key, if it has one.
    type: str
  identities:
    description: Common names that must have a valid certificate.
    type: list
    elements: str
    required: true
  days:
    description: Validity of new certificates, in days.
    type: int
    default: 825
  renew_days:
    description: Issue again when fewer days than this remain.
    type: int
    default: 30
author: Desktop grid maintainers
"""

EXAMPLES = r"""
- name: Keep the VPN client certificates in line with the inventory
  grid_vpn_pki:
    dir: /etc/openvpn/grid/pki/clients
    ca_cert: /etc/openvpn/grid/pki/ca.crt
    ca_key: /etc/openvpn/grid/pki/ca.key
    identities: ["lab-desktop-1-vm0", "lab-desktop-1-vm1"]
  register: clients
"""

RETURN = r"""
issued:
  description: Identities whose certificate was (or, in check mode, would be) issued.
  returned: always
  type: list
  elements: str
revoked:
  description: Identities whose certificate was (or would be) revoked in this run.
  returned: always
  type: list
  elements: str
revoked_certificates:
  description: Every revocation so far, in the form M(community.crypto.x509_crl) takes.
  returned: always
  type: list
  elements: dict
"""

import datetime as dt
import json
import os
import re
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported to the user below
    HAS_CRYPTOGRAPHY = False

CN_PATTERN = re.compile(r"\A[a-z0-9][a-z0-9.-]{0,62}\Z")


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _load_ca(module: AnsibleModule) -> tuple[Any, Any]:
    params = module.params
    with open(params["ca_cert"], "rb") as handle:
        ca_cert = x509.load_pem_x509_certificate(handle.read())
    passphrase = params["ca_key_passphrase"]
    with open(params["ca_key"], "rb") as handle:
        ca_key = serialization.load_pem_private_key(
            handle.read(), password=passphrase.encode() if passphrase else None
        )
    return ca_cert, ca_key


def _not_after(cert: Any) -> dt.datetime:
    # cryptography >= 42 has not_valid_after_utc; Debian 12 and EL9 ship older versions.
    value = getattr(cert, "not_valid_after_utc", None)
    if value is None:
        value = cert.not_valid_after.replace(tzinfo=dt.timezone.utc)
    if not isinstance(value, dt.datetime):  # no assert in modules (ansible-test no-assert)
        raise TypeError("the certificate has no notAfter time")
    return value


def _signed_by(cert: Any, ca_cert: Any) -> bool:
    if cert.issuer != ca_cert.subject:
        return False
    try:
        ca_cert.public_key().verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )
    except Exception:  # an invalid signature or another key type: not ours
        return False
    return True


def _needs_issue(cert: Any, ca_cert: Any, renew_days: int) -> bool:
    if cert is None or not _signed_by(cert, ca_cert):
        return True
    return _not_after(cert) - _now() < dt.timedelta(days=renew_days)


def _issue(cn: str, ca_cert: Any, ca_key: Any, days: int) -> tuple[bytes, bytes, int]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM), cert.serial_number


def _module() -> AnsibleModule:
    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "required": True},
            "ca_cert": {"type": "path", "required": True},
            "ca_key": {"type": "path", "required": True, "no_log": False},
            "ca_key_passphrase": {"type": "str", "no_log": True},
            "identities": {"type": "list", "elements": "str", "required": True},
            "days": {"type": "int", "default": 825},
            "renew_days": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"))
    wanted = module.params["identities"]
    bad = [cn for cn in wanted if not CN_PATTERN.match(cn)]
    if bad:
        module.fail_json(msg=f"identities: not valid common names: {', '.join(bad[:10])}")
    if len(set(wanted)) != len(wanted):
        dupes = sorted({cn for cn in wanted if wanted.count(cn) > 1})
        module.fail_json(msg=f"identities: listed twice: {', '.join(dupes[:10])}")
    if module.params["renew_days"] >= module.params["days"]:
        module.fail_json(msg="renew_days must be smaller than days")
    return module


def _read_state(issued_dir: str, revoked_file: str) -> tuple[dict[str, Any], list[Any]]:
    existing = {}
    if os.path.isdir(issued_dir):
        for entry in sorted(os.listdir(issued_dir)):
            if entry.endswith(".crt"):
                with open(os.path.join(issued_dir, entry), "rb") as handle:
                    existing[entry[: -len(".crt")]] = x509.load_pem_x509_certificate(handle.read())
    revocations = []
    if os.path.exists(revoked_file):
        with open(revoked_file, encoding="utf-8") as handle:
            revocations = json.load(handle)
    return existing, revocations


def main() -> None:
    module = _module()
    params = module.params
    base = params["dir"]
    issued_dir = os.path.join(base, "issued")
    private_dir = os.path.join(base, "private")
    revoked_file = os.path.join(base, "revoked.json")
    try:
        ca_cert, ca_key = _load_ca(module)
    except (OSError, ValueError, TypeError) as exc:
        module.fail_json(msg=f"cannot load the CA from ca_cert/ca_key: {exc}")
    existing, revocations = _read_state(issued_dir, revoked_file)

    wanted_set = set(params["identities"])
    to_issue = [
        cn
        for cn in params["identities"]
        if not os.path.exists(os.path.join(private_dir, cn + ".key"))
        or _needs_issue(existing.get(cn), ca_cert, params["renew_days"])
    ]
    to_revoke = sorted(cn for cn in existing if cn not in wanted_set)
    # A certificate issued again replaces one that is still valid: revoke the old serial too.
    replaced = [cn for cn in to_issue if cn in existing]
    result = {"changed": bool(to_issue or to_revoke), "issued": to_issue, "revoked": to_revoke}
    if module.check_mode or not result["changed"]:
        result["revoked_certificates"] = _crl_entries(revocations)
        module.exit_json(**result)

    os.makedirs(issued_dir, mode=0o755, exist_ok=True)
    os.makedirs(private_dir, mode=0o700, exist_ok=True)
    os.chmod(private_dir, 0o700)
    today = _now().strftime("%Y%m%d%H%M%SZ")
    revocations.extend(
        {"cn": cn, "serial_number": existing[cn].serial_number, "revocation_date": today}
        for cn in sorted(set(to_revoke) | set(replaced))
    )
    # The revocation list is saved before any file goes away, so a crash cannot lose a revocation.
    _write_atomic(revoked_file, json.dumps(revocations, indent=1).encode(), 0o600)
    for cn in to_revoke:
        for path in (os.path.join(issued_dir, cn + ".crt"), os.path.join(private_dir, cn + ".key")):
            if os.path.exists(path):
                os.unlink(path)
    for cn in to_issue:
        key_pem, cert_pem, _serial = _issue(cn, ca_cert, ca_key, params["days"])
        _write_atomic(os.path.join(private_dir, cn + ".key"), key_pem, 0o600)
        _write_atomic(os.path.join(issued_dir, cn + ".crt"), cert_pem, 0o644)
    result["revoked_certificates"] = _crl_entries(revocations)
    module.exit_json(**result)


def _crl_entries(revocations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"serial_number": entry["serial_number"], "revocation_date": entry["revocation_date"]}
        for entry in revocations
    ]


if __name__ == "__main__":
    main()
