"""The composition root: the one place that builds the coordinator from its configuration."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import socket
import stat
import sys
import threading
import time
from typing import Any

from cvmc.coordinator.adapters.catalogue_dir import DirectoryCatalogue
from cvmc.coordinator.adapters.condor_demand import JobAdsFileDemand, ScheddDemand
from cvmc.coordinator.adapters.database import make_engine, schema_is_current
from cvmc.coordinator.adapters.pg_leader import PgLeaderLock, idle_timeout_s, lock_engine
from cvmc.coordinator.adapters.sql_store import SqlStore
from cvmc.coordinator.adapters.vm_tokens import SocketVmTokens
from cvmc.coordinator.domain.config import Config, ConfigError
from cvmc.coordinator.domain.grid import GridFile, parse_grid_text
from cvmc.coordinator.ports import DemandSource
from cvmc.coordinator.service.coordinator import Coordinator
from cvmc.gridmodel.enrolment import MIN_KEY_LENGTH

__all__ = ["build", "read_enrol_key", "read_grid", "serve"]

log = logging.getLogger("cvmc.coordinator")


def read_enrol_key(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            key = fh.read().strip()
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError("enrolment.key_file", f"cannot read {path}: {exc.strerror}") from None
    if mode & stat.S_IROTH:
        raise ConfigError("enrolment.key_file", f"{path} is readable by everyone; chmod o-r")
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            "enrolment.key_file", f"{path} holds fewer than {MIN_KEY_LENGTH} characters"
        )
    return key


def read_grid(path: str) -> GridFile:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError("grid.model_file", f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_grid_text(text, name=path)
    except ValueError as exc:
        raise ConfigError("grid.model_file", str(exc)) from None


def demand_source(config: Config, grid: GridFile) -> DemandSource:
    demand = config.demand
    if demand.source == "job_ads_file":
        return JobAdsFileDemand(
            demand.job_ads_file,
            grid.vm_types,
            match_unnamed=demand.match_unnamed_jobs,
            count_running=demand.count_running_jobs,
            condor_version=demand.vm_condor_version,
        )
    return ScheddDemand(
        demand.collector,
        demand.schedds,
        grid.vm_types,
        match_unnamed=demand.match_unnamed_jobs,
        count_running=demand.count_running_jobs,
        condor_version=demand.vm_condor_version,
    )


def build(config: Config) -> Coordinator:
    """The coordinator, wired to its database, demand source and catalogue."""
    grid = read_grid(config.grid.model_file)
    key = read_enrol_key(config.enrolment.key_file)
    engine = make_engine(config.database)
    if not schema_is_current(engine):
        raise ConfigError(
            "database.url", "the schema is not at the current revision; run `migrate` first"
        )
    sqlite = engine.url.get_backend_name() == "sqlite"
    lazy = None if sqlite else make_engine(config.database, lazy_commit=True)
    # PostgreSQL: one process of all that share the database runs the rounds (the leader lock).
    leader = (
        None
        if sqlite
        else PgLeaderLock(
            lock_engine(
                config.database,
                idle_timeout_s(config.leases.allocate_s, config.leases.leader_retry_s),
            )
        )
    )
    return Coordinator(
        config=config,
        grid=grid,
        store=SqlStore(engine, lazy, leader),
        demand_source=demand_source(config, grid),
        catalogue=DirectoryCatalogue(config.images.dir, config.images.base_url),
        enrol_key=key,
        vm_tokens=(
            SocketVmTokens(config.vm_tokens.socket, config.vm_tokens.timeout_s)
            if config.vm_tokens.socket
            else None
        ),
    )


def _app(config: Config) -> Any:  # noqa: ANN401 - a Starlette app (imported lazily)
    from cvmc.coordinator.adapters.rounds import ProcessRounds  # noqa: PLC0415
    from cvmc.coordinator.adapters.web import create_app  # noqa: PLC0415

    coordinator = build(config)
    log.info("derived the credentials of %d enrolled desktops", coordinator.load_credentials())
    log.info(
        "serving grid %r as %s on %s:%d (%d desktops, %d VM types)",
        coordinator.grid.name,
        config.server.public_url,
        config.server.listen_host,
        config.server.listen_port,
        len(coordinator.grid.desktops),
        len(coordinator.grid.vm_types),
    )
    return create_app(coordinator, rounds=ProcessRounds(functools.partial(build, config)))


def _uvicorn_config(config: Config, app: Any) -> Any:  # noqa: ANN401 - uvicorn's types
    import uvicorn  # noqa: PLC0415

    return uvicorn.Config(
        app,
        host=config.server.listen_host,
        port=config.server.listen_port,
        access_log=config.server.access_log,
        log_config=None,
        proxy_headers=True,
        server_header=False,
    )


def serve(config: Config, workers: int = 1) -> int:
    """Serve in this process, or with ``workers`` > 1 (PostgreSQL only) in that many worker
    processes that share the port (``SO_REUSEPORT``: the kernel spreads connections over
    them), each with its own rounds driver; the database's leader lock lets one of them, on
    this host or another, run the allocation rounds (``adapters.pg_leader``)."""
    if workers > 1 and config.database.url.startswith("sqlite"):
        raise ConfigError(
            "--workers",
            f"{workers} processes need a PostgreSQL database.url: a SQLite database is "
            "served by one process",
        )
    if workers == 1:
        import uvicorn  # noqa: PLC0415

        uvicorn.Server(_uvicorn_config(config, _app(config))).run()
        return 0
    build(config).store.close()  # a bad file or schema stops here, before any worker starts
    from cvmc.coordinator.adapters.rounds import stop_resource_tracker  # noqa: PLC0415

    try:
        return _supervise(config, workers)
    finally:
        stop_resource_tracker()  # the workers' too: they share this process's tracker


#: A worker that ends within this many seconds of its start failed to start: ``serve`` stops.
_START_S = 10.0


def _worker(config: Config, number: int, parent: int) -> None:
    """One worker process of ``serve --workers``: the app on a socket of its own, bound with
    ``SO_REUSEPORT`` to the shared address."""
    import uvicorn  # noqa: PLC0415

    from cvmc.coordinator.adapters.rounds import die_with_parent  # noqa: PLC0415

    die_with_parent(parent)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(levelname)s %(name)s[worker {number}]: %(message)s",
    )
    host, port = config.server.listen_host, config.server.listen_port
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    uvicorn.Server(_uvicorn_config(config, _app(config))).run(sockets=[sock])


def _supervise(config: Config, workers: int) -> int:
    """Start the workers, start again one that dies, stop them all on SIGTERM or SIGINT
    (each stops as a single ``serve`` does). A worker that dies right after its start (a port
    in use, a database that refuses) stops ``serve`` with exit 1, for systemd to retry."""
    context = multiprocessing.get_context("spawn")  # never fork a process with threads
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    procs: list[Any] = [None] * workers
    started = [0.0] * workers

    def start(number: int) -> None:
        proc = context.Process(
            target=_worker,
            args=(config, number, os.getpid()),
            name=f"cvmc-coordinator-worker-{number}",
        )
        proc.start()
        procs[number], started[number] = proc, time.monotonic()

    log.info("serve: starting %d worker processes on one port (SO_REUSEPORT)", workers)
    code = 0
    for number in range(workers):
        start(number)
    while not stop.wait(0.5):
        for number, proc in enumerate(procs):
            if proc.is_alive():
                continue
            if time.monotonic() - started[number] < _START_S:
                log.error("worker %d failed at its start (exit %s)", number, proc.exitcode)
                stop.set()
                code = 1
                break
            log.error(
                "worker %d (pid %d) ended (exit %s); starting it again",
                number,
                proc.pid,
                proc.exitcode,
            )
            start(number)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()  # SIGTERM: uvicorn's graceful shutdown
    for proc in procs:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    return code
