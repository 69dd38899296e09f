"""Helpers for the coordinator tests: a grid, a config, signed requests, heartbeats, DB dumps."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, MetaData, select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from cvmc import protocol
from cvmc.coordinator.adapters.database import make_engine, migrate
from cvmc.coordinator.compose import build
from cvmc.coordinator.domain.config import Config, parse_config
from cvmc.coordinator.service.coordinator import Coordinator
from cvmc.gridmodel.enrolment import enrol_token
from cvmc.protocol import AUTH_SCHEME, string_to_sign

ENROL_KEY = "test-enrol-key-0123456789abcdefghijklmnopqrstuvwxyz"
BOINC = "its-u11-boinc-20120415"
BULK = "lab-el9-bulk-20261101"
HB = "/api/v1/heartbeat"

GRID: dict[str, Any] = {
    "name": "lab",
    "vm_types": [
        {
            "name": BOINC,
            "image": f"{BOINC}.qcow2",
            "cpus": 1,
            "memory_mb": 512,
            "os": "LINUX",
            "arch": "X86_64",
        },
        {
            "name": BULK,
            "image": f"{BULK}.qcow2",
            "cpus": 1,
            "memory_mb": 768,
            "os": "LINUX",
            "arch": "X86_64",
        },
    ],
    "max_vms_per_desktop": 2,
    "desktops": [
        {"name": f"desk{i:02d}.lab.example", "index": i, "department": dept}
        for i, dept in enumerate(["dept_chem"] * 4 + ["dept_phys"] * 4 + ["default"] * 2)
    ],
}


#: Where the fake clock starts; tokens are issued then unless a test says otherwise.
CLOCK_START = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = CLOCK_START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_setup(tmp_path: Path, db_url: str, **sections: dict[str, Any]) -> Config:
    """Key, grid, job ads and images under ``tmp_path``; the parsed config."""
    key = tmp_path / "enrol.key"
    key.write_text(ENROL_KEY + "\n")
    key.chmod(0o600)
    (tmp_path / "grid.json").write_text(json.dumps(GRID))
    (tmp_path / "jobs.ads").write_text("")
    (tmp_path / "images").mkdir(exist_ok=True)
    raw: dict[str, dict[str, Any]] = {
        "server": {"public_url": "https://lab-coordinator"},
        "database": {"url": db_url},
        "enrolment": {"key_file": str(key)},
        "leases": {"ttl_s": 300, "heartbeat_s": 60, "offline_after_s": 180},
        "images": {"dir": str(tmp_path / "images"), "base_url": "/images/"},
        "demand": {
            "source": "job_ads_file",
            "job_ads_file": str(tmp_path / "jobs.ads"),
            "poll_s": 1,
        },
        "grid": {"model_file": str(tmp_path / "grid.json")},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return parse_config(raw)


def make_coordinator(config: Config, clock: Clock) -> Coordinator:
    engine = make_engine(config.database)
    migrate(engine)
    engine.dispose()
    coordinator = build(config)
    coordinator.clock = clock
    return coordinator


def job_ads(*jobs: tuple[str | None, int]) -> str:
    """``condor_q -long`` text for jobs given as (vm_name or None, JobStatus)."""
    out = []
    for n, (vm_name, status) in enumerate(jobs):
        lines = [
            f"ClusterId = {100 + n}",
            "ProcId = 0",
            f"JobStatus = {status}",
            "RequestCpus = 1",
            "RequestMemory = 256",
            'Owner = "alice"',
        ]
        if vm_name is not None:
            lines.append(f'vm_name = "{vm_name}"')
            lines.append(f'Requirements = (TARGET.vm_name == "{vm_name}")')
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def set_demand(coordinator: Coordinator, *jobs: tuple[str | None, int]) -> None:
    Path(coordinator.config.demand.job_ads_file).write_text(job_ads(*jobs))
    coordinator.demand_at = float("-inf")  # poll again at the next round


def token(
    desktop: str, generation: int = 1, *, issued_at: float = CLOCK_START, ttl_s: int = 86_400
) -> str:
    """A token issued at ``issued_at`` (the fake clock's start unless a test runs on real
    time), valid for ``ttl_s`` seconds."""
    return enrol_token(ENROL_KEY, desktop, generation, issued_at=int(issued_at), ttl_s=ttl_s)


def enrol_body(
    desktop: str,
    generation: int = 1,
    *,
    issued_at: float = CLOCK_START,
    ttl_s: int = 86_400,
    **extra: Any,
) -> bytes:
    return json.dumps(
        {
            "token": token(desktop, generation, issued_at=issued_at, ttl_s=ttl_s),
            "desktop": desktop,
            "agent_version": "0.1.0",
            "platform": "linux",
            **extra,
        }
    ).encode()


def signed_headers(  # noqa: PLR0917 - the string_to_sign's fields, in its order
    method: str, path: str, desktop_id: str, credential: str, seq: int, body: bytes
) -> dict[str, str]:
    mac = hmac.new(
        base64.b64decode(credential),
        string_to_sign(method, path, desktop_id, seq, body),
        hashlib.sha256,
    ).digest()
    return {
        "X-CVMC-Desktop": desktop_id,
        "X-CVMC-Seq": str(seq),
        "Authorization": f"{AUTH_SCHEME} {base64.b64encode(mac).decode()}",
        "Content-Type": "application/json",
    }


def heartbeat(
    *,
    users: int = 0,
    may_start: bool = True,
    memory_free_mb: int = 8000,
    slots: list[dict[str, Any]] | None = None,
    declined: list[dict[str, Any]] | None = None,
    memory_total_mb: int = 16000,
    hw_virt: bool = True,
    hw_virt_held_by: str | None = None,
    agent_version: str = "0.1.0",
) -> dict[str, Any]:
    return {
        "sent_at": "2026-11-23T02:05:00+01:00",
        "agent_version": agent_version,
        "state": {
            "users": users,
            "may_run": may_start,
            "may_start": may_start,
            "policy": "allowed",
            "blackout": None,
            "battery_percent": None,
            "on_ac": None,
        },
        "resources": {
            "cpus": 4,
            "memory_total_mb": memory_total_mb,
            "memory_free_mb": memory_free_mb,
            "disk_free_mb": 100000,
            "hw_virt": hw_virt,
            "hw_virt_held_by": hw_virt_held_by,
            "hypervisor": "qemu",
            "hypervisor_version": "7.2",
        },
        "capacity": {"max_vms": 2, "free_slots": 2},
        "slots": slots
        if slots is not None
        else [
            {"slot": 0, "state": "idle", "vm_name": None, "lease_id": None},
            {"slot": 1, "state": "idle", "vm_name": None, "lease_id": None},
        ],
        "declined": declined or [],
        "images": [],
    }


@contextlib.contextmanager
def serve_in_thread(app: Starlette, **ssl: str) -> Iterator[int]:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread (``ssl_certfile``, ``ssl_keyfile`` for
    HTTPS); yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, **ssl))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.02)
    assert server.started
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: to assert that nothing was written."""
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            name: sorted(tuple(row) for row in conn.execute(select(table)))
            for name, table in sorted(meta.tables.items())
        }


__all__ = [
    "BOINC",
    "BULK",
    "CLOCK_START",
    "ENROL_KEY",
    "GRID",
    "Clock",
    "dump",
    "enrol_body",
    "heartbeat",
    "job_ads",
    "make_coordinator",
    "replace",
    "set_demand",
    "signed_headers",
    "token",
    "write_setup",
]


class Desk:
    """An enrolled desktop that signs its requests with a rising sequence number."""

    def __init__(self, client: TestClient, name: str) -> None:
        reply = client.post("/api/v1/enrol", content=enrol_body(name))
        assert reply.status_code == 201, reply.text
        jsonschema.validate(reply.json(), protocol.ENROL_REPLY_SCHEMA)
        self.client = client
        self.id = reply.json()["desktop_id"]
        self.credential = reply.json()["credential"]
        self.seq = 0

    def beat(self, body: dict[str, Any] | None = None, *, seq: int | None = None) -> Any:
        raw = json.dumps(body or heartbeat()).encode()
        if seq is None:
            self.seq += 1
            seq = self.seq
        return self.client.post(
            HB, content=raw, headers=signed_headers("POST", HB, self.id, self.credential, seq, raw)
        )

    def leases(self, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        reply = self.beat(body)
        assert reply.status_code == 200, reply.text
        jsonschema.validate(reply.json(), protocol.HEARTBEAT_REPLY_SCHEMA)
        parsed = protocol.parse_heartbeat_reply(reply.json(), 0.0)  # the agent's own parser
        assert parsed.problems == ()
        return list(reply.json()["leases"])


def scrape(text: str) -> dict[str, float]:
    """Every sample of a ``/metrics`` exposition, parsed by prometheus_client's own parser
    (which refuses a malformed one), keyed ``name{label="value",...}`` with the labels in
    their name's order (``name`` alone without labels)."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            key = f"{sample.name}{{{labels}}}" if labels else sample.name
            assert key not in samples, f"{key} twice in /metrics"
            samples[key] = sample.value
    return samples


def running(leases: list[dict[str, Any]]) -> dict[str, Any]:
    slots = [
        {"slot": i, "state": "running", "vm_name": lease["vm_name"], "lease_id": lease["lease_id"]}
        for i, lease in enumerate(leases)
    ]
    return heartbeat(slots=slots)


ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def activated_minter(path: Path, key_file: Path, args: list[str]) -> Iterator[None]:
    """``cvmc-vm-token`` behind a listening unix socket at ``path``, as cvmc-vm-token.socket
    runs it (``Accept=yes``: one process per connection, the connection on its stdin and
    stdout), with systemd's own ``systemd-socket-activate``."""
    activate = shutil.which("systemd-socket-activate")
    assert activate, "systemd-socket-activate is missing (Debian's systemd package)"
    activator = subprocess.Popen(
        [
            activate,
            "--listen",
            str(path),
            "--accept",
            "--inetd",
            # It starts the program with a clean environment, as systemd does.
            f"--setenv=PYTHONPATH={ROOT / 'src'}",
            sys.executable,
            "-m",
            "cvmc.coordinator.entrypoints.vm_token",
            "--key-file",
            str(key_file),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 20
        while not path.exists():
            assert activator.poll() is None, activator.stderr.read() if activator.stderr else ""
            assert time.monotonic() < deadline, "the socket never appeared"
            time.sleep(0.05)
        yield
    finally:
        activator.terminate()
        activator.wait(timeout=20)
