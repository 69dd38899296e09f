"""Signatures against the real `minisign` binary (Debian's 0.11), in both directions."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cvmc.agent.adapters import minisign
from cvmc.agent.entrypoints import cli

pytestmark = pytest.mark.skipif(
    shutil.which("minisign") is None,
    reason="minisign is not installed (scripts/test-deps.sh)",
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key pair made by minisign itself, without a password (-W)."""
    directory = tmp_path_factory.mktemp("keys")
    subprocess.run(
        ["minisign", "-G", "-W", "-p", str(directory / "k.pub"), "-s", str(directory / "k.key")],
        check=True,
        capture_output=True,
    )
    return directory


def test_an_image_minisign_signs_verifies_and_a_tampered_one_is_refused(
    keys: Path, tmp_path: Path
) -> None:
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(range(256)) * 4000)
    subprocess.run(
        ["minisign", "-S", "-s", str(keys / "k.key"), "-m", str(image), "-t", "trusted words"],
        check=True,
        capture_output=True,
        input=b"",
    )
    public = minisign.parse_public_key((keys / "k.pub").read_text())
    signature = minisign.parse_signature((tmp_path / "disk.qcow2.minisig").read_text())
    assert signature.algorithm == b"ED"  # pre-hashed, minisign's default
    assert signature.trusted_comment == "trusted words"
    assert minisign.verify([public], signature, minisign.file_chunks(str(image))) == public

    tampered = bytearray(image.read_bytes())
    tampered[5000] ^= 1
    with pytest.raises(minisign.SignatureError, match="does not match the signed data"):
        minisign.verify([public], signature, bytes(tampered))

    forged = minisign.Signature(
        signature.algorithm,
        signature.key_id,
        signature.signature,
        "other words",
        signature.global_signature,
    )
    with pytest.raises(minisign.SignatureError, match="trusted comment was altered"):
        minisign.verify([public], forged, image.read_bytes())

    stranger = minisign.SecretKey.generate().public
    with pytest.raises(minisign.SignatureError, match="not a trusted key"):
        minisign.verify([stranger], signature, image.read_bytes())


def test_legacy_non_prehashed_signatures_verify(keys: Path, tmp_path: Path) -> None:
    data = tmp_path / "small"
    data.write_bytes(b"legacy signature")
    subprocess.run(
        ["minisign", "-S", "-l", "-s", str(keys / "k.key"), "-m", str(data)],
        check=True,
        capture_output=True,
        input=b"",
    )
    signature = minisign.parse_signature((tmp_path / "small.minisig").read_text())
    assert signature.algorithm == b"Ed"
    public = minisign.parse_public_key((keys / "k.pub").read_text())
    minisign.verify([public], signature, data.read_bytes())


def test_cvmc_image_sign_output_verifies_with_minisign(keys: Path, tmp_path: Path) -> None:
    image = tmp_path / "its-u11-boinc-20120415.qcow2"
    image.write_bytes(b"QFI\xfb" + b"x" * 300_000)
    code = cli.main(
        [
            "image",
            "sign",
            "--key",
            str(keys / "k.key"),
            "--image",
            str(image),
            "--vm-name",
            "its-u11-boinc-20120415",
        ]
    )
    assert code == 0
    manifest = tmp_path / "its-u11-boinc-20120415.qcow2.manifest.json"
    for target in (manifest, image):
        done = subprocess.run(
            ["minisign", "-V", "-p", str(keys / "k.pub"), "-m", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "Signature and comment signature verified" in done.stdout
    data = json.loads(manifest.read_text())
    assert data["size"] == image.stat().st_size
    assert data["vm_name"] == "its-u11-boinc-20120415"
    # minisign refuses our signature once the manifest changes.
    manifest.write_text(manifest.read_text().replace('"size"', '"size" ', 1))
    done = subprocess.run(
        ["minisign", "-V", "-p", str(keys / "k.pub"), "-m", str(manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0


def test_a_password_protected_minisign_key_signs(tmp_path: Path) -> None:
    """minisign's default keys are scrypt-encrypted (about 10 s to open: 1 GiB of scrypt)."""
    subprocess.run(
        ["minisign", "-G", "-p", str(tmp_path / "e.pub"), "-s", str(tmp_path / "e.key")],
        input=b"sesame\nsesame\n",
        check=True,
        capture_output=True,
    )
    key = minisign.SecretKey.load((tmp_path / "e.key").read_text(), b"sesame")
    assert key.public == minisign.parse_public_key((tmp_path / "e.pub").read_text())
    target = tmp_path / "blob"
    target.write_bytes(b"signed with an encrypted key")
    (tmp_path / "blob.minisig").write_text(minisign.sign(key, target.read_bytes()))
    done = subprocess.run(
        ["minisign", "-V", "-p", str(tmp_path / "e.pub"), "-m", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_wrong_password_is_refused_cleanly() -> None:
    # A key we encrypt ourselves with cheap scrypt limits, so the wrong-password path is fast.
    import base64  # noqa: PLC0415
    import hashlib  # noqa: PLC0415
    import struct  # noqa: PLC0415

    key = minisign.SecretKey.generate()
    secret = key.seed + key.public.key
    check = hashlib.blake2b(b"Ed" + key.key_id + secret, digest_size=32).digest()
    salt, ops, mem = bytes(32), 32768, 8 * 1024 * 1024
    stream = minisign._scrypt(b"right", salt, ops, mem, 104)
    sealed = bytes(a ^ b for a, b in zip(key.key_id + secret + check, stream, strict=True))
    raw = b"EdScB2" + salt + struct.pack("<QQ", ops, mem) + sealed
    text = f"untrusted comment: test\n{base64.b64encode(raw).decode()}\n"
    assert minisign.SecretKey.load(text, b"right") == key
    with pytest.raises(minisign.SignatureError, match="wrong password"):
        minisign.SecretKey.load(text, b"wrong")
    with pytest.raises(minisign.SignatureError, match="give its password"):
        minisign.SecretKey.load(text)
