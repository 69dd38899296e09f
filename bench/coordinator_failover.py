"""Coordinator failover: how long allocation rounds stop when the instance that runs them dies.

Starts two instances of the real service (``cvmc-coordinator serve``, each with ``--workers``
web processes) on loopback and one PostgreSQL database of the run's own, with the grid,
desktops and job ads of bench/coordinator_load.py. Heartbeats go to both instances at a steady
rate the whole time (half the desktops each; a desktop whose instance is down gets no answer
until it is back). Then:

1. ``--kills`` times: the instance whose rounds process holds the leader lock (``pg_locks``
   joined with ``pg_stat_activity``'s ``application_name``) is killed with SIGKILL, and the
   bench measures the time until another session holds the lock, and until a round of the new
   leader commits (a new row in ``samples``, which every round writes). The killed instance is
   then started again (it follows).
2. Once, the leader's rounds process is frozen (SIGSTOP: its host still answers TCP, so only
   PostgreSQL's ``idle_session_timeout`` on the lock session ends it), measured the same way,
   then thawed (SIGCONT): it must find its session gone and follow.

Prints each takeover next to its bound from the settings (``leases.leader_retry_s``, the lock
session's idle timeout, ``cvmc.coordinator.adapters.pg_leader``), the heartbeats answered and
failed, whether every heartbeat answered 200 is in the database, and the load average (other
work on the machine slows everything). Asserts nothing.

Usage: python bench/coordinator_failover.py [--desktops 2000] [--rate 400] [--kills 3]
       [--workers 1] [--allocate-s 5] [--retry-s 2] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pg_scratch import scratch_database  # noqa: E402

from bench.coordinator_load import (  # noqa: E402
    DEFAULT_PG,
    Desk,
    free_port,
    read_reply,
    setup,
)
from cvmc.coordinator.adapters.pg_leader import (  # noqa: E402
    DEAD_AFTER_S,
    LEADER_KEY,
    idle_timeout_s,
)

_LEADER = text(
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.objid = :key AND l.granted"
).bindparams(key=LEADER_KEY)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Instance:
    """One ``serve`` (with its workers) on its own port, over the shared database."""

    def __init__(self, name: str, config: Path, workers: int, log: Path) -> None:
        self.name, self.config, self.workers, self.log = name, config, workers, log
        self.port = int(config.read_text().split("listen_port = ")[1].split()[0])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cvmc.coordinator.entrypoints.cli",
                    "--config",
                    str(self.config),
                    "serve",
                    "--workers",
                    str(self.workers),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def owns(self, pid: int) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        with contextlib.suppress(psutil.NoSuchProcess):
            return any(p.pid == self.proc.pid for p in psutil.Process(pid).parents())
        return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


def leader_pid(engine: Engine) -> int | None:
    with engine.connect() as conn:
        name = conn.execute(_LEADER).scalar()
    return int(str(name).rsplit(":", 1)[1]) if name else None


def last_round(engine: Engine) -> float:
    with engine.connect() as conn:
        return float(conn.execute(text("SELECT coalesce(max(at), 0) FROM samples")).scalar() or 0)


def wait_rounds_sessions(engine: Engine, count: int, timeout: float = 120.0) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'cvmc-rounds:%' "
        "AND datname = current_database()"
    )
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with engine.connect() as conn:
            if conn.execute(query).scalar() == count:
                return
        time.sleep(0.1)
    raise RuntimeError(f"fewer than {count} rounds processes after {timeout:.0f} s")


def takeover(engine: Engine, old: int, since_wall: float, timeout: float) -> tuple[float, float]:
    """Seconds until a session other than ``old``'s holds the lock, and until a round of the
    new leader committed (a sample written after ``since_wall``)."""
    start = time.monotonic()
    locked = float("nan")
    while time.monotonic() - start < timeout:
        pid = leader_pid(engine)
        if locked != locked and pid is not None and pid != old:  # noqa: PLR0124 - NaN
            locked = time.monotonic() - start
        if locked == locked and last_round(engine) > since_wall:  # noqa: PLR0124 - NaN
            return locked, time.monotonic() - start
        time.sleep(0.01)
    return locked, float("nan")


class Load(threading.Thread):
    """Heartbeats at ``rate`` per second, each desktop to its instance, on a few keep-alive
    connections per instance; counts answers and keeps each desktop's highest 200."""

    def __init__(self, instances: list[Instance], desks: list[Desk], rate: float) -> None:
        super().__init__(daemon=True)
        self.instances, self.desks, self.rate = instances, desks, rate
        self.stop = threading.Event()
        self.acked: dict[str, int] = {}
        self.answers: Counter[str] = Counter()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        queues: list[asyncio.Queue[Desk]] = [asyncio.Queue() for _ in self.instances]

        async def feed() -> None:
            start, i = time.perf_counter(), 0
            while not self.stop.is_set():
                delay = start + i / self.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                desk = self.desks[i % len(self.desks)]
                queue = queues[(i % len(self.desks)) % len(queues)]
                if queue.qsize() < 200:  # a dead instance's desktops wait, not pile up
                    queue.put_nowait(desk)
                i += 1

        async def worker(port: int, queue: asyncio.Queue[Desk]) -> None:
            writer: asyncio.StreamWriter | None = None
            while not self.stop.is_set():
                try:
                    desk = await asyncio.wait_for(queue.get(), timeout=0.2)
                except TimeoutError:
                    continue
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(desk.request(f"127.0.0.1:{port}"))
                    status, body = await read_reply(reader)
                except (OSError, asyncio.IncompleteReadError):
                    self.answers["no answer"] += 1
                    if writer is not None:
                        writer.close()
                    writer = None
                    await asyncio.sleep(0.05)
                    continue
                self.answers[str(status)] += 1
                if status == 200:
                    desk.leases = json.loads(body)["leases"]
                    self.acked[desk.id] = max(self.acked.get(desk.id, 0), desk.seq)
            if writer is not None:
                writer.close()

        await asyncio.gather(
            feed(),
            *(
                worker(instance.port, queue)
                for instance, queue in zip(self.instances, queues, strict=True)
                for _ in range(4)
            ),
        )


def run(args: argparse.Namespace) -> None:  # noqa: PLR0915 - one measured story
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cvmc-failover-")))
        url = stack.enter_context(scratch_database(args.postgres_url))
        config, creds = setup(work, url, args.desktops, free_port())
        base = config.read_text().replace(
            "[leases]\nallocate_s = 5\n",
            f"[leases]\nallocate_s = {args.allocate_s}\nleader_retry_s = {args.retry_s}\n",
        )
        base = base.replace("[server]\n", "[server]\ndesktop_rate_per_s = 1000.0\n")
        instances = []
        for name in ("a", "b"):
            path = work / f"{name}.toml"
            path.write_text(re.sub(r"listen_port = \d+", f"listen_port = {free_port()}", base))
            instances.append(Instance(name, path, args.workers, work / f"{name}.log"))
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        stack.callback(engine.dispose)
        for instance in instances:
            instance.start()
            stack.callback(instance.stop)
        wait_rounds_sessions(engine, 2 * args.workers)
        idle = idle_timeout_s(args.allocate_s, args.retry_s)
        print(
            f"coordinator failover: 2 instances x {args.workers} worker(s), {args.desktops} "
            f"desktops, {args.rate:.0f} heartbeats/s; allocate_s {args.allocate_s}, "
            f"leader_retry_s {args.retry_s}, lock session idle timeout {idle:.0f} s, "
            f"keepalives dead after {DEAD_AFTER_S} s; {os.cpu_count()} CPUs, "
            f"load average {loadavg()}"
        )
        desks = [Desk(d, c) for d, c in creds]
        load = Load(instances, desks, args.rate)
        load.start()
        time.sleep(3)
        results: list[tuple[str, float, float, float]] = []
        for n in range(args.kills + 1):
            frozen = n == args.kills
            old = leader_pid(engine)
            while old is None:
                time.sleep(0.1)
                old = leader_pid(engine)
            (victim,) = [i for i in instances if i.owns(old)]
            since = time.time()
            if frozen:
                os.kill(old, signal.SIGSTOP)
                bound = idle + args.retry_s
            else:
                assert victim.proc is not None
                victim.proc.send_signal(signal.SIGKILL)
                bound = args.retry_s
            locked, resumed = takeover(engine, old, since, timeout=bound + 60)
            what = "SIGSTOP rounds" if frozen else "SIGKILL serve"
            results.append((what, locked, resumed, bound))
            print(
                f"  {what} of {victim.name}: lock taken after {locked:5.2f} s, a round of "
                f"the new leader after {resumed:5.2f} s (bound {bound:.1f} s + a round); "
                f"load average {loadavg()}"
            )
            if frozen:
                os.kill(old, signal.SIGCONT)
            else:
                victim.proc.wait(30)  # type: ignore[union-attr]
                victim.start()
                wait_rounds_sessions(engine, 2 * args.workers)
            time.sleep(2)
        time.sleep(args.allocate_s + 1)  # the thawed one's next round: it must follow
        load.stop.set()
        load.join(30)
        with engine.connect() as conn:
            seqs: dict[str, int] = {
                str(d): int(q) for d, q in conn.execute(text("SELECT id, last_seq FROM desktops"))
            }
        lost = [d for d, seq in load.acked.items() if seqs.get(d, 0) < seq]
        answers = ", ".join(f"{k} x{v}" for k, v in load.answers.most_common())
        print(f"  heartbeats: {answers}; answered 200 but not in the database: {len(lost)}")
        stepped_down = sum(
            "stopped leading the allocation rounds" in i.log.read_text(errors="replace")
            for i in instances
        )
        print(f"  instances whose log says a process stopped leading: {stepped_down}")
        kills = [r for r in results if r[0].startswith("SIGKILL")]
        if kills:
            worst = max(r[2] for r in kills)
            print(f"  SIGKILL takeovers: worst {worst:.2f} s to a new round over {len(kills)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--desktops", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=400.0, help="heartbeats/s, both together")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs of the leader")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers of each instance")
    parser.add_argument("--allocate-s", type=float, default=5.0)
    parser.add_argument("--retry-s", type=float, default=2.0)
    parser.add_argument(
        "--postgres-url", default=os.environ.get("CVMC_TEST_POSTGRES_URL", DEFAULT_PG)
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
