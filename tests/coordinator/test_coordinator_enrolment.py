"""Enrolment against hostile desktops (issue 15, finding 5 and finding 8's enrolment items).

The real app (Starlette), the real store on SQLite and PostgreSQL: a token expires, only a
desktop's next generation enrols, a revocation survives re-enrolment until it is undone on
purpose, a restored backup does not make spent tokens valid again (the watermark), every
refusal is the same ``401 invalid_token``, and 50 concurrent enrolments with one token give
one success and 49 refusals, never a 500.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from coordinator.coord_support import (
    CLOCK_START,
    GRID,
    Clock,
    dump,
    enrol_body,
    make_coordinator,
    write_setup,
)
from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool
from starlette.testclient import TestClient

from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.entrypoints.cli import main as cli
from cvmc.coordinator.service.coordinator import ApiError, Coordinator

ENROL = "/api/v1/enrol"


@pytest.fixture
def setup(tmp_path: Path, db_url: str) -> Iterator[tuple[Coordinator, TestClient, Clock]]:
    clock = Clock()
    coordinator = make_coordinator(write_setup(tmp_path, db_url), clock)
    with TestClient(create_app(coordinator), raise_server_exceptions=False) as client:
        yield coordinator, client, clock
    coordinator.store.close()


def _engine(coordinator: Coordinator) -> Engine:
    return coordinator.store.engine  # type: ignore[attr-defined,no-any-return]


def _cli_config(coordinator: Coordinator, tmp_path: Path) -> str:
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'[database]\nurl = "{coordinator.config.database.url}"\n'
        f'[enrolment]\nkey_file = "{coordinator.config.enrolment.key_file}"\n'
    )
    return str(config)


def _refused(client: TestClient, body: bytes) -> dict[str, Any]:
    reply = client.post(ENROL, content=body)
    assert reply.status_code == 401, reply.text
    return dict(reply.json())


def test_only_the_next_generation_enrols(setup: Any) -> None:
    coordinator, client, _ = setup
    assert client.post(ENROL, content=enrol_body("desk00")).status_code == 201
    before = dump(_engine(coordinator))
    # A generation that skips ahead is refused, and writes nothing.
    assert _refused(client, enrol_body("desk00", generation=3))["error"] == "invalid_token"
    assert dump(_engine(coordinator)) == before
    live = client.post(ENROL, content=enrol_body("desk00", generation=2))
    assert live.status_code == 201
    before = dump(_engine(coordinator))
    # A lower generation never takes over the live identity, spent or not.
    for generation in (1, 2):
        assert _refused(client, enrol_body("desk00", generation=generation))["error"] == (
            "invalid_token"
        )
    assert dump(_engine(coordinator)) == before
    assert client.post(ENROL, content=enrol_body("desk00", generation=3)).status_code == 201


def test_a_lower_unused_generation_does_not_take_over(setup: Any) -> None:
    coordinator, client, _ = setup
    assert client.post(ENROL, content=enrol_body("desk01")).status_code == 201
    assert client.post(ENROL, content=enrol_body("desk01", generation=2)).status_code == 201
    # Generation 3 was minted (and leaked); generation 5 was never spent but is ahead.
    before = dump(_engine(coordinator))
    _refused(client, enrol_body("desk01", generation=5))
    assert dump(_engine(coordinator)) == before
    assert client.post(ENROL, content=enrol_body("desk01", generation=3)).status_code == 201
    _refused(client, enrol_body("desk01", generation=2))


def test_expired_and_future_tokens_are_refused(setup: Any) -> None:
    coordinator, client, clock = setup
    before = dump(_engine(coordinator))
    # Issued 301 s ago with a 300 s lifetime: expired.
    _refused(client, enrol_body("desk02", issued_at=CLOCK_START - 301, ttl_s=300))
    # Expires exactly now: expired too.
    _refused(client, enrol_body("desk02", issued_at=CLOCK_START - 300, ttl_s=300))
    # Issued an hour in the coordinator's future.
    _refused(client, enrol_body("desk02", issued_at=CLOCK_START + 3600))
    assert dump(_engine(coordinator)) == before
    clock.now = CLOCK_START + 299
    reply = client.post(ENROL, content=enrol_body("desk02", issued_at=CLOCK_START, ttl_s=300))
    assert reply.status_code == 201, reply.text


def test_a_revoked_desktop_stays_revoked_until_unrevoked(setup: Any, tmp_path: Path) -> None:
    coordinator, client, _ = setup
    assert client.post(ENROL, content=enrol_body("desk03")).status_code == 201
    config = _cli_config(coordinator, tmp_path)
    assert cli(["--config", config, "revoke-desktop", "desk03"]) == 0
    before = dump(_engine(coordinator))
    # No unused token re-enrols it: neither the next generation nor any other.
    for generation in (2, 3):
        _refused(client, enrol_body("desk03", generation=generation))
    assert dump(_engine(coordinator)) == before
    # Undone on purpose, with the CLI: the next generation enrols, once.
    assert cli(["--config", config, "unrevoke-desktop", "desk03", "desk09"]) == 0
    assert client.post(ENROL, content=enrol_body("desk03", generation=2)).status_code == 201
    assert cli(["--config", config, "unrevoke-desktop", "desk03"]) == 0


def test_unrevoke_reports_what_it_changed(
    setup: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coordinator, client, _ = setup
    assert client.post(ENROL, content=enrol_body("desk04")).status_code == 201
    config = _cli_config(coordinator, tmp_path)
    assert cli(["--config", config, "revoke-desktop", "desk04"]) == 0
    capsys.readouterr()
    assert cli(["--config", config, "unrevoke-desktop", "DESK04.lab.example", "ghost"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "unrevoked": ["DESK04.lab.example"],
        "unchanged": ["ghost"],
    }
    assert cli(["--config", config, "unrevoke-desktop", "desk04"]) == 0
    assert json.loads(capsys.readouterr().out) == {"unrevoked": [], "unchanged": ["desk04"]}


def test_every_refusal_is_the_same_reply(setup: Any, tmp_path: Path) -> None:
    """Whatever the reason, one status and one body: no name can be probed."""
    coordinator, client, _ = setup
    assert client.post(ENROL, content=enrol_body("desk05")).status_code == 201
    assert client.post(ENROL, content=enrol_body("desk06")).status_code == 201
    assert cli(["--config", _cli_config(coordinator, tmp_path), "revoke-desktop", "desk06"]) == 0
    foreign = json.dumps({**json.loads(enrol_body("desk07")), "desktop": "desk08"}).encode()
    cases = {
        "unknown name": enrol_body("nothere"),
        "unknown name, other key's MAC": foreign.replace(b'"desk08"', b'"nothere"'),
        "token of another desktop": foreign,
        "expired": enrol_body("desk07", issued_at=CLOCK_START - 400, ttl_s=300),
        "spent": enrol_body("desk05"),
        "not the next generation": enrol_body("desk07", generation=2),
        "revoked": enrol_body("desk06", generation=2),
    }
    before = dump(_engine(coordinator))
    replies = {reason: _refused(client, body) for reason, body in cases.items()}
    assert dump(_engine(coordinator)) == before
    assert {json.dumps(reply, sort_keys=True) for reply in replies.values()} == {
        json.dumps(
            {"error": "invalid_token", "message": "the enrolment token is not valid"},
            sort_keys=True,
        )
    }, replies


def test_fifty_concurrent_enrolments_with_one_token(setup: Any) -> None:
    """One wins; the 49 others get 401, never a 500 (PostgreSQL's unique violation)."""
    coordinator, _, _ = setup
    engine = _engine(coordinator)
    # Open the pool's connections first, so that the 50 attempts meet in the database rather
    # than queueing behind connection set-up (which let the first one commit alone).
    assert isinstance(engine.pool, QueuePool)
    with contextlib.ExitStack() as stack:
        for _ in range(engine.pool.size()):
            stack.enter_context(engine.connect())
    body = enrol_body("desk07")
    start = threading.Barrier(50)

    def attempt(_: int) -> int:
        start.wait()
        try:
            coordinator.enrol(body)
        except ApiError as exc:
            return exc.status
        except Exception:
            return 500  # what the app answers to any other exception
        return 201

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(attempt, range(50)))
    assert sorted(statuses) == [201] + [401] * 49
    rows = dump(_engine(coordinator))
    assert [row[:2] for row in rows["enrolments"]] == [("desk07", 1)]
    assert len(rows["desktops"]) == 1


def test_restoring_a_backup_does_not_revive_spent_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SQLite backup restored by copying the file back (docs/coordinator.md, "Restoring a
    backup"): the watermark refuses every token issued before the restore."""
    db = tmp_path / "coordinator.db"
    clock = Clock()
    coordinator = make_coordinator(write_setup(tmp_path, f"sqlite:///{db}"), clock)
    config = _cli_config(coordinator, tmp_path)
    assert cli(["--config", config, "backup", "--output", str(tmp_path / "backup.db")]) == 0
    coordinator.enrol(enrol_body("desk00"))  # spent after the backup was taken
    coordinator.store.close()
    shutil.copyfile(tmp_path / "backup.db", db)  # the restore
    # Without the watermark the restored database takes the spent token again (the finding).
    restored = make_coordinator(write_setup(tmp_path, f"sqlite:///{db}"), clock)
    restored.enrol(enrol_body("desk00"))
    restored.store.close()
    shutil.copyfile(tmp_path / "backup.db", db)
    # The procedure: the watermark at the time of the restore.
    clock.now = CLOCK_START + 60
    setup = write_setup(tmp_path, f"sqlite:///{db}")
    (tmp_path / "grid.json").write_text(
        json.dumps({**GRID, "enrol_tokens_not_before": int(CLOCK_START + 60)})
    )
    restored = make_coordinator(setup, clock)
    with pytest.raises(ApiError) as refused:
        restored.enrol(enrol_body("desk00"))
    assert (refused.value.status, refused.value.code) == (401, "invalid_token")
    # A token minted after the restore, of the next generation the restored database expects.
    reply = restored.enrol(enrol_body("desk00", issued_at=CLOCK_START + 60))
    assert reply["desktop_id"].startswith("d-")
    restored.store.close()
    capsys.readouterr()
