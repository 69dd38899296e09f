"""The composition root: the one place that builds the coordinator from its configuration."""

from __future__ import annotations

import functools
import logging
import os
import stat

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


def serve(config: Config) -> int:
    import uvicorn  # noqa: PLC0415

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
    uvicorn.run(
        create_app(coordinator, rounds=ProcessRounds(functools.partial(build, config))),
        host=config.server.listen_host,
        port=config.server.listen_port,
        access_log=config.server.access_log,
        log_config=None,
        proxy_headers=True,
        server_header=False,
    )
    return 0
