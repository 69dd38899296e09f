"""minisign-compatible Ed25519 signatures: verify (agent) and sign (``cvmc image sign``).

The formats are minisign's (https://jedisct1.github.io/minisign/):

- public key: ``untrusted comment: ...`` then base64(``"Ed"`` | key id (8) | key (32));
- signature: ``untrusted comment: ...``, base64(``"ED"`` or ``"Ed"`` | key id | sig (64)),
  ``trusted comment: ...``, base64(global sig (64)). ``"ED"`` signs BLAKE2b-512 of the file
  (pre-hashed, minisign's default since 0.8); ``"Ed"`` signs the file itself. The global
  signature covers the signature and the trusted comment, so the comment cannot be changed;
- secret key: base64(``"Ed"`` | kdf (``"Sc"`` scrypt or zeros) | ``"B2"`` | salt (32) |
  opslimit (8, LE) | memlimit (8, LE) | (key id | secret key (64) | checksum (32)) XOR the
  scrypt stream), the checksum being BLAKE2b-256(``"Ed"`` | key id | secret key).

Tests check both directions against the real ``minisign`` binary.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "PublicKey",
    "SecretKey",
    "Signature",
    "SignatureError",
    "parse_public_key",
    "parse_signature",
    "sign",
    "verify",
]

_UNTRUSTED = "untrusted comment:"
_TRUSTED = "trusted comment: "
_READ = 1 << 20


class SignatureError(ValueError):
    """A signature, key or signed file is malformed or does not verify."""


def _b64(line: str, what: str) -> bytes:
    try:
        return base64.b64decode(line.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what}: not base64") from None


@dataclass(frozen=True)
class PublicKey:
    key_id: bytes
    key: bytes

    @property
    def key_id_hex(self) -> str:
        return self.key_id[::-1].hex().upper()  # minisign prints the id little-endian

    def line(self) -> str:
        return base64.b64encode(b"Ed" + self.key_id + self.key).decode()

    def file_text(self) -> str:
        return f"untrusted comment: minisign public key {self.key_id_hex}\n{self.line()}\n"


def parse_public_key(text: str) -> PublicKey:
    """A public key from a .pub file's text or from its base64 line alone."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines and lines[0].startswith(_UNTRUSTED):
        lines = lines[1:]
    if len(lines) != 1:
        raise SignatureError("public key: expected one base64 line")
    raw = _b64(lines[0], "public key")
    if len(raw) != 42 or raw[:2] != b"Ed":
        raise SignatureError("public key: not a minisign Ed25519 public key")
    return PublicKey(raw[2:10], raw[10:])


@dataclass(frozen=True)
class Signature:
    algorithm: bytes  # b"ED" (pre-hashed) or b"Ed"
    key_id: bytes
    signature: bytes
    trusted_comment: str
    global_signature: bytes


def parse_signature(text: str) -> Signature:
    """A .minisig file's text."""
    lines = text.replace("\r\n", "\n").split("\n")
    if len(lines) < 4 or not lines[0].startswith(_UNTRUSTED):
        raise SignatureError("signature: expected an untrusted comment line first")
    raw = _b64(lines[1], "signature")
    if len(raw) != 74 or raw[:2] not in (b"ED", b"Ed"):
        raise SignatureError("signature: not a minisign Ed25519 signature")
    if not lines[2].startswith(_TRUSTED):
        raise SignatureError("signature: the trusted comment line is missing")
    global_sig = _b64(lines[3], "signature global part")
    if len(global_sig) != 64:
        raise SignatureError("signature: the global signature has the wrong length")
    return Signature(raw[:2], raw[2:10], raw[10:], lines[2][len(_TRUSTED) :], global_sig)


def _blake2b(chunks: Iterable[bytes]) -> bytes:
    digest = hashlib.blake2b(digest_size=64)
    for chunk in chunks:
        digest.update(chunk)
    return digest.digest()


def file_chunks(path: str) -> Iterable[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(_READ):
            yield chunk


def verify(
    keys: Sequence[PublicKey], signature: Signature, data: bytes | Iterable[bytes]
) -> PublicKey:
    """Check ``signature`` over ``data`` (bytes, or chunks for a large file) with one of
    ``keys``; return the key that verified it or raise :class:`SignatureError`."""
    key = next((k for k in keys if k.key_id == signature.key_id), None)
    if key is None:
        raise SignatureError(
            "signature: made with key id "
            f"{signature.key_id[::-1].hex().upper()}, which is not a trusted key"
        )
    if signature.algorithm == b"ED":
        message = _blake2b([data] if isinstance(data, bytes) else data)
    else:
        message = data if isinstance(data, bytes) else b"".join(data)
    public = Ed25519PublicKey.from_public_bytes(key.key)
    try:
        public.verify(signature.signature, message)
    except InvalidSignature:
        raise SignatureError("signature: does not match the signed data") from None
    try:
        public.verify(
            signature.global_signature, signature.signature + signature.trusted_comment.encode()
        )
    except InvalidSignature:
        raise SignatureError("signature: the trusted comment was altered") from None
    return key


@dataclass(frozen=True)
class SecretKey:
    key_id: bytes
    seed: bytes  # the Ed25519 private key (32 bytes)

    @property
    def public(self) -> PublicKey:
        private = Ed25519PrivateKey.from_private_bytes(self.seed)
        raw = private.public_key().public_bytes_raw()
        return PublicKey(self.key_id, raw)

    @staticmethod
    def encrypted(text: str) -> bool:
        """Whether a secret key file's key is password-protected (scrypt)."""
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        return len(lines) == 2 and _b64(lines[1], "secret key")[2:4] == b"Sc"

    @classmethod
    def load(cls, text: str, password: bytes | None = None) -> SecretKey:
        """A minisign secret key file's text; ``password`` for an encrypted key."""
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        if len(lines) != 2 or not lines[0].startswith(_UNTRUSTED):
            raise SignatureError("secret key: expected a comment line and a base64 line")
        raw = _b64(lines[1], "secret key")
        if len(raw) != 158 or raw[:2] != b"Ed" or raw[4:6] != b"B2":
            raise SignatureError("secret key: not a minisign Ed25519 secret key")
        kdf, salt = raw[2:4], raw[6:38]
        ops, mem = struct.unpack("<QQ", raw[38:54])
        sealed = raw[54:]
        if kdf == b"Sc":
            if password is None:
                raise SignatureError("secret key: it is encrypted; give its password")
            stream = _scrypt(password, salt, ops, mem, len(sealed))
            sealed = bytes(a ^ b for a, b in zip(sealed, stream, strict=True))
        elif kdf != b"\0\0":
            raise SignatureError("secret key: unknown key derivation")
        key_id, secret, check = sealed[:8], sealed[8:72], sealed[72:104]
        expected = hashlib.blake2b(b"Ed" + key_id + secret, digest_size=32).digest()
        # `minisign -G -W` (no password) leaves the checksum zero; the public half is
        # still checked below.
        unchecked = kdf == b"\0\0" and check == bytes(32)
        if check != expected and not unchecked:
            raise SignatureError("secret key: wrong password, or the key file is damaged")
        key = cls(key_id, secret[:32])
        if key.public.key != secret[32:]:
            raise SignatureError("secret key: its public half does not match")
        return key

    @classmethod
    def generate(cls) -> SecretKey:
        return cls(os.urandom(8), os.urandom(32))

    def file_text(self) -> str:
        """Unencrypted secret key file text (as ``minisign -G -W`` writes it)."""
        secret = self.seed + self.public.key
        raw = b"Ed\0\0B2" + bytes(32) + bytes(16) + self.key_id + secret + bytes(32)
        return f"untrusted comment: minisign secret key\n{base64.b64encode(raw).decode()}\n"


def _scrypt(password: bytes, salt: bytes, opslimit: int, memlimit: int, size: int) -> bytes:
    """libsodium's crypto_pwhash_scryptsalsa208sha256 with its opslimit/memlimit mapping."""
    opslimit = max(opslimit, 32768)
    r = 8
    if opslimit < memlimit // 32:
        p = 1
        max_n = opslimit // (r * 4)
    else:
        max_n = memlimit // (r * 128)
    n_log2 = 1
    while n_log2 < 63 and (1 << n_log2) <= max_n // 2:
        n_log2 += 1
    if opslimit >= memlimit // 32:
        max_rp = min((opslimit // 4) // (1 << n_log2), 0x3FFFFFFF)
        p = max(max_rp // r, 1)
    n = 1 << n_log2
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, maxmem=129 * r * n * p + (1 << 24), dklen=size
    )


def sign(
    key: SecretKey,
    data: bytes | Iterable[bytes],
    *,
    trusted_comment: str | None = None,
    file_name: str = "",
) -> str:
    """A pre-hashed (``ED``) minisign signature of ``data``, as .minisig file text."""
    if trusted_comment is None:
        trusted_comment = f"timestamp:{int(time.time())}\tfile:{file_name}\thashed"
    if "\n" in trusted_comment or "\r" in trusted_comment:
        raise SignatureError("trusted comment: must be one line")
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    digest = _blake2b([data] if isinstance(data, bytes) else data)
    signature = private.sign(digest)
    global_sig = private.sign(signature + trusted_comment.encode())
    return (
        "untrusted comment: signature from cvmc secret key\n"
        f"{base64.b64encode(b'ED' + key.key_id + signature).decode()}\n"
        f"{_TRUSTED}{trusted_comment}\n"
        f"{base64.b64encode(global_sig).decode()}\n"
    )
