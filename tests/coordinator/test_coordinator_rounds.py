"""Allocation rounds in their own process (``ProcessRounds``), as ``serve`` runs them.

Real: uvicorn on loopback, a spawned child process that builds its own coordinator through
the composition root and writes leases to the same database (SQLite and PostgreSQL), and the
web process's metrics fed by the child's reports. A killed child is replaced.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from coordinator.coord_support import (
    BOINC,
    Clock,
    enrol_body,
    heartbeat,
    make_coordinator,
    scrape,
    serve_in_thread,
    set_demand,
    signed_headers,
    write_setup,
)

from cvmc.coordinator.adapters.rounds import ProcessRounds
from cvmc.coordinator.adapters.web import create_app
from cvmc.coordinator.compose import build

HB = "/api/v1/heartbeat"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def metric(client: httpx.Client, name: str) -> float:
    samples = scrape(client.get("/metrics").text)
    assert name in samples, f"{name} is not in /metrics"
    return samples[name]


def rounds_children() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children()
        if any("multiprocessing" in part for part in child.cmdline())
        and not any("resource_tracker" in part for part in child.cmdline())
    ]


def test_rounds_run_in_a_child_process_that_is_replaced_when_killed(
    tmp_path: Path, db_url: str
) -> None:
    config = write_setup(tmp_path, db_url, leases={"allocate_s": 0.2})
    coordinator = make_coordinator(config, Clock())
    coordinator.clock = time.time  # the child keeps real time too
    reply = coordinator.enrol(enrol_body("desk00", issued_at=time.time()))
    desk, credential = reply["desktop_id"], reply["credential"]
    seq = 0

    def beat(client: httpx.Client) -> list[dict[str, object]]:
        nonlocal seq
        seq += 1
        raw = json.dumps(heartbeat()).encode()
        answer = client.post(
            HB, content=raw, headers=signed_headers("POST", HB, desk, credential, seq, raw)
        )
        assert answer.status_code == 200, answer.text
        return list(answer.json()["leases"])

    rounds = ProcessRounds(functools.partial(build, config))
    try:
        with (
            serve_in_thread(create_app(coordinator, rounds=rounds)) as port,
            httpx.Client(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            assert beat(client) == []
            set_demand(coordinator, (BOINC, 1))  # the child reads the same job ads file
            # The child allocates and writes the lease; the web process serves it.
            wait_for("a lease from the rounds process", lambda: beat(client) != [])
            # The lease is committed before the child's round returns its counters to the
            # web process, so a heartbeat can see the lease a moment before the metrics do.
            wait_for(
                "the round's counters in the web process",
                lambda: metric(client, "cvmc_leases_granted_total") >= 1,
            )
            assert metric(client, "cvmc_leases_granted_total") == 1
            assert metric(client, f'cvmc_demand_jobs{{vm_name="{BOINC}"}}') == 1
            (child,) = rounds_children()
            assert child.pid != psutil.Process().pid
            before = metric(client, "cvmc_allocation_rounds_total")
            assert before >= 1

            child.kill()
            child.wait(10)
            # A new child takes over; its counters start again, as a restarted exporter's do.
            wait_for(
                "a new rounds process",
                lambda: [p.pid for p in rounds_children()] not in ([], [child.pid]),
            )
            wait_for("rounds again", lambda: metric(client, "cvmc_allocation_rounds_total") >= 1)
            assert len(beat(client)) == 1  # the lease survived the change of process
        assert rounds_children() == []  # the app's end stopped the child
    finally:
        rounds.close()
        coordinator.store.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_sigkilled_serve_takes_its_rounds_child_with_it(tmp_path: Path) -> None:
    """``serve`` as systemd runs it, killed with SIGKILL (no clean-up runs): its rounds child
    must not live on as an orphan writing leases."""
    setup = write_setup(tmp_path, f"sqlite:///{tmp_path / 'c.db'}")
    port = _free_port()
    config = tmp_path / "coordinator.toml"
    config.write_text(
        f'[server]\nlisten_port = {port}\npublic_url = "https://lab-coordinator"\n'
        f'[database]\nurl = "{setup.database.url}"\n'
        f'[enrolment]\nkey_file = "{setup.enrolment.key_file}"\n'
        f"[leases]\nallocate_s = 0.2\n"
        f'[images]\ndir = "{setup.images.dir}"\n'
        f'[demand]\nsource = "job_ads_file"\njob_ads_file = "{setup.demand.job_ads_file}"\n'
        f'[grid]\nmodel_file = "{setup.grid.model_file}"\n'
    )
    cli = [sys.executable, "-m", "cvmc.coordinator.entrypoints.cli", "--config", str(config)]
    subprocess.run([*cli, "migrate"], check=True, capture_output=True, timeout=120)
    serve = subprocess.Popen([*cli, "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = psutil.Process(serve.pid)
    children: list[psutil.Process] = []
    try:
        wait_for(
            "the rounds child of serve",
            lambda: any(
                "multiprocessing" in " ".join(p.cmdline())
                and "resource_tracker" not in " ".join(p.cmdline())
                for p in server.children()
            ),
        )
        children = [p for p in server.children() if "resource_tracker" not in " ".join(p.cmdline())]
        assert children
        serve.send_signal(signal.SIGKILL)
        serve.wait(30)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"orphaned after SIGKILL of serve: {[p.pid for p in alive]}"
        assert len(gone) == len(children)
    finally:
        for child in children:  # only if the test failed: never leave an orphan behind
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        if serve.poll() is None:
            serve.kill()
            serve.wait(30)
