"""A PostgreSQL database of one's own for a test session or a bench run (issue 15, finding 8).

The coordinator's tests and bench/coordinator_load.py used to share the configured database,
so two runs at once emptied each other's tables. Each run now creates a database on the
configured server, named after the configured one with the process id and a random suffix,
and drops it at its end. The configured role needs CREATEDB (scripts/test-postgres.sh).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

from sqlalchemy import create_engine, make_url, text

__all__ = ["scratch_database"]


@contextlib.contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """The URL of a new, empty database on ``url``'s server; dropped on exit."""
    configured = make_url(url)
    name = f"{configured.database or 'cvmc_test'}_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RuntimeError(
                f"cannot create the run's database {name} as {configured.username}: {first}; "
                "the role needs CREATEDB (scripts/test-postgres.sh grants it)"
            ) from None
        try:
            yield configured.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
