"""``cvmc-coordinator``: check the config, migrate the database, serve, revoke, unrevoke, back up.

Every subcommand takes ``--config PATH`` (default /etc/cvmc-coordinator/coordinator.toml).
Exit codes: 0 done, 1 failed (the database or a file could not be used), 2 bad config or usage,
3 ``revoke-desktop`` was given a name no desktop ever enrolled under (the others were revoked).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cvmc import __version__
from cvmc.coordinator.domain.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    parse_config_text,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["EXIT_UNKNOWN_DESKTOP", "main"]

#: ``revoke-desktop``'s exit status when a name is no enrolled desktop's (a typo, or a desktop
#: whose agent never ran); the known names are revoked all the same.
EXIT_UNKNOWN_DESKTOP = 3
#: ``--help``'s description: plain text, as a terminal shows it.
DESCRIPTION = (
    "The desktop grid's coordinator: check its config, migrate its database, serve the API, "
    "revoke or unrevoke desktops, back up the database. Exit codes: 0 done, 1 failed (the "
    "database or a file could not be used), 2 bad config or usage, 3 revoke-desktop was "
    "given a name no desktop ever enrolled under (the others were revoked)."
)

log = logging.getLogger("cvmc.coordinator")


def _load(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    return parse_config_text(text, name=path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvmc-coordinator", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cvmc-coordinator {__version__}")
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help="the TOML config file")
    sub = parser.add_subparsers(dest="command", required=True)
    # --config is accepted after the subcommand too (cvmc-coordinator check-config --config F).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub.add_parser(
        "check-config",
        parents=[common],
        help="exit 0 if the config is valid, else 2 naming the key",
    )
    sub.add_parser("migrate", parents=[common], help="create or upgrade the schema (idempotent)")
    serve = sub.add_parser(
        "serve", parents=[common], help="run the service on listen_host:listen_port"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, 65),
        metavar="N",
        help="N worker processes sharing the port (SO_REUSEPORT; PostgreSQL only, 1-64)",
    )
    revoke = sub.add_parser(
        "revoke-desktop",
        parents=[common],
        help="revoke desktops by name (idempotent); exit 3 if a name never enrolled",
    )
    revoke.add_argument("names", nargs="+", metavar="NAME")
    unrevoke = sub.add_parser(
        "unrevoke-desktop",
        parents=[common],
        help="take desktops off the revocation list, so that each may enrol again with its "
        "next generation's token (idempotent)",
    )
    unrevoke.add_argument("names", nargs="+", metavar="NAME")
    backup = sub.add_parser("backup", parents=[common], help="an online backup of the database")
    backup.add_argument("--output", required=True, help="the backup file (temp file + rename)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        config = _load(args.config)
    except ConfigError as exc:
        print(f"cvmc-coordinator: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return 0
    # The server dependencies are imported only when needed (check-config needs none).
    from cvmc.coordinator.adapters.database import make_engine  # noqa: PLC0415

    try:
        engine = make_engine(config.database)
    except OSError as exc:
        print(f"cvmc-coordinator: database.password_file: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(args, config, engine)
    except ConfigError as exc:
        print(f"cvmc-coordinator: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"cvmc-coordinator {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _run(args: argparse.Namespace, config: Config, engine: Engine) -> int:
    from cvmc.coordinator.adapters.database import backup, migrate  # noqa: PLC0415

    if args.command == "migrate":
        before, head = migrate(engine)
        print("unchanged" if before == head else f"migrated {before or 'none'} -> {head}")
    elif args.command == "revoke-desktop":
        from cvmc.coordinator.adapters.sql_store import SqlStore  # noqa: PLC0415

        revoked, already, unknown = SqlStore(engine).revoke(args.names, time.time())
        print(json.dumps({"revoked": revoked, "unchanged": already, "unknown": unknown}))
        if unknown:
            print(
                f"cvmc-coordinator revoke-desktop: no desktop ever enrolled as "
                f"{', '.join(unknown)}; check the names (the others were revoked)",
                file=sys.stderr,
            )
            return EXIT_UNKNOWN_DESKTOP
    elif args.command == "unrevoke-desktop":
        from cvmc.coordinator.adapters.sql_store import SqlStore  # noqa: PLC0415

        unrevoked, unchanged = SqlStore(engine).unrevoke(args.names)
        print(json.dumps({"unrevoked": unrevoked, "unchanged": unchanged}))
    elif args.command == "backup":
        backup(engine, args.output)
        print(f"backup written to {args.output}")
    else:
        from cvmc.coordinator.compose import serve  # noqa: PLC0415

        return serve(config, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
