"""``cvmc-coordinator``: the config check, migrations, revocation and backups (real databases),
plus the config parser's errors (each names its key)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from coordinator.coord_support import Clock, enrol_body, make_coordinator, write_setup
from sqlalchemy import create_engine, inspect

from cvmc.coordinator.adapters.schema import metadata
from cvmc.coordinator.domain.config import ConfigError, parse_config_text

GOOD = """
[server]
listen_host = "127.0.0.1"
listen_port = 8080
public_url = "https://lab-coordinator"
[database]
url = "sqlite:////var/lib/cvmc-coordinator/coordinator.db"
password_file = ""
[enrolment]
key_file = "/etc/cvmc-coordinator/enrol.key"
[leases]
ttl_s = 300
heartbeat_s = 60
offline_after_s = 180
[images]
dir = "/srv/cvmc-images"
base_url = "/images/"
[demand]
source = "htcondor"
job_ads_file = ""
collector = ""
schedds = []
match_unnamed_jobs = false
poll_s = 30
vm_condor_version = "23.9.6"
[grid]
model_file = "/etc/cvmc-coordinator/grid.json"
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cvmc.coordinator.entrypoints.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_interface_example_is_valid(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(GOOD)
    result = run("--config", str(config), "check-config")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert run("check-config", "--config", str(config)).returncode == 0


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("ttl_s = 300", 'ttl_s = "300"'), "leases.ttl_s"),
        (("listen_port = 8080", "listen_port = 0"), "server.listen_port"),
        (('source = "htcondor"', 'source = "condor_q"'), "demand.source"),
        (('source = "htcondor"', 'source = "job_ads_file"'), "demand.job_ads_file"),
        (("offline_after_s = 180", "offline_after_s = 30"), "leases.offline_after_s"),
        (('url = "sqlite', 'url = "mysql'), "database.url"),
        (('base_url = "/images/"', 'base_url = "/images"'), "images.base_url"),
        (("schedds = []", 'schedds = "a"'), "demand.schedds"),
        (("poll_s = 30", "poll_s = 30\nsurprise = 1"), "demand.surprise"),
        (("[grid]", "[grids]"), "grids"),
        (('public_url = "https', 'public_url = "ftp'), "server.public_url"),
        (("match_unnamed_jobs = false", "match_unnamed_jobs = 1"), "demand.match_unnamed_jobs"),
        (('password_file = ""', 'password_file = "/etc/pw"'), "database.password_file"),
        (
            ('vm_condor_version = "23.9.6"', 'vm_condor_version = "25.0"'),
            "demand.vm_condor_version",
        ),
        (
            ('vm_condor_version = "23.9.6"', 'vm_condor_version = "23.9.6\\n"'),
            "demand.vm_condor_version",
        ),
        (("[leases]", "[leases\n"), "c.toml"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    text = GOOD.replace(*change, 1)
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, name="c.toml")
    assert str(caught.value).startswith(f"{key}:") or caught.value.key == key


def test_plain_http_image_urls_are_refused_unless_the_lab_allows_them() -> None:
    mirror = GOOD.replace('base_url = "/images/"', 'base_url = "http://mirror.example.edu/i/"')
    with pytest.raises(ConfigError, match=r"^images\.base_url: .*plain http://.*grid_images_allow"):
        parse_config_text(mirror, name="c.toml")
    # A path resolves against the coordinator's URL: http there is refused the same way.
    http_public = GOOD.replace('public_url = "https://', 'public_url = "http://')
    with pytest.raises(ConfigError, match=r"^images\.base_url: 'http://lab-coordinator/images/'"):
        parse_config_text(http_public, name="c.toml")
    lab = mirror.replace('base_url = "http', 'allow_insecure_http = true\nbase_url = "http')
    config = parse_config_text(lab, name="c.toml")
    assert (config.images.base_url, config.images.allow_insecure_http) == (
        "http://mirror.example.edu/i/",
        True,
    )
    assert parse_config_text(GOOD, name="c.toml").images.allow_insecure_http is False
    with pytest.raises(ConfigError, match=r"^images\.allow_insecure_http: 'yes'"):
        parse_config_text(
            GOOD.replace("[images]", '[images]\nallow_insecure_http = "yes"'), name="c.toml"
        )


def test_check_config_exit_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(GOOD.replace("ttl_s = 300", "ttl_s = 5"))
    result = run("--config", str(config), "check-config")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "leases.ttl_s" in result.stderr
    missing = run("--config", str(tmp_path / "none.toml"), "check-config")
    assert missing.returncode == 2
    assert "--config" in missing.stderr


def test_migrate_revoke_backup(tmp_path: Path, db_url: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    first = run("--config", str(config), "migrate")
    assert (first.returncode, first.stdout) == (0, "migrated none -> 0005\n"), first.stderr
    again = run("--config", str(config), "migrate")
    assert (again.returncode, again.stdout) == (0, "unchanged\n")
    # The migrations create exactly the tables the store queries.
    engine = create_engine(db_url)
    inspector = inspect(engine)
    for table in metadata.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.columns.keys())
    engine.dispose()
    # Enrol one desktop through the service, then revoke it (twice: idempotent).
    setup = write_setup(tmp_path, db_url)
    coordinator = make_coordinator(setup, Clock())
    coordinator.enrol(enrol_body("desk03"))
    coordinator.store.close()
    # A name no desktop enrolled under (a typo) exits 3 and names it; the known one is revoked.
    result = run("--config", str(config), "revoke-desktop", "desk03", "ghost")
    assert result.returncode == 3
    assert json.loads(result.stdout) == {
        "revoked": ["desk03"],
        "unchanged": [],
        "unknown": ["ghost"],
    }
    assert "no desktop ever enrolled as ghost" in result.stderr
    result = run("--config", str(config), "revoke-desktop", "desk03")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"revoked": [], "unchanged": ["desk03"], "unknown": []}
    # Backup: a consistent copy, written via a temp file.
    output = tmp_path / "backup.db"
    result = run("--config", str(config), "backup", "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.glob(".backup-*")] == []
    if db_url.startswith("sqlite"):
        with sqlite3.connect(output) as conn:
            assert conn.execute("SELECT name, revoked_at IS NOT NULL FROM desktops").fetchall() == [
                ("desk03", 1)
            ]
    else:
        listing = subprocess.run(
            ["pg_restore", "--list", str(output)], capture_output=True, text=True, check=True
        )
        assert "TABLE DATA public desktops" in listing.stdout
    failed = run("--config", str(config), "backup", "--output", str(tmp_path / "no" / "b.db"))
    assert failed.returncode == 1
    assert "backup" in failed.stderr


#: A desktop row as revisions 0001 and 0002 hold it.
_OLD_DESKTOP = (
    "INSERT INTO desktops (id, name, department, generation, salt, last_seq, enrolled_at, "
    "revoked_at, platform, agent_version, users, may_start, may_run, hw_virt, cpus, "
    "memory_free_mb, max_vms, busy_slots, unleased_vms, policy) VALUES (:id, :name, 'default', "
    "1, :salt, 0, 1.0, :revoked, 'linux', '0.1.0', 0, false, false, false, 0, 0, 0, 0, 0, '')"
)


def test_hosts_that_migrate_one_database_at_once_take_turns(
    tmp_path: Path, postgres_url: str
) -> None:
    """Several coordinator hosts on one PostgreSQL database, migrated by one Ansible run at
    once (molecule coordinator_ha): real processes race; exactly one upgrades, the others find
    the schema at head, and none fails (without the lock, CREATE TABLE alembic_version ran
    twice: UniqueViolation)."""
    from sqlalchemy import text  # noqa: PLC0415

    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "{postgres_url}"\n')
    cli = [sys.executable, "-m", "cvmc.coordinator.entrypoints.cli", "--config", str(config)]
    procs = [
        subprocess.Popen(
            [*cli, "migrate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [(proc.wait(120), *proc.communicate()) for proc in procs]
    assert [rc for rc, _out, _err in results] == [0] * 4, [err for _rc, _out, err in results]
    outputs = sorted(out for _rc, out, _err in results)
    assert outputs == ["migrated none -> 0005\n"] + ["unchanged\n"] * 3, outputs


def _migrate_from(
    tmp_path: Path, db_url: str, revision: str, rows: list[tuple[str, dict[str, Any]]]
) -> subprocess.CompletedProcess[str]:
    """A database at ``revision`` holding ``rows`` (SQL, parameters), then `migrate` on it."""
    from alembic import command  # noqa: PLC0415
    from sqlalchemy import text  # noqa: PLC0415

    from cvmc.coordinator.adapters.database import _alembic  # noqa: PLC0415

    engine = create_engine(db_url)
    cfg = _alembic()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        for sql, params in rows:
            conn.execute(text(sql), params)
    engine.dispose()
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "{db_url}"\n')
    return run("--config", str(config), "migrate")


def _query(db_url: str, sql: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import text  # noqa: PLC0415

    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = [tuple(row) for row in conn.execute(text(sql)).all()]
    engine.dispose()
    return rows


def test_migration_0002_keeps_earlier_revocations(tmp_path: Path, db_url: str) -> None:
    """A desktop revoked under revision 0001 (its row's revoked_at only) is on the
    revocation list after the upgrade, so that no unused token re-enrols it."""
    desks = [
        (_OLD_DESKTOP, {"id": "d-" + name, "name": name, "salt": bytes(32), "revoked": revoked})
        for name, revoked in (("desk01", 1.5), ("desk02", None))
    ]
    result = _migrate_from(tmp_path, db_url, "0001", desks)
    assert (result.returncode, result.stdout) == (0, "migrated 0001 -> 0005\n"), result.stderr
    assert _query(db_url, "SELECT desktop, revoked_at FROM revocations") == [("desk01", 1.5)]


def test_migration_0003_keeps_leases_and_gives_them_no_slot(tmp_path: Path, db_url: str) -> None:
    """Leases written under revision 0002 survive the upgrade, with no slot until their
    desktop's next heartbeat names it."""
    desk = {"id": "d-1", "name": "desk01", "salt": bytes(32), "revoked": None}
    lease = (
        "INSERT INTO leases (id, desktop_id, vm_name, cpus, memory_mb, created_at, start_by, "
        "state) VALUES ('l-1', 'd-1', 'small', 1, 512, 1.0, 2.0, 'running')"
    )
    result = _migrate_from(tmp_path, db_url, "0002", [(_OLD_DESKTOP, desk), (lease, {})])
    assert (result.returncode, result.stdout) == (0, "migrated 0002 -> 0005\n"), result.stderr
    assert _query(db_url, "SELECT id, state, slot FROM leases") == [("l-1", "running", None)]


def test_migration_0004_keeps_desktops_with_unknown_memory_and_no_usage(
    tmp_path: Path, db_url: str
) -> None:
    """Desktops enrolled under revision 0003 keep their rows: total memory 0 (unknown: never
    counted as too small) and nothing holding VT-x, until their next heartbeat reports both;
    the declines' log and the core-seconds start empty."""
    desk = {"id": "d-1", "name": "desk01", "salt": bytes(32), "revoked": None}
    result = _migrate_from(tmp_path, db_url, "0003", [(_OLD_DESKTOP, desk)])
    assert (result.returncode, result.stdout) == (0, "migrated 0003 -> 0005\n"), result.stderr
    assert _query(db_url, "SELECT name, memory_total_mb, hw_virt_held_by FROM desktops") == [
        ("desk01", 0, None)
    ]
    assert _query(db_url, "SELECT count(*) FROM decline_events") == [(0,)]
    assert _query(db_url, "SELECT count(*) FROM usage") == [(0,)]


def test_serve_refuses_an_unmigrated_database_or_a_readable_key(tmp_path: Path) -> None:
    setup = write_setup(tmp_path, f"sqlite:///{tmp_path / 'c.db'}")
    config = tmp_path / "c.toml"
    config.write_text(
        f'[database]\nurl = "{setup.database.url}"\n'
        f'[enrolment]\nkey_file = "{setup.enrolment.key_file}"\n'
        f'[grid]\nmodel_file = "{setup.grid.model_file}"\n'
    )
    result = run("--config", str(config), "serve")
    assert result.returncode == 2
    assert "database.url" in result.stderr
    assert "migrate" in result.stderr
    Path(setup.enrolment.key_file).chmod(0o644)
    result = run("--config", str(config), "serve")
    assert result.returncode == 2
    assert "enrolment.key_file" in result.stderr


def test_migration_0005_keeps_leases_for_real_demand_and_desktops_without_a_mac(
    tmp_path: Path, db_url: str
) -> None:
    """Leases written under revision 0004 survive the upgrade as leases for real demand (not
    backfill): the trim still counts them as supply. Desktops keep their rows."""
    desk = {"id": "d-1", "name": "desk01", "salt": bytes(32), "revoked": None}
    lease = (
        "INSERT INTO leases (id, desktop_id, vm_name, cpus, memory_mb, created_at, start_by, "
        "state, slot) VALUES ('l-1', 'd-1', 'small', 1, 512, 1.0, 2.0, 'running', 0)"
    )
    result = _migrate_from(tmp_path, db_url, "0004", [(_OLD_DESKTOP, desk), (lease, {})])
    assert (result.returncode, result.stdout) == (0, "migrated 0004 -> 0005\n"), result.stderr
    assert _query(db_url, "SELECT id, slot, backfill FROM leases") in (
        [("l-1", 0, False)],  # PostgreSQL
        [("l-1", 0, 0)],  # SQLite stores a boolean as 0 or 1
    )
    # Wake-on-LAN: no MAC or address until the desktop's next heartbeat, and no wakes.
    assert _query(db_url, "SELECT name, mac, address FROM desktops") == [("desk01", None, None)]
    assert _query(db_url, "SELECT count(*) FROM wakes") == [(0,)]
