"""Coordinator load: 20,000 desktops heartbeating every 60 s while demand changes.

Starts the real service (``cvmc-coordinator serve``, one uvicorn process) on loopback with a
grid of N desktops in 10 departments, enrols them (rows written through the store, credentials
derived as the service derives them), then drives signed heartbeats over keep-alive HTTP/1.1
connections from a small asyncio client (raw sockets, so the client costs little CPU):

1. steady: every desktop beats once per ``--interval`` seconds (N / interval requests/s), each
   reporting the leases it was given as running VMs; demand (a job-ads file) changes every 5 s
   and allocation rounds run every 5 s;
2. saturation: as many heartbeats as ``--connections`` connections carry.

Prints, for each backend and phase: requests/s, p50/p99 latency, the server's CPU seconds per
request (its web process's CPU time over the phase), and the CPU and memory of the process
that runs the allocation rounds (a child of the server). The client runs on the same machine, so the
figures are a lower bound for a coordinator with the cores to itself. Asserts nothing.

Every answer other than 200 is counted by kind: its status and the ``error`` code of its JSON
body (``503 unavailable``, ``429 rate_limited``...); a request that got no answer is counted by
the exception's type (``ConnectionResetError``...), and its connection is opened again. With
``--server-log PREFIX`` the server's own log (its stderr, the rounds process's too) is kept in
``PREFIX.<backend>.log``; without it, it is read after the run and its WARNING and ERROR lines
are counted and the first of each kind shown (the log tells why an answer failed).

With ``--pg-workers N`` the PostgreSQL server runs ``serve --workers N``: N web processes on
one port (``SO_REUSEPORT``), each with a rounds process, one of which leads; "server CPU" is
then the web processes' together, and "rounds process" the rounds processes' together.

Usage: python bench/coordinator_load.py [--desktops 20000] [--seconds 20]
       [--backend sqlite|postgresql|both] [--postgres-url URL] [--connections 32]
       [--pg-workers N] [--server-log PREFIX]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from pg_scratch import scratch_database  # noqa: E402

from cvmc.coordinator.adapters.schema import desktops as desktops_table  # noqa: E402
from cvmc.coordinator.domain.auth import derive_credential  # noqa: E402
from cvmc.gridmodel.addressing import desktop_id as canonical  # noqa: E402
from cvmc.protocol import AUTH_SCHEME, string_to_sign  # noqa: E402

KEY = "bench-enrol-key-" + "x" * 40
TYPES = [
    {
        "name": "its-u11-boinc-20120415",
        "image": "a.qcow2",
        "cpus": 1,
        "memory_mb": 512,
        "os": "LINUX",
        "arch": "X86_64",
    },
    {
        "name": "lab-el9-bulk-20261101",
        "image": "b.qcow2",
        "cpus": 1,
        "memory_mb": 768,
        "os": "LINUX",
        "arch": "X86_64",
    },
]
PATH = "/api/v1/heartbeat"
DEFAULT_PG = "postgresql+psycopg://cvmc_test:cvmc_test@127.0.0.1:5432/cvmc_test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_jobs(path: Path, rng: random.Random) -> None:
    ads = []
    for vm in TYPES:
        for n in range(rng.randint(500, 4000)):
            ads.append(f'ClusterId = {n}\nProcId = 0\nJobStatus = 1\nvm_name = "{vm["name"]}"')
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n\n".join(ads) + "\n")
    os.replace(tmp, path)


def setup(work: Path, url: str, n: int, port: int) -> tuple[Path, list[tuple[str, bytes]]]:
    key_file = work / "enrol.key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    grid = {
        "name": "bench",
        "vm_types": TYPES,
        "max_vms_per_desktop": 2,
        "desktops": [
            {"name": f"pc{i:05d}", "index": i, "department": f"dept_{i % 10}"} for i in range(n)
        ],
    }
    (work / "grid.json").write_text(json.dumps(grid))
    write_jobs(work / "jobs.ads", random.Random(1))  # noqa: S311 - a load pattern
    config = work / "coordinator.toml"
    config.write_text(
        f'[server]\nlisten_port = {port}\n[database]\nurl = "{url}"\n'
        f'[enrolment]\nkey_file = "{key_file}"\n[images]\ndir = "{work}"\n'
        f'[demand]\nsource = "job_ads_file"\njob_ads_file = "{work / "jobs.ads"}"\npoll_s = 5\n'
        f'[leases]\nallocate_s = 5\n[grid]\nmodel_file = "{work / "grid.json"}"\n'
    )
    cli = [sys.executable, "-m", "cvmc.coordinator.entrypoints.cli", "--config", str(config)]
    subprocess.run([*cli, "migrate"], check=True, capture_output=True)
    # Enrol every desktop: the rows the enrol endpoint writes, in one transaction.
    creds: list[tuple[str, bytes]] = []
    rows: list[dict[str, Any]] = []
    now = time.time()
    for i in range(n):
        desk_id, salt = f"d-{i:05d}", secrets.token_bytes(32)
        creds.append((desk_id, derive_credential(KEY.encode(), desk_id, salt)))
        rows.append(
            {
                "id": desk_id,
                "name": canonical(f"pc{i:05d}"),
                "department": f"dept_{i % 10}",
                "generation": 1,
                "salt": salt,
                "last_seq": 0,
                "enrolled_at": now,
                "revoked_at": None,
                "last_seen": None,
                "platform": "linux",
                "agent_version": "0.1.0",
                "users": 0,
                "may_start": False,
                "may_run": False,
                "hw_virt": False,
                "cpus": 0,
                "memory_free_mb": 0,
                "max_vms": 0,
                "busy_slots": 0,
                "unleased_vms": 0,
                "policy": "",
            }
        )
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(desktops_table), rows)
    engine.dispose()
    return config, creds


class Desk:
    __slots__ = ("credential", "id", "leases", "seq")

    def __init__(self, desk_id: str, credential: bytes) -> None:
        self.id, self.credential, self.seq = desk_id, credential, 0
        self.leases: list[dict[str, Any]] = []

    def request(self, host: str) -> bytes:
        self.seq += 1
        slots = [
            {
                "slot": i,
                "state": "running",
                "vm_name": lease["vm_name"],
                "lease_id": lease["lease_id"],
                "cpus": 1,
                "memory_mb": lease["memory_mb"],
            }
            for i, lease in enumerate(self.leases[:2])
        ]
        slots += [{"slot": i, "state": "idle"} for i in range(len(slots), 2)]
        body = json.dumps(
            {
                "sent_at": "2026-11-25T04:00:00Z",
                "agent_version": "0.1.0",
                "state": {"users": 0, "may_run": True, "may_start": True, "policy": "allowed"},
                "resources": {
                    "cpus": 4,
                    "memory_total_mb": 16000,
                    "memory_free_mb": 9000,
                    "disk_free_mb": 90000,
                    "hw_virt": True,
                    "hypervisor": "qemu",
                    "hypervisor_version": "7.2",
                },
                "capacity": {"max_vms": 2, "free_slots": 2 - len(self.leases[:2])},
                "slots": slots,
                "declined": [],
                "images": [],
            }
        ).encode()
        mac = hmac.new(
            self.credential, string_to_sign("POST", PATH, self.id, self.seq, body), hashlib.sha256
        ).digest()
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-CVMC-Desktop: {self.id}\r\n"
            f"X-CVMC-Seq: {self.seq}\r\n"
            f"Authorization: {AUTH_SCHEME} {base64.b64encode(mac).decode()}\r\n\r\n"
        )
        return head.encode() + body


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return status, await reader.readexactly(length)


def failure_kind(status: int, body: bytes) -> str:
    """``503 unavailable``: the status and the ``error`` code of the JSON body (``503 -`` if
    the body has none)."""
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        code = None
    return f"{status} {code if isinstance(code, str) else '-'}"


def kinds(counts: Counter[str]) -> str:
    return ", ".join(f"{kind} x{n}" for kind, n in counts.most_common()) or "none"


async def feed(
    queue: asyncio.Queue[Desk], order: list[Desk], end: float, connections: int, rate: float | None
) -> None:
    """Queue desktops in ``order`` (round and round) until ``end``: at ``rate`` per second, or
    (None) keeping two per connection queued."""
    start = time.perf_counter()
    i = 0
    while time.perf_counter() < end:
        if rate is None:
            if queue.qsize() < connections * 2:
                queue.put_nowait(order[i % len(order)])
                i += 1
            else:
                await asyncio.sleep(0.001)
            continue
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(order[i % len(order)])
        i += 1


async def drive(
    port: int, desks: list[Desk], seconds: float, connections: int, rate: float | None
) -> tuple[list[float], Counter[str], Counter[str]]:
    """Heartbeats for ``seconds``; at ``rate`` requests/s, or as fast as possible if None.
    Returns the latencies of answered requests, the failed answers by kind (status and error
    code) and the requests that got no answer by exception type."""
    queue: asyncio.Queue[Desk] = asyncio.Queue()
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    broken: Counter[str] = Counter()
    end = time.perf_counter() + seconds
    order = list(desks)
    random.Random(2).shuffle(order)  # noqa: S311 - a load pattern, not a secret

    async def worker() -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            while time.perf_counter() < end:
                try:
                    desk = await asyncio.wait_for(queue.get(), timeout=0.2)
                except TimeoutError:
                    continue
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    sent = time.perf_counter()
                    writer.write(desk.request(f"127.0.0.1:{port}"))
                    status, body = await read_reply(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    broken[type(exc).__name__] += 1
                    if writer is not None:
                        writer.close()
                    writer = None  # a new connection for the next request
                    continue
                latencies.append(time.perf_counter() - sent)
                if status == 200:
                    desk.leases = json.loads(body)["leases"]
                else:
                    failures[failure_kind(status, body)] += 1
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(
        feed(queue, order, end, connections, rate), *(worker() for _ in range(connections))
    )
    return latencies, failures, broken


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def postgres_cpu() -> float:
    """CPU seconds of this machine's PostgreSQL server processes (0 where there are none)."""
    total = 0.0
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in {"postgres", "postmaster"}:
            with contextlib.suppress(psutil.Error):
                total += sum(process.cpu_times()[:2])
    return total


def real(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Leaves out multiprocessing's resource tracker."""
    return [p for p in processes if "resource_tracker" not in " ".join(p.cmdline())]


def server_processes(
    proc: psutil.Process, workers: int
) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(web processes, rounds processes) of ``serve``: itself and its child, or with
    ``--workers`` its workers and theirs."""
    web = [proc] if workers == 1 else real(proc.children())
    return web, [child for p in web for child in real(p.children())]


def cpu_of(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def phase(
    *,
    name: str,
    proc: psutil.Process,
    workers: int,
    port: int,
    desks: list[Desk],
    args: argparse.Namespace,
    rate: float | None,
    jobs: Path,
) -> None:
    rng = random.Random(3)  # noqa: S311 - a load pattern, not a secret

    async def run() -> tuple[list[float], Counter[str], Counter[str]]:
        async def churn() -> None:
            while True:
                await asyncio.sleep(5)
                write_jobs(jobs, rng)

        task = asyncio.create_task(churn())
        try:
            return await drive(port, desks, args.seconds, args.connections, rate)
        finally:
            task.cancel()

    web, children = server_processes(proc, workers)  # children: the rounds processes
    cpu0 = cpu_of(web)
    kids0 = cpu_of(children)
    pg0 = postgres_cpu()
    client0 = sum(psutil.Process().cpu_times()[:2])
    wall0 = time.perf_counter()
    latencies, failures, broken = asyncio.run(run())
    wall = time.perf_counter() - wall0
    cpu = cpu_of(web) - cpu0
    kids = cpu_of(children) - kids0
    pg = postgres_cpu() - pg0
    client = sum(psutil.Process().cpu_times()[:2]) - client0
    rss = sum(p.memory_info().rss for p in web) / 2**20
    kids_rss = sum(child.memory_info().rss for child in children) / 2**20
    n = len(latencies)
    print(
        f"  {name:<11} {n / wall:8.0f} req/s  p50 {pct(latencies, 0.5):6.1f} ms  "
        f"p99 {pct(latencies, 0.99):7.1f} ms  server CPU {cpu / max(n, 1) * 1000:5.2f} ms/req "
        f"({cpu / wall * 100:4.0f}% of a core)  errors {failures.total() + broken.total()}\n"
        f"  {'':<11} rounds process {kids / wall * 100:4.0f}% of a core; "
        f"PostgreSQL {pg / wall * 100:4.0f}%; load client {client / wall * 100:4.0f}%; "
        f"RSS: server {rss:.0f} MiB, rounds process {kids_rss:.0f} MiB\n"
        f"  {'':<11} failed answers: {kinds(failures)}; no answer: {kinds(broken)}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


#: A traceback's last line: ``psycopg.errors.DeadlockDetected: deadlock detected``.
_EXCEPTION_LINE = re.compile(r"\A[A-Za-z_][\w.]*(Error|Exception|Exit|Detected|Failure)\b")


def log_summary(log: Path) -> list[str]:
    """The server log's WARNING, ERROR and CRITICAL lines and tracebacks' exception lines:
    each kind (its first 60 characters) counted, with its first line (cut at 300 characters)."""
    counts: Counter[str] = Counter()
    first: dict[str, str] = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(("WARNING", "ERROR", "CRITICAL")) or _EXCEPTION_LINE.match(line):
            kind = line[:60]
            counts[kind] += 1
            first.setdefault(kind, line[:300])
    return [f"{n} x {first[kind]}" for kind, n in counts.most_common()]


def bench(backend: str, url: str, args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvmc-load-")))
        if backend == "sqlite":
            url = f"sqlite:///{work / 'coordinator.db'}"
        else:  # a database of this run's own: another run or a test session may be on the server
            url = stack.enter_context(scratch_database(url))
        port = free_port()
        workers = args.pg_workers if backend == "postgresql" else 1
        t0 = time.perf_counter()
        config, creds = setup(work, url, args.desktops, port)
        print(
            f"{backend}: {args.desktops} desktops enrolled in {time.perf_counter() - t0:.1f} s; "
            f"serve --workers {workers}"
        )
        log = Path(f"{args.server_log}.{backend}.log") if args.server_log else work / "server.log"
        log_file = stack.enter_context(log.open("wb"))
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cvmc.coordinator.entrypoints.cli",
                "--config",
                str(config),
                "serve",
                "--workers",
                str(workers),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            for _ in range(300):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            proc = psutil.Process(server.pid)
            for _ in range(300):  # the workers and their rounds processes are spawned at start
                web, rounds = server_processes(proc, workers)
                if len(web) == workers and len(rounds) == workers:
                    break
                time.sleep(0.1)
            desks = [Desk(d, c) for d, c in creds]
            rate = args.desktops / args.interval
            for name, phase_rate in ((f"steady {rate:.0f}/s", rate), ("saturation", None)):
                phase(
                    name=name,
                    proc=proc,
                    workers=workers,
                    port=port,
                    desks=desks,
                    args=args,
                    rate=phase_rate,
                    jobs=work / "jobs.ads",
                )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        lines = log_summary(log)
        where = f" ({log})" if args.server_log else ""
        print(f"  server log{where}: {len(lines)} kinds of WARNING/ERROR lines")
        for line in lines:
            print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--desktops", type=int, default=20000)
    parser.add_argument("--interval", type=float, default=60.0, help="heartbeat period, s")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("CVMC_TEST_POSTGRES_URL", DEFAULT_PG)
    )
    parser.add_argument(
        "--pg-workers",
        type=int,
        default=1,
        metavar="N",
        help="PostgreSQL: serve --workers N (web processes sharing the port)",
    )
    parser.add_argument(
        "--server-log",
        metavar="PREFIX",
        help="keep the server's log in PREFIX.<backend>.log (default: a temporary file)",
    )
    args = parser.parse_args()
    print(
        f"coordinator load: {args.desktops} desktops, one heartbeat each per "
        f"{args.interval:.0f} s, {args.seconds:.0f} s per phase, {args.connections} connections, "
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        bench(backend, args.postgres_url, args)


if __name__ == "__main__":
    main()
