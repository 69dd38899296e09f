"""``cvmc-vm-token``: write one research-VM HTCondor token to standard output.

Run by systemd's ``cvmc-vm-token@.service`` (socket-activated, ``Accept=yes``) as the
unprivileged ``cvmc-vmtoken`` user, the only one that may read the signing key. Every argument
is fixed by the unit, and the program reads nothing from its client, so whoever may connect to
the socket (the coordinator's group) gets a narrow, short-lived token and never the key
(docs/htcondor.md, "Research VMs' tokens").

Output: ``<jwt>\\n`` and exit 0. Any error: one line on standard error, exit 1; the key's bytes
never appear in it. Imports only the standard library and ``cvmc.gridmodel.condor_token`` (not
the ``cvmc.protocol`` package), so that it starts fast on every connection.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from cvmc import __version__
from cvmc.gridmodel.condor_token import CONDOR_TOKEN, MAX_CONDOR_TOKEN, MAX_KEY_FILE, mint_token

__all__ = ["main"]

PROG = "cvmc-vm-token"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def parser() -> argparse.ArgumentParser:
    """The program's argument parser (also used by tests to check the unit's command)."""
    p = _Parser(prog=PROG, description="Write one research-VM HTCondor token to stdout.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument("--key-file", required=True, help="the signing key file (HTCondor format)")
    p.add_argument("--key-id", required=True, help="the key's name (the token's kid)")
    p.add_argument("--identity", required=True, help="the token's subject, user@domain")
    p.add_argument("--issuer", required=True, help="the pool's trust domain")
    p.add_argument("--lifetime", required=True, type=int, help="seconds the token is valid")
    p.add_argument(
        "--authz", required=True, action="append", help="an authorization level (repeatable)"
    )
    return p


def _read_key(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        data = os.read(fd, MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    return data


def _fail(message: str) -> int:
    line = " ".join(message.split())[:400]
    sys.stderr.write(f"{PROG}: {line}\n")
    sys.stderr.flush()
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except _UsageError as error:
        return _fail(f"usage: {error}")
    try:
        key_file = _read_key(args.key_file)
    except OSError as error:
        return _fail(f"--key-file: cannot read {args.key_file}: {error.strerror}")
    try:
        token = mint_token(
            key_file,
            key_id=args.key_id,
            identity=args.identity,
            issuer=args.issuer,
            authz=args.authz,
            lifetime_s=args.lifetime,
            now=int(time.time()),
            jti=secrets.token_hex(16),
        )
    except ValueError as error:
        return _fail(str(error))
    finally:
        del key_file
    if len(token) > MAX_CONDOR_TOKEN or not CONDOR_TOKEN.match(token):
        return _fail("token: out of the wire's bounds (cvmc.gridmodel.condor_token.CONDOR_TOKEN)")
    try:
        sys.stdout.write(token + "\n")
        sys.stdout.flush()
    except OSError as error:
        return _fail(f"stdout: cannot write the token: {error.strerror}")
    return 0


def run() -> NoReturn:
    """The console script: ``main`` with the process's exit code."""
    code = main()
    try:
        sys.stdout.close()
    except OSError:
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    run()
