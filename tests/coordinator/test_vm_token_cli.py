"""``cvmc-vm-token``, run as a real process: one token line on stdout, or one line on stderr
and exit 1, never the key; it reads nothing from its client (stdin is the socket under systemd).

The signature is recomputed independently (cryptography's HKDF, HTCondor's unscrambling)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from coordinator.coord_support import activated_minter
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cvmc.coordinator.entrypoints import vm_token
from cvmc.protocol.leases import CONDOR_TOKEN

ROOT = Path(__file__).resolve().parents[2]
KEY = b"Zq8Lx2WmPb7Ck4VnRt9Hs3Jd6Fg1Ya5E"
ARGS = [
    "--key-id",
    "RESEARCH_VM",
    "--identity",
    "research-vm@cm.grid.example.org",
    "--issuer",
    "cm.grid.example.org",
    "--lifetime",
    "43200",
    "--authz",
    "ADVERTISE_STARTD",
    "--authz",
    "ADVERTISE_MASTER",
    "--authz",
    "READ",
]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    # stdin is an open pipe nobody writes to: a program that read its client would hang here.
    return subprocess.run(
        [sys.executable, "-m", "cvmc.coordinator.entrypoints.vm_token", *args],
        stdin=subprocess.PIPE,
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
        check=False,
    )


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jwt_key(key_file: bytes) -> bytes:
    key = bytes(b ^ (0xDE, 0xAD, 0xBE, 0xEF)[i % 4] for i, b in enumerate(key_file))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"htcondor", info=b"master jwt").derive(
        key
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "RESEARCH_VM"
    path.write_bytes(KEY)
    path.chmod(0o400)
    return path


def test_one_token_line_with_the_units_claims_and_a_valid_signature(key_file: Path) -> None:
    before = int(time.time())
    done = _run(["--key-file", str(key_file), *ARGS])
    after = int(time.time())
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.endswith("\n")
    assert done.stdout.count("\n") == 1
    token = done.stdout[:-1]
    assert CONDOR_TOKEN.match(token)
    header, payload, signature = token.split(".")
    assert json.loads(_b64d(header)) == {"alg": "HS256", "kid": "RESEARCH_VM"}
    claims = json.loads(_b64d(payload))
    assert claims["sub"] == "research-vm@cm.grid.example.org"
    assert claims["iss"] == "cm.grid.example.org"
    assert claims["scope"] == "condor:/ADVERTISE_STARTD condor:/ADVERTISE_MASTER condor:/READ"
    assert before <= claims["iat"] <= after
    assert claims["exp"] == claims["iat"] + 43200
    assert len(claims["jti"]) == 32
    int(claims["jti"], 16)
    expected = hmac.new(_jwt_key(KEY), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert _b64d(signature) == expected
    # Each run draws a fresh jti.
    again = _run(["--key-file", str(key_file), *ARGS])
    assert json.loads(_b64d(again.stdout.split(".")[1]))["jti"] != claims["jti"]


def _without(option: str) -> list[str]:
    pairs = zip(ARGS[::2], ARGS[1::2], strict=True)
    return [word for pair in pairs if pair[0] != option for word in pair]


def _with(option: str, value: str) -> list[str]:
    i = ARGS.index(option)
    return [*ARGS[: i + 1], value, *ARGS[i + 2 :]]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (_without("--identity"), "usage:"),
        (_without("--authz"), "usage:"),
        ([*ARGS, "--stdin"], "usage:"),
        (_with("--lifetime", "soon"), "usage:"),
        (_with("--lifetime", "30"), "lifetime_s:"),
        (_with("--lifetime", "604801"), "lifetime_s:"),
        (_with("--key-id", "../POOL"), "key_id:"),
        (_with("--identity", "research-vm"), "identity:"),
        (_with("--issuer", "a b"), "issuer:"),
        ([*ARGS, "--authz", "EVERYTHING"], "authz:"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_1(
    key_file: Path, args: list[str], expect: str
) -> None:
    done = _run(["--key-file", str(key_file), *args])
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"cvmc-vm-token: {expect}")
    assert KEY.decode() not in done.stderr


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (None, "--key-file: cannot read"),
        (b"", "key_file:"),
        (KEY * 200, "key_file:"),
        (KEY[:2] + b"\xbe\xef" + KEY[4:], "key_file:"),  # unscrambles to a NUL
    ],
)
def test_a_bad_key_file_gives_one_line_and_exit_1(
    tmp_path: Path, content: bytes | None, expect: str
) -> None:
    path = tmp_path / "RESEARCH_VM"
    if content is not None:
        path.write_bytes(content)
    done = _run(["--key-file", str(path), *ARGS])
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"cvmc-vm-token: {expect}")
    assert KEY.decode()[4:] not in done.stderr


def test_a_symlinked_key_file_is_not_followed(tmp_path: Path, key_file: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(key_file)
    done = _run(["--key-file", str(link), *ARGS])
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("cvmc-vm-token: --key-file: cannot read")


def test_the_console_script_is_declared_and_its_module_is_light() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["cvmc-vm-token"] == "cvmc.coordinator.entrypoints.vm_token:run"
    assert callable(vm_token.run)
    # Only the standard library and the token module: no server stack, not even the protocol.
    probe = (
        "import sys, cvmc.coordinator.entrypoints.vm_token as m; "
        "print(' '.join(sorted(n for n in sys.modules if n.split('.')[0] in "
        "('sqlalchemy','starlette','uvicorn','cryptography','psutil','htcondor','alembic'))"
        " + [n for n in sys.modules if n.startswith('cvmc.protocol')]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        timeout=20,
        check=True,
    )
    assert done.stdout.strip() == ""


def _read_socket(path: Path, send: bytes = b"") -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(20)
        client.connect(str(path))
        if send:
            client.sendall(send)
        chunks = []
        try:
            while chunk := client.recv(4096):
                chunks.append(chunk)
        except ConnectionResetError:
            # The program closes its end without reading what a client sent; the kernel then
            # resets the connection. The coordinator sends nothing.
            if not send:
                raise
    return b"".join(chunks)


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="no systemd-socket-activate here"
)
def test_one_token_per_connection_behind_an_accepting_socket(
    tmp_path: Path, key_file: Path
) -> None:
    """As cvmc-vm-token.socket runs it (Accept=yes, the connection on stdin and stdout):
    each connection gets one token line and EOF. What a client sends is never read: it cannot
    change the token (at most its connection is reset), and the next connection is served."""
    path = tmp_path / "vm-token.sock"
    with activated_minter(path, key_file, ARGS):
        first = _read_socket(path)
        pushy = _read_socket(path, send=b'{"identity": "admin@cm", "authz": ["ADMINISTRATOR"]}\n')
        second = _read_socket(path)
    tokens = []
    lines = [first, second] + ([pushy] if pushy else [])
    for line in lines:
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        token = line[:-1].decode("ascii")
        assert CONDOR_TOKEN.match(token)
        tokens.append(json.loads(_b64d(token.split(".")[1])))
    assert len({claims["jti"] for claims in tokens}) == len(tokens)
    for claims in tokens:
        assert claims["sub"] == "research-vm@cm.grid.example.org"
        assert claims["scope"] == "condor:/ADVERTISE_STARTD condor:/ADVERTISE_MASTER condor:/READ"
