"""Database engine, migrations (Alembic) and online backups, for SQLite and PostgreSQL."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

from cvmc.coordinator.domain.config import DatabaseConfig

__all__ = ["backup", "database_url", "make_engine", "migrate"]


def database_url(config: DatabaseConfig) -> URL:
    """The URL with the password from ``password_file`` (never from the config itself)."""
    url = make_url(config.url)
    if config.password_file:
        with open(config.password_file, encoding="utf-8") as fh:
            url = url.set(password=fh.read().strip())
    return url


def make_engine(config: DatabaseConfig, *, lazy_commit: bool = False) -> Engine:
    """The engine; ``lazy_commit``: PostgreSQL commits without waiting for the WAL flush
    (``synchronous_commit = off``, for heartbeats only; docs/coordinator.md)."""
    url = database_url(config)
    if url.get_backend_name() == "sqlite":
        # hide_parameters: a database error never puts row values (salts) into the logs.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi: Any, _record: Any) -> None:  # noqa: ANN401
            cursor = dbapi.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # No pre-ping (a round trip per request): connections are recycled hourly, and a request
    # that meets a dead connection after a PostgreSQL restart fails once; agents retry.
    options = {"options": "-c synchronous_commit=off"} if lazy_commit else {}
    return create_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_recycle=3600,
        connect_args=options,
        hide_parameters=True,
    )


def _alembic() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option(
        "script_location", str(resources.files("cvmc.coordinator").joinpath("migrations"))
    )
    return cfg


#: PostgreSQL advisory lock ("cvmm") that ``migrate`` holds for its transaction, so that the
#: coordinator hosts of one database, migrated at once by one Ansible run, take turns: the
#: first upgrades, the others then find the schema at head.
MIGRATE_KEY = 0x63766D6D


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Upgrade the schema to head; return (revision before, head)."""
    cfg = _alembic()
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_KEY})
        before = MigrationContext.configure(conn).get_current_revision()
        if before != head:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return before, head


def backup(engine: Engine, output: str) -> None:
    """A consistent online copy of the database at ``output`` (temp file, then rename)."""
    url = engine.url
    directory = os.path.dirname(os.path.abspath(output))
    fd, tmp = tempfile.mkstemp(prefix=".backup-", dir=directory)
    os.close(fd)
    try:
        if url.get_backend_name() == "sqlite":
            source = sqlite3.connect(url.database or "")
            target = sqlite3.connect(tmp)
            try:
                source.backup(target)
            finally:
                target.close()
                source.close()
        else:
            pg_dump = shutil.which("pg_dump")
            if pg_dump is None:
                raise RuntimeError("backup: pg_dump is not installed (postgresql-client)")
            env = dict(os.environ)
            if url.password:
                env["PGPASSWORD"] = str(url.password)
            plain = URL.create(
                "postgresql",
                username=url.username,
                host=url.host,
                port=url.port,
                database=url.database,
                query=url.query,
            )
            done = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
                [pg_dump, "--format=custom", f"--file={tmp}", plain.render_as_string()],
                check=False,
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"pg_dump failed: {done.stderr.strip()[:500]}")
        os.chmod(tmp, 0o600)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def schema_is_current(engine: Engine) -> bool:
    """Whether the database is at the migrations' head."""
    head = ScriptDirectory.from_config(_alembic()).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head
