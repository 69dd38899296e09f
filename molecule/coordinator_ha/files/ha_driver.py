"""Desktops and checks for molecule coordinator_ha, run on a coordinator host with the
service's own virtualenv (cvmc, SQLAlchemy, psycopg) and the Python standard library.

  load URL... --seconds N --out FILE   enrol desktops of the grid file and heartbeat to every
                                       coordinator host's nginx in turn (HTTPS, verified against
                                       the coordinator's name) until FILE.stop exists; write
                                       what each got to FILE, and sample the database's leases
  leader                               the address of the host whose rounds hold the lock
  wait-leases COUNT --since T          wait until more than COUNT leases exist, at most until
                                       T + --timeout; print the seconds since Unix time T (0: now)
  check FILE --killed T --dead ADDR    the checks of molecule/coordinator_ha/molecule.yml
  sane --leader ADDR                   the leader is ADDR; no lease twice, none above the slots

Every request goes to the project's own containers on the --internal grid-molecule network.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import socket
import ssl
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from cvmc.coordinator.adapters.database import database_url
from cvmc.coordinator.adapters.pg_leader import LEADER_KEY
from cvmc.coordinator.domain.config import parse_config
from cvmc.gridmodel.enrolment import enrol_token
from cvmc.protocol import AUTH_SCHEME, string_to_sign

CONFIG = Path("/etc/cvmc-coordinator/coordinator.toml")
HB = "/api/v1/heartbeat"
DESKTOPS = 10
SLOTS = 2


def config() -> Any:  # noqa: ANN401 - the coordinator's Config
    with CONFIG.open("rb") as fh:
        return parse_config(tomllib.load(fh))


def engine() -> Any:  # noqa: ANN401 - SQLAlchemy's Engine
    return create_engine(database_url(config().database), isolation_level="AUTOCOMMIT")


def rows(db: Any, query: str, **params: Any) -> list[Any]:  # noqa: ANN401
    with db.connect() as conn:
        return list(conn.execute(text(query), params))


class Host:
    """One coordinator host's nginx, by address, verified as the coordinator's name."""

    def __init__(self, address: str, name: str, ca: str) -> None:
        self.address = address
        self.name = name
        self.context = ssl.create_default_context(cafile=ca)
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more, anew
            if self.conn is None:
                raw = socket.create_connection((self.address, 443), timeout=10)
                conn = http.client.HTTPConnection(self.name, 443, timeout=10)
                conn.sock = self.context.wrap_socket(raw, server_hostname=self.name)
                self.conn = conn
            try:
                self.conn.request(method, path, body=body, headers={"Host": self.name, **headers})
                answer = self.conn.getresponse()
                return answer.status, answer.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def heartbeat_body(slots: list[dict[str, Any]]) -> bytes:
    idle = [{"slot": i, "state": "idle", "vm_name": None, "lease_id": None} for i in range(SLOTS)]
    return json.dumps(
        {
            "sent_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "agent_version": "0.1.0",
            "state": {
                "users": 0,
                "may_run": True,
                "may_start": True,
                "policy": "allowed",
                "blackout": None,
                "battery_percent": None,
                "on_ac": None,
            },
            "resources": {
                "cpus": 4,
                "memory_total_mb": 16000,
                "memory_free_mb": 8000,
                "disk_free_mb": 100000,
                "hw_virt": True,
                "hw_virt_held_by": None,
                "hypervisor": "qemu",
                "hypervisor_version": "7.2",
            },
            "capacity": {"max_vms": SLOTS, "free_slots": SLOTS - len(slots)},
            "slots": slots + idle[len(slots) :],
            "declined": [],
            "images": [],
        }
    ).encode()


class Desktop(threading.Thread):
    def __init__(self, name: str, hosts: list[Host], stop: Path) -> None:
        super().__init__(name=name, daemon=True)
        self.hosts = hosts
        self.stop = stop
        key = Path(config().enrolment.key_file).read_text(encoding="utf-8").strip()
        body = json.dumps(
            {
                "token": enrol_token(key, name, 1, issued_at=int(time.time())),
                "desktop": name,
                "agent_version": "0.1.0",
                "platform": "linux",
            }
        ).encode()
        status, raw = hosts[0].request(
            "POST", "/api/v1/enrol", body, {"Content-Type": "application/json"}
        )
        assert status == 201, (status, raw[:300])
        reply = json.loads(raw)
        self.id, self.credential = reply["desktop_id"], reply["credential"]
        self.seq = 0
        self.acked = 0
        self.log: list[tuple[float, str, int]] = []  # (time, host address, status or 0)
        self.leases: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.too_many = 0

    def run(self) -> None:
        turn = 0
        while not self.stop.exists():
            host = self.hosts[turn % len(self.hosts)]
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
            body = heartbeat_body(slots)
            self.seq += 1
            mac = hmac.new(
                base64.b64decode(self.credential),
                string_to_sign("POST", HB, self.id, self.seq, body),
                hashlib.sha256,
            )
            headers = {
                "X-CVMC-Desktop": self.id,
                "X-CVMC-Seq": str(self.seq),
                "Authorization": f"{AUTH_SCHEME} {base64.b64encode(mac.digest()).decode()}",
                "Content-Type": "application/json",
            }
            try:
                status, raw = host.request("POST", HB, body, headers)
            except (OSError, http.client.HTTPException):
                status, raw = 0, b""
            self.log.append((time.time(), host.address, status))
            if status == 200:
                self.acked = max(self.acked, self.seq)
                self.leases = list(json.loads(raw)["leases"])
                self.seen.update(lease["lease_id"] for lease in self.leases)
                self.too_many += len(self.leases) > SLOTS
            time.sleep(1.1)  # under the coordinator's per-desktop rate (1/s, burst 30)


def load(args: argparse.Namespace) -> None:
    grid = json.loads(Path(config().grid.model_file).read_text(encoding="utf-8"))
    names = [d["name"] for d in grid["desktops"]][:DESKTOPS]
    stop = Path(args.out + ".stop")
    desktops = [
        Desktop(name, [Host(a, args.name, args.ca) for a in args.addresses], stop) for name in names
    ]
    db = engine()
    given: dict[str, str] = {}
    violations: list[str] = []
    for desktop in desktops:
        desktop.start()
    Path(args.out + ".started").write_text(str(time.time()))
    deadline = time.monotonic() + args.seconds
    while not stop.exists() and time.monotonic() < deadline:
        per_desktop: dict[str, int] = {}
        for lease_id, desktop_id in rows(db, "SELECT id, desktop_id FROM leases"):
            per_desktop[desktop_id] = per_desktop.get(desktop_id, 0) + 1
            if given.setdefault(lease_id, desktop_id) != desktop_id:
                violations.append(f"lease {lease_id} given to two desktops")
        if any(count > SLOTS for count in per_desktop.values()):
            violations.append(f"a desktop holds more than {SLOTS} leases: {per_desktop}")
        time.sleep(0.2)
    stop.touch()
    for desktop in desktops:
        desktop.join(30)
    Path(args.out).write_text(
        json.dumps(
            {
                "violations": violations,
                "desktops": [
                    {
                        "name": d.name,
                        "id": d.id,
                        "acked": d.acked,
                        "log": d.log,
                        "seen": sorted(d.seen),
                        "too_many": d.too_many,
                    }
                    for d in desktops
                ],
            }
        )
    )


def leader_address(db: Any) -> str | None:  # noqa: ANN401
    """The address of the host whose rounds session holds the leader lock, if any."""
    found = rows(
        db,
        "SELECT host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.objid = :key AND l.granted",
        key=LEADER_KEY,
    )
    return str(found[0][0]) if found else None


def leader(_args: argparse.Namespace) -> None:
    print(leader_address(engine()) or "")


def wait_leases(args: argparse.Namespace) -> None:
    db = engine()
    # The bound counts from --since (the kill, in another process), not from this start.
    start = args.since or time.time()
    deadline = start + args.timeout
    while time.time() < deadline:
        if rows(db, "SELECT count(*) FROM leases")[0][0] > args.count:
            print(f"{time.time() - start:.2f}")
            return
        time.sleep(0.05)
    sys.exit(f"ha_driver: no more than {args.count} leases {args.timeout} s after --since")


def check(args: argparse.Namespace) -> None:
    result = json.loads(Path(args.out).read_text(encoding="utf-8"))
    db = engine()
    stored = {r[0]: int(r[1]) for r in rows(db, "SELECT id, last_seq FROM desktops")}
    problems = list(result["violations"])
    owners: dict[str, str] = {}
    handed_over = failed = answered = 0
    for desktop in result["desktops"]:
        if stored.get(desktop["id"], 0) < desktop["acked"]:
            problems.append(f"{desktop['name']}: an answered heartbeat is not in the database")
        if desktop["too_many"]:
            problems.append(f"{desktop['name']}: more than {SLOTS} leases at once")
        for lease_id in desktop["seen"]:
            if owners.setdefault(lease_id, desktop["id"]) != desktop["id"]:
                problems.append(f"lease {lease_id} given to two desktops")
        for at, address, status in desktop["log"]:
            answered += status == 200
            failed += status != 200
            handed_over += at > args.killed + 1 and address == args.dead and status == 200
    final = rows(db, "SELECT id FROM leases")
    figures = {
        "answered": answered,
        "failed": failed,
        "handed_over": handed_over,
        "leases": len(final),
    }
    print(json.dumps(figures))
    if handed_over == 0:
        problems.append(f"no heartbeat sent to {args.dead}'s nginx after the kill was answered")
    if failed > len(result["desktops"]):
        problems.append(f"{failed} heartbeats failed (more than one in flight per desktop)")
    if len({r[0] for r in final}) != len(final):
        problems.append("a lease id twice in the database")
    if problems:
        sys.exit("ha_driver: " + "; ".join(problems))


def sane(args: argparse.Namespace) -> None:
    """The leader is --leader, no lease id twice, no desktop above its slots; prints figures."""
    db = engine()
    now = leader_address(db)
    leases = rows(db, "SELECT id, desktop_id FROM leases")
    per_desktop: dict[str, int] = {}
    for _lease, desktop in leases:
        per_desktop[desktop] = per_desktop.get(desktop, 0) + 1
    print(json.dumps({"leader": now, "leases": len(leases)}))
    problems = []
    if now != args.leader:
        problems.append(f"the leader is {now or 'nobody'}, not {args.leader}")
    if len({lease for lease, _d in leases}) != len(leases):
        problems.append("a lease id twice in the database")
    if any(count > SLOTS for count in per_desktop.values()):
        problems.append(f"a desktop holds more than {SLOTS} leases: {per_desktop}")
    if problems:
        sys.exit("ha_driver: " + "; ".join(problems))


def main() -> None:
    parser = argparse.ArgumentParser(prog="ha_driver")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("load")
    p.add_argument("addresses", nargs="+")
    p.add_argument("--name", required=True, help="the coordinator's certificate name")
    p.add_argument("--ca", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(run=load)
    sub.add_parser("leader").set_defaults(run=leader)
    p = sub.add_parser("wait-leases")
    p.add_argument("count", type=int)
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(run=wait_leases)
    p = sub.add_parser("check")
    p.add_argument("out")
    p.add_argument("--killed", type=float, required=True)
    p.add_argument("--dead", required=True)
    p.set_defaults(run=check)
    p = sub.add_parser("sane")
    p.add_argument("--leader", required=True)
    p.set_defaults(run=sane)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
