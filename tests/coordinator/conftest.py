"""Coordinator test fixtures: a database for each backend (SQLite, and PostgreSQL for real).

Each pytest session creates its own PostgreSQL database on the configured server (named after
the configured one, the process and a random suffix) and drops it at its end, so two runs at
once (two developers, or a run beside the bench) never empty each other's tables (issue 15,
finding 8). The configured role needs CREATEDB (scripts/test-postgres.sh grants it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from coordinator.coord_support import Clock, make_coordinator, write_setup
from pg_scratch import scratch_database
from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.service.coordinator import Coordinator

#: scripts/test-postgres.sh (run by scripts/test-deps.sh) creates this role and database.
POSTGRES_URL = os.environ.get(
    "CVMC_TEST_POSTGRES_URL", "postgresql+psycopg://cvmc_test:cvmc_test@127.0.0.1:5432/cvmc_test"
)


def _postgres_problem() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """This session's own PostgreSQL database, created on the configured server and dropped at
    the end of the session."""
    problem = _postgres_problem()
    if problem is not None:
        message = (
            f"PostgreSQL at {POSTGRES_URL.split('@')[-1]} is not reachable ({problem}); "
            "run scripts/test-deps.sh (or set CVMC_TEST_POSTGRES_URL)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_database(POSTGRES_URL))
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or this session's PostgreSQL database (emptied)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'coordinator.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    yield url


@pytest.fixture
def setup(tmp_path: Path, db_url: str) -> Iterator[tuple[Coordinator, TestClient, Clock]]:
    """A coordinator on ``db_url`` with a fake clock, and a client of its app (the API tests';
    a module may define its own ``setup``)."""
    clock = Clock()
    coordinator = make_coordinator(write_setup(tmp_path, db_url), clock)
    with TestClient(create_app(coordinator)) as client:
        yield coordinator, client, clock
    coordinator.store.close()
