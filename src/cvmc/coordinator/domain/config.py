"""The coordinator's configuration file (TOML): parsed and checked, key by key.

Every error names the key (``leases.ttl_s: ...``) so ``cvmc-coordinator check-config`` can print
one line that says what to fix. Pure: the caller reads the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from cvmc.gridmodel import limits
from cvmc.gridmodel.classad import DEFAULT_VM_CONDOR_VERSION, validate_condor_version

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "DemandConfig",
    "EnrolmentConfig",
    "GridConfig",
    "ImagesConfig",
    "LeasesConfig",
    "ServerConfig",
    "VmTokensConfig",
    "parse_config",
    "parse_config_text",
]

DEFAULT_CONFIG_PATH = "/etc/cvmc-coordinator/coordinator.toml"
DEMAND_SOURCES = ("htcondor", "job_ads_file")


class ConfigError(ValueError):
    """A bad configuration value; ``str()`` starts with the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class ServerConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    public_url: str = "https://localhost"
    max_body_bytes: int = 65536
    access_log: bool = False
    #: Requests per second a desktop may make on average (heartbeats, catalogue), and its burst.
    desktop_rate_per_s: float = 1.0
    desktop_burst: int = 30
    #: Enrolments and failed authentications per second from one client address, and burst.
    address_rate_per_s: float = 0.5
    address_burst: int = 30
    #: Most desktops and addresses the rate limiter remembers (least recently seen dropped).
    rate_limit_keys: int = 100_000


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:////var/lib/cvmc-coordinator/coordinator.db"
    password_file: str = ""


@dataclass(frozen=True)
class EnrolmentConfig:
    key_file: str = "/etc/cvmc-coordinator/enrol.key"


@dataclass(frozen=True)
class LeasesConfig:
    ttl_s: int = 300
    heartbeat_s: int = 60
    offline_after_s: int = 180
    allocate_s: float = 5.0
    decline_backoff_s: int = 600
    history_s: int = 86400
    #: PostgreSQL: how often a process that does not run the allocation rounds tries to take
    #: them over (the leader lock, docs/coordinator.md "Several processes and hosts").
    leader_retry_s: float = 2.0


@dataclass(frozen=True)
class ImagesConfig:
    dir: str = "/srv/cvmc-images"
    base_url: str = "/images/"
    #: grid_images_allow_insecure_http: image URLs may be plain http:// (a lab only).
    allow_insecure_http: bool = False


@dataclass(frozen=True)
class DemandConfig:
    source: str = "htcondor"
    job_ads_file: str = ""
    collector: str = ""
    schedds: tuple[str, ...] = ()
    match_unnamed_jobs: bool = False
    count_running_jobs: bool = True
    poll_s: int = 30
    #: The HTCondor version the research VMs run: the CondorVersion of each VM type's machine ad.
    vm_condor_version: str = DEFAULT_VM_CONDOR_VERSION


@dataclass(frozen=True)
class VmTokensConfig:
    #: The unix socket of the minting service (cvmc-vm-token.socket); "" mints none, and
    #: desktops use their own static token (docs/htcondor.md, "Research VMs' tokens").
    socket: str = ""
    timeout_s: float = 5.0


@dataclass(frozen=True)
class GridConfig:
    model_file: str = "/etc/cvmc-coordinator/grid.json"


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    enrolment: EnrolmentConfig = field(default_factory=EnrolmentConfig)
    leases: LeasesConfig = field(default_factory=LeasesConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    demand: DemandConfig = field(default_factory=DemandConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    vm_tokens: VmTokensConfig = field(default_factory=VmTokensConfig)


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "database": DatabaseConfig,
    "enrolment": EnrolmentConfig,
    "leases": LeasesConfig,
    "images": ImagesConfig,
    "demand": DemandConfig,
    "grid": GridConfig,
    "vm_tokens": VmTokensConfig,
}


def _int(key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(key, f"{value!r} is not an integer from {low} to {high}")
    return value


def _number(key: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(key, f"{value!r} is not a number from {low} to {high}")
    return float(value)


def _str(key: str, value: object, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise ConfigError(key, f"{value!r} is not a {'' if empty else 'non-empty '}string")
    if any(ch in value for ch in "\n\r\x00"):
        raise ConfigError(key, "must be one line")
    return value


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not true or false")
    return value


def _condor_version(key: str, value: object) -> str:
    try:
        return validate_condor_version(value, name=key)
    except ValueError as exc:
        raise ConfigError(key, str(exc).removeprefix(f"{key}: ")) from None


def _check_section(name: str, raw: object) -> Mapping[str, object]:
    if not isinstance(raw, Mapping):
        raise ConfigError(name, "must be a table")
    known = set(_SECTIONS[name].__dataclass_fields__)
    for key in raw:
        if key not in known:
            raise ConfigError(f"{name}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
    return raw


def parse_config(raw: Mapping[str, object]) -> Config:
    """A checked ``Config`` from parsed TOML; ``ConfigError`` names the first bad key."""
    for name in raw:
        if name not in _SECTIONS:
            raise ConfigError(name, f"unknown section (known: {', '.join(sorted(_SECTIONS))})")
    sec = {name: _check_section(name, raw.get(name, {})) for name in _SECTIONS}
    d_server, d_db, d_enrol = ServerConfig(), DatabaseConfig(), EnrolmentConfig()
    d_leases, d_images, d_demand, d_grid = (
        LeasesConfig(),
        ImagesConfig(),
        DemandConfig(),
        GridConfig(),
    )

    s = sec["server"]
    server = ServerConfig(
        listen_host=_str(
            "server.listen_host", s.get("listen_host", d_server.listen_host), empty=False
        ),
        listen_port=_int(
            "server.listen_port", s.get("listen_port", d_server.listen_port), 1, 65535
        ),
        public_url=_str("server.public_url", s.get("public_url", d_server.public_url), empty=False),
        max_body_bytes=_int(
            "server.max_body_bytes", s.get("max_body_bytes", d_server.max_body_bytes), 1024, 1 << 24
        ),
        access_log=_bool("server.access_log", s.get("access_log", d_server.access_log)),
        desktop_rate_per_s=_number(
            "server.desktop_rate_per_s",
            s.get("desktop_rate_per_s", d_server.desktop_rate_per_s),
            0.001,
            10000,
        ),
        desktop_burst=_int(
            "server.desktop_burst", s.get("desktop_burst", d_server.desktop_burst), 1, 100_000
        ),
        address_rate_per_s=_number(
            "server.address_rate_per_s",
            s.get("address_rate_per_s", d_server.address_rate_per_s),
            0.001,
            10000,
        ),
        address_burst=_int(
            "server.address_burst", s.get("address_burst", d_server.address_burst), 1, 100_000
        ),
        rate_limit_keys=_int(
            "server.rate_limit_keys",
            s.get("rate_limit_keys", d_server.rate_limit_keys),
            16,
            10_000_000,
        ),
    )
    if not server.public_url.startswith(("https://", "http://")):
        raise ConfigError("server.public_url", f"{server.public_url!r} is not an http(s) URL")

    d = sec["database"]
    url = _str("database.url", d.get("url", d_db.url), empty=False)
    if not url.startswith(("sqlite://", "postgresql+psycopg://", "postgresql://")):
        raise ConfigError(
            "database.url",
            f"{url.split(':', 1)[0]!r} is not supported; use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB",
        )
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    database = DatabaseConfig(
        url=url,
        password_file=_str("database.password_file", d.get("password_file", d_db.password_file)),
    )
    if database.password_file and url.startswith("sqlite"):
        raise ConfigError("database.password_file", "is only for a PostgreSQL database.url")

    e = sec["enrolment"]
    enrolment = EnrolmentConfig(
        key_file=_str("enrolment.key_file", e.get("key_file", d_enrol.key_file), empty=False)
    )

    lv = sec["leases"]
    leases = LeasesConfig(
        ttl_s=_int("leases.ttl_s", lv.get("ttl_s", d_leases.ttl_s), 10, 86400),
        heartbeat_s=_int(
            "leases.heartbeat_s", lv.get("heartbeat_s", d_leases.heartbeat_s), 5, 3600
        ),
        offline_after_s=_int(
            "leases.offline_after_s", lv.get("offline_after_s", d_leases.offline_after_s), 10, 86400
        ),
        allocate_s=_number(
            "leases.allocate_s", lv.get("allocate_s", d_leases.allocate_s), 0.1, 600
        ),
        decline_backoff_s=_int(
            "leases.decline_backoff_s",
            lv.get("decline_backoff_s", d_leases.decline_backoff_s),
            0,
            86400,
        ),
        history_s=_int("leases.history_s", lv.get("history_s", d_leases.history_s), 60, 31 * 86400),
        leader_retry_s=_number(
            "leases.leader_retry_s", lv.get("leader_retry_s", d_leases.leader_retry_s), 0.1, 600
        ),
    )
    if leases.offline_after_s <= leases.heartbeat_s:
        raise ConfigError(
            "leases.offline_after_s",
            f"{leases.offline_after_s} must be greater than leases.heartbeat_s "
            f"({leases.heartbeat_s}), or every desktop looks offline between two heartbeats",
        )

    i = sec["images"]
    images = ImagesConfig(
        dir=_str("images.dir", i.get("dir", d_images.dir), empty=False),
        base_url=_str("images.base_url", i.get("base_url", d_images.base_url), empty=False),
        allow_insecure_http=_bool(
            "images.allow_insecure_http",
            i.get("allow_insecure_http", d_images.allow_insecure_http),
        ),
    )
    if not images.base_url.endswith("/"):
        raise ConfigError("images.base_url", f"{images.base_url!r} must end with '/'")
    try:
        # Agents resolve it against the coordinator's URL and fetch only what this rule allows.
        limits.image_url(
            urljoin(server.public_url, images.base_url),
            allow_insecure_http=images.allow_insecure_http,
            name="images.base_url",
        )
    except ValueError as exc:
        raise ConfigError("images.base_url", str(exc).removeprefix("images.base_url: ")) from None

    m = sec["demand"]
    source = _str("demand.source", m.get("source", d_demand.source))
    if source not in DEMAND_SOURCES:
        raise ConfigError("demand.source", f"{source!r} is not one of {', '.join(DEMAND_SOURCES)}")
    schedds_raw = m.get("schedds", list(d_demand.schedds))
    if not isinstance(schedds_raw, list):
        raise ConfigError("demand.schedds", f"{schedds_raw!r} is not a list of schedd names")
    schedds = tuple(
        _str(f"demand.schedds[{n}]", item, empty=False) for n, item in enumerate(schedds_raw)
    )
    demand = DemandConfig(
        source=source,
        job_ads_file=_str("demand.job_ads_file", m.get("job_ads_file", d_demand.job_ads_file)),
        collector=_str("demand.collector", m.get("collector", d_demand.collector)),
        schedds=schedds,
        match_unnamed_jobs=_bool(
            "demand.match_unnamed_jobs", m.get("match_unnamed_jobs", d_demand.match_unnamed_jobs)
        ),
        count_running_jobs=_bool(
            "demand.count_running_jobs", m.get("count_running_jobs", d_demand.count_running_jobs)
        ),
        poll_s=_int("demand.poll_s", m.get("poll_s", d_demand.poll_s), 1, 3600),
        vm_condor_version=_condor_version(
            "demand.vm_condor_version", m.get("vm_condor_version", d_demand.vm_condor_version)
        ),
    )
    if demand.source == "job_ads_file" and not demand.job_ads_file:
        raise ConfigError(
            "demand.job_ads_file", 'must name a file when demand.source = "job_ads_file"'
        )

    g = sec["grid"]
    grid = GridConfig(
        model_file=_str("grid.model_file", g.get("model_file", d_grid.model_file), empty=False)
    )
    return Config(
        server, database, enrolment, leases, images, demand, grid, _vm_tokens(sec["vm_tokens"])
    )


def _vm_tokens(t: Mapping[str, object]) -> VmTokensConfig:
    d = VmTokensConfig()
    vm_tokens = VmTokensConfig(
        socket=_str("vm_tokens.socket", t.get("socket", d.socket)),
        timeout_s=_number("vm_tokens.timeout_s", t.get("timeout_s", d.timeout_s), 0.1, 60),
    )
    if vm_tokens.socket and not vm_tokens.socket.startswith("/"):
        raise ConfigError("vm_tokens.socket", f"{vm_tokens.socket!r} is not an absolute path")
    return vm_tokens


def parse_config_text(text: str, *, name: str = "config") -> Config:
    """Parse TOML text; a TOML syntax error becomes a ``ConfigError`` named ``name``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, f"not valid TOML ({exc})") from None
    return parse_config(raw)
