"""Two coordinator instances on one PostgreSQL database; the leader is killed under load.

Real: two ``cvmc-coordinator serve`` processes on loopback, as two hosts behind nginx run
them (the second with ``--workers 2``), one PostgreSQL database, and ten desktop clients that
heartbeat to both instances and report the leases they get as running VMs. The instance whose
rounds process holds the leader lock is killed with SIGKILL, and demand rises. Checked:

- the rounds resume on the other instance within a bound computed from the settings (a
  functional deadline, not a benchmark: bench/coordinator_failover.py measures it);
- every heartbeat answered 200 is in the database (each desktop's ``last_seq`` is at least
  the highest sequence number it was answered 200 for);
- no lease is given twice: lease ids are unique and each was only ever given to one desktop;
  no desktop holds more leases than its slots (2); the leases of the VM type never exceed
  its demand (sampled all along, and at the end).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from coordinator.coord_support import (
    BOINC,
    GRID,
    HB,
    enrol_body,
    heartbeat,
    job_ads,
    signed_headers,
    write_setup,
)
from sqlalchemy import create_engine, text

from cvmc.coordinator.adapters.pg_leader import LEADER_KEY

ALLOCATE_S = 0.5
RETRY_S = 0.5
POLL_S = 1
SLOTS = 2  # GRID's max_vms_per_desktop, and each client's max_vms
#: After the leader dies its lock is free at once (its socket closes), a follower takes it at
#: its next try, and a round with the new demand follows: the retry, a round, a demand poll;
#: the rest is for a loaded machine (spawned processes, a shared CPU).
TAKEOVER_BOUND_S = RETRY_S + ALLOCATE_S + POLL_S + 20.0


@pytest.fixture
def pg(postgres_url: str) -> str:
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return postgres_url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Database:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")

    def rows(self, query: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(query), params))

    def leader_pid(self) -> int | None:
        """The pid of the rounds process whose session holds the leader lock."""
        rows = self.rows(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.objid = :key AND l.granted",
            key=LEADER_KEY,
        )
        return int(rows[0][0].rsplit(":", 1)[1]) if rows else None

    def rounds_sessions(self) -> int:
        return len(
            self.rows(
                "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'cvmc-rounds:%' "
                "AND datname = current_database()"
            )
        )

    def leases(self) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self.rows("SELECT id, desktop_id, vm_name FROM leases")]

    def last_seqs(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self.rows("SELECT id, last_seq FROM desktops")}


@contextlib.contextmanager
def instance(
    tmp_path: Path, name: str, toml: str, workers: int
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``cvmc-coordinator serve`` with this config; yields (process, base URL)."""
    port = free_port()
    config = tmp_path / f"{name}.toml"
    config.write_text(toml.replace("@PORT@", str(port)))
    cli = [sys.executable, "-m", "cvmc.coordinator.entrypoints.cli", "--config", str(config)]
    with (tmp_path / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            [*cli, "serve", "--workers", str(workers)], stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url + "/healthz", timeout=2).status_code == 200
            return False

        wait_for(f"{name} to answer", healthy)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def descends_from(pid: int, ancestor: int) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return any(p.pid == ancestor for p in psutil.Process(pid).parents())
    return False


class Desktop(threading.Thread):
    """A desktop that heartbeats to the live instances in turn and runs what it is leased."""

    def __init__(self, name: str, enrol_url: str, urls: list[str], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        reply = httpx.post(
            enrol_url + "/api/v1/enrol", content=enrol_body(name, issued_at=time.time())
        )
        assert reply.status_code == 201, reply.text
        self.id = reply.json()["desktop_id"]
        self.credential = reply.json()["credential"]
        self.urls = urls
        self.stop = stop
        self.seq = 0
        self.acked = 0  # the highest sequence number answered 200
        self.answered = 0
        self.failed = 0
        self.leases: list[dict[str, Any]] = []
        self.seen: set[str] = set()  # every lease id this desktop was ever given
        self.too_many: list[int] = []  # more leases than slots, if ever

    def run(self) -> None:
        clients = [httpx.Client(base_url=url, timeout=10) for url in self.urls]
        turn = 0
        try:
            while not self.stop.is_set():
                client = clients[turn % len(clients)]
                turn += 1
                slots = [
                    {
                        "slot": i,
                        "state": "running",
                        "vm_name": lease["vm_name"],
                        "lease_id": lease["lease_id"],
                    }
                    for i, lease in enumerate(self.leases[:SLOTS])
                ]
                raw = json.dumps(heartbeat(slots=slots or None)).encode()
                self.seq += 1
                headers = signed_headers("POST", HB, self.id, self.credential, self.seq, raw)
                try:
                    answer = client.post(HB, content=raw, headers=headers)
                except httpx.HTTPError:
                    self.failed += 1  # the killed instance: try the next one
                    time.sleep(0.02)
                    continue
                if answer.status_code != 200:
                    self.failed += 1
                    continue
                self.answered += 1
                self.acked = max(self.acked, self.seq)
                self.leases = list(answer.json()["leases"])
                self.seen.update(lease["lease_id"] for lease in self.leases)
                if len(self.leases) > SLOTS:
                    self.too_many.append(len(self.leases))
                time.sleep(0.02)
        finally:
            for client in clients:
                client.close()


def test_the_rounds_resume_on_the_other_instance_when_the_leader_is_killed(
    tmp_path: Path, pg: str
) -> None:
    setup = write_setup(tmp_path, pg)
    toml = (
        '[server]\nlisten_port = @PORT@\npublic_url = "https://coordinator"\n'
        "desktop_rate_per_s = 10000.0\ndesktop_burst = 10000\n"
        f'[database]\nurl = "{pg}"\n'
        f'[enrolment]\nkey_file = "{setup.enrolment.key_file}"\n'
        f"[leases]\nallocate_s = {ALLOCATE_S}\nleader_retry_s = {RETRY_S}\n"
        f'[images]\ndir = "{setup.images.dir}"\n'
        f'[demand]\nsource = "job_ads_file"\njob_ads_file = "{setup.demand.job_ads_file}"\n'
        f"poll_s = {POLL_S}\n"
        f'[grid]\nmodel_file = "{setup.grid.model_file}"\n'
    )
    jobs = Path(setup.demand.job_ads_file)
    demand = {"now": 0}

    def set_demand(count: int) -> None:
        demand["now"] = max(demand["now"], count)  # demand only rises in this test
        jobs.write_text(job_ads(*[(BOINC, 1)] * count))

    (tmp_path / "a.toml").write_text(toml.replace("@PORT@", "1"))
    cli = [sys.executable, "-m", "cvmc.coordinator.entrypoints.cli", "--config"]
    subprocess.run([*cli, str(tmp_path / "a.toml"), "migrate"], check=True, timeout=120)
    db = Database(pg)
    stop = threading.Event()
    violations: list[str] = []
    given: dict[str, str] = {}  # lease id -> desktop, as the database showed it

    def sample() -> None:
        while not stop.is_set():
            leases = db.leases()
            per_desktop: dict[str, int] = {}
            for lease_id, desktop, _vm in leases:
                per_desktop[desktop] = per_desktop.get(desktop, 0) + 1
                if given.setdefault(lease_id, desktop) != desktop:
                    violations.append(f"lease {lease_id} given to two desktops")
            if any(count > SLOTS for count in per_desktop.values()):
                violations.append(f"a desktop holds more than {SLOTS} leases: {per_desktop}")
            if len(leases) > demand["now"]:
                violations.append(f"{len(leases)} leases for a demand of {demand['now']}")
            time.sleep(0.05)

    with instance(tmp_path, "a", toml, workers=1) as (leader, url_a):
        wait_for("instance a's rounds to lead", lambda: db.leader_pid() is not None)
        assert descends_from(db.leader_pid() or 0, leader.pid)
        with instance(tmp_path, "b", toml, workers=2) as (follower, url_b):
            # Three rounds processes, one each per worker: a's leads, b's two follow.
            wait_for("b's rounds processes", lambda: db.rounds_sessions() == 3)
            desktops = [
                Desktop(str(d["name"]), url_a, [url_a, url_b], stop) for d in GRID["desktops"]
            ]
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            for desktop in desktops:
                desktop.start()
            set_demand(6)
            wait_for("a's first leases", lambda: len(db.leases()) == 6)
            assert descends_from(db.leader_pid() or 0, leader.pid)

            leader.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            leader.wait(30)
            set_demand(14)
            wait_for(
                "rounds on instance b (a new lease)",
                lambda: len(db.leases()) > 6,
                timeout=TAKEOVER_BOUND_S,
            )
            takeover = time.monotonic() - killed
            new_leader = db.leader_pid()
            assert new_leader is not None
            assert descends_from(new_leader, follower.pid)
            wait_for("all of the new demand", lambda: len(db.leases()) == 14)
            time.sleep(1.0)  # more load on b alone
            stop.set()
            for desktop in desktops:
                desktop.join(30)
            sampler.join(10)
            # b's metrics: the worker that answers says whether its process leads.
            metrics = httpx.get(url_b + "/metrics").text
            assert "cvmc_rounds_leader" in metrics

    print(f"takeover after SIGKILL of the leader: {takeover:.2f} s (bound {TAKEOVER_BOUND_S} s)")
    assert violations == []
    last_seqs = db.last_seqs()
    for desktop in desktops:
        assert desktop.answered > 10, f"{desktop.name}: {desktop.answered} answers"
        assert last_seqs[desktop.id] >= desktop.acked, f"{desktop.name}: a 200 is not stored"
        assert desktop.too_many == []
    owners: dict[str, str] = {}
    for desktop in desktops:
        for lease_id in desktop.seen:
            assert owners.setdefault(lease_id, desktop.id) == desktop.id, lease_id
    final = db.leases()
    assert len({lease_id for lease_id, _d, _v in final}) == len(final) == 14
    db.engine.dispose()


def test_serve_with_several_workers_on_sqlite_is_refused(tmp_path: Path) -> None:
    setup = write_setup(tmp_path, f"sqlite:///{tmp_path / 'c.db'}")
    config = tmp_path / "c.toml"
    config.write_text(
        f'[database]\nurl = "{setup.database.url}"\n'
        f'[enrolment]\nkey_file = "{setup.enrolment.key_file}"\n'
        f'[grid]\nmodel_file = "{setup.grid.model_file}"\n'
    )
    cli = [sys.executable, "-m", "cvmc.coordinator.entrypoints.cli", "--config", str(config)]
    done = subprocess.run(
        [*cli, "serve", "--workers", "2"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stderr.startswith("cvmc-coordinator: --workers: 2 processes need a PostgreSQL")


def test_serve_starts_a_dead_worker_again_and_stops_all_on_sigterm(tmp_path: Path, pg: str) -> None:
    setup = write_setup(tmp_path, pg)
    toml = (
        '[server]\nlisten_port = @PORT@\npublic_url = "https://coordinator"\n'
        f'[database]\nurl = "{pg}"\n'
        f'[enrolment]\nkey_file = "{setup.enrolment.key_file}"\n'
        f'[images]\ndir = "{setup.images.dir}"\n'
        f'[demand]\nsource = "job_ads_file"\njob_ads_file = "{setup.demand.job_ads_file}"\n'
        f'[grid]\nmodel_file = "{setup.grid.model_file}"\n'
    )
    (tmp_path / "m.toml").write_text(toml.replace("@PORT@", "1"))
    cli = [sys.executable, "-m", "cvmc.coordinator.entrypoints.cli", "--config"]
    subprocess.run([*cli, str(tmp_path / "m.toml"), "migrate"], check=True, timeout=120)

    def workers(serve: psutil.Process) -> list[int]:
        found = []
        for child in serve.children():
            with contextlib.suppress(psutil.Error):  # a killed worker not yet reaped
                if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(
                    child.cmdline()
                ):
                    found.append(child.pid)
        return found

    with instance(tmp_path, "w", toml, workers=2) as (proc, url):
        serve = psutil.Process(proc.pid)
        wait_for("two workers", lambda: len(workers(serve)) == 2)
        first = workers(serve)
        family = [p for pid in first for p in psutil.Process(pid).children(recursive=True)]
        time.sleep(11)  # past the start-up window: a worker that dies then is started again
        psutil.Process(first[0]).kill()
        wait_for(
            "a new worker",
            lambda: len(workers(serve)) == 2 and first[0] not in workers(serve),
        )
        wait_for("answers", lambda: httpx.get(url + "/healthz", timeout=2).status_code == 200)
        everyone = [serve, *(psutil.Process(pid) for pid in workers(serve))]
        everyone += [p for w in everyone[1:] for p in w.children(recursive=True)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        _gone, alive = psutil.wait_procs([*everyone, *family], timeout=15)
        assert alive == [], [p.pid for p in alive]


#: A stand-in for systemd as PID 1: a child subreaper (prctl PR_SET_CHILD_SUBREAPER, 36) that
#: ignores SIGTERM, runs the command, and reaps whatever ends. A process it reaps other than
#: its own child outlived that child (it was orphaned to the reaper, as to systemd). Prints the
#: reaped pids as JSON: {"main": [pid, status], "orphans": [pid, ...]}.
REAPER = """
import ctypes, json, os, signal, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
main = subprocess.Popen(sys.argv[1:], stdout=sys.stderr, stderr=sys.stderr)
orphans, status, deadline = [], None, None
while deadline is None or time.monotonic() < deadline:
    try:
        pid, code = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        time.sleep(0.01)
    elif pid == main.pid:
        status, deadline = code, time.monotonic() + 5
    else:
        orphans.append(pid)
print(json.dumps({"main": [main.pid, status], "orphans": orphans}))
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_to_every_process_leaves_serve_the_last_to_end(
    tmp_path: Path, pg: str, workers: int
) -> None:
    """``systemctl stop`` sends SIGTERM to every process of the unit at once and waits for the
    last. No child may outlive ``serve`` (where systemd cannot watch the control group empty,
    cgroup v1 in a container, it waited 90 s for multiprocessing's resource tracker, which
    ignores SIGTERM and ended only after ``serve``), and none may be started again during the
    shutdown (the rounds child, ended by that SIGTERM, was)."""
    setup = write_setup(tmp_path, pg)
    port = free_port()
    config = tmp_path / "s.toml"
    config.write_text(
        f'[server]\nlisten_port = {port}\npublic_url = "https://coordinator"\n'
        f'[database]\nurl = "{pg}"\n'
        f'[enrolment]\nkey_file = "{setup.enrolment.key_file}"\n'
        f'[images]\ndir = "{setup.images.dir}"\n'
        f'[demand]\nsource = "job_ads_file"\njob_ads_file = "{setup.demand.job_ads_file}"\n'
        f'[grid]\nmodel_file = "{setup.grid.model_file}"\n'
    )
    cli = [sys.executable, "-m", "cvmc.coordinator.entrypoints.cli", "--config", str(config)]
    subprocess.run([*cli, "migrate"], check=True, timeout=120, capture_output=True)
    log = tmp_path / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", REAPER, *cli, "serve", "--workers", str(workers)],
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,  # its own process group: killpg reaches every process
        )
    try:
        db = Database(pg)
        wait_for("the rounds processes", lambda: db.rounds_sessions() == workers)
        wait_for(
            "answers",
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
        )
        db.engine.dispose()
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    reaped = json.loads(out)
    assert reaped["main"][1] is not None, log.read_text()[-2000:]
    assert reaped["orphans"] == [], f"processes outlived serve: {reaped}"
    assert "starting a new one" not in log.read_text(), log.read_text()[-2000:]
