"""cvmc.gridmodel.condor_token against HTCondor's own code (kind C): HTCondor 25's
``Condor_Auth_Passwd::generate_token`` (libcondor_utils from the htcondor wheel, what
condor_token_create runs) signs a token with a key file; cvmc's key derivation must verify that
signature, for RESEARCH_VM (no doubling) and POOL (doubled), and cvmc's header and claims must be
HTCondor's. The collector verifies with the same derivation, so a token cvmc mints verifies there
(molecule/condor's verify checks that against a running collector)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvmc.gridmodel.condor_token import jwt_key, mint_token, token_claims
from cvmc.protocol.leases import CONDOR_TOKEN, MAX_CONDOR_TOKEN

pytest.importorskip("htcondor2")

HELPER = Path(__file__).with_name("htcondor_generate_token.py")
KEY = b"Zq8Lx2WmPb7Ck4VnRt9Hs3Jd6Fg1Ya5E"
LEVELS = ["ADVERTISE_STARTD", "ADVERTISE_MASTER", "READ"]
TRUST_DOMAIN = "cm.grid.example.org"
IDENTITY = f"research-vm@{TRUST_DOMAIN}"


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def htcondor_token(tmp_path: Path, key_id: str, key: bytes = KEY) -> str:
    key_dir = tmp_path / "passwords.d"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    (key_dir / key_id).write_bytes(key)
    (key_dir / key_id).chmod(0o600)
    env = {**os.environ, "_CONDOR_TRUST_DOMAIN": TRUST_DOMAIN}
    done = subprocess.run(
        [sys.executable, str(HELPER), str(key_dir), key_id, IDENTITY, *LEVELS],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("key_id", ["RESEARCH_VM", "POOL"])
def test_cvmc_derives_the_key_htcondor_signs_with(tmp_path: Path, key_id: str) -> None:
    token = htcondor_token(tmp_path, key_id)
    header, payload, signature = token.split(".")
    mac = hmac.new(jwt_key(KEY, key_id), f"{header}.{payload}".encode(), hashlib.sha256)
    assert hmac.compare_digest(_b64d(signature), mac.digest())
    # The other rule (doubling or not) does not verify it: the POOL-only doubling matters.
    other = "POOL" if key_id != "POOL" else "RESEARCH_VM"
    wrong = hmac.new(jwt_key(KEY, other), f"{header}.{payload}".encode(), hashlib.sha256)
    assert not hmac.compare_digest(_b64d(signature), wrong.digest())


def test_cvmc_writes_htcondors_header_and_claims(tmp_path: Path) -> None:
    theirs_token = htcondor_token(tmp_path, "RESEARCH_VM")
    theirs = token_claims(theirs_token, bound=CONDOR_TOKEN, max_chars=MAX_CONDOR_TOKEN)
    claims = theirs["claims"]
    ours_token = mint_token(
        KEY,
        key_id="RESEARCH_VM",
        identity=IDENTITY,
        issuer=TRUST_DOMAIN,
        authz=LEVELS,
        lifetime_s=claims["exp"] - claims["iat"],
        now=claims["iat"],
        jti=claims["jti"],
    )
    assert token_claims(ours_token, bound=CONDOR_TOKEN, max_chars=MAX_CONDOR_TOKEN) == theirs
    # The same header bytes. HTCondor's JSON escapes '/' in the scope, so the payloads' bytes
    # differ; each signature covers its own bytes, and both verify with the same key.
    assert ours_token.split(".")[0] == theirs_token.split(".")[0]
    assert json.loads(_b64d(theirs_token.split(".")[1]))["scope"] == claims["scope"]
