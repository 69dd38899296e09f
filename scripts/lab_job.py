"""`make lab-job`, second half: submit the seed's job in the lab and follow it to its output.

playbooks/lab_job.yml has prepared the jobs on the submit node and written the manifest
(~/.cache/desktop-grid/lab-job.json). This script, as the unprivileged researcher on the submit
node (through `podman exec`, as Ansible reaches the lab's containers):

1. removes the lab-job jobs a previous run left in the queue (they carry `lab_job = True`);
2. submits the seed's job, a job for a VM type with no running VM, and a job without vm_name;
3. waits, with a progress line, until the seed's job and the unnamed job complete;
4. prints where each ran and the seed job's output file;
5. checks that the job with no VM stays idle and that the coordinator shows it as demand, in
   /metrics and on the dashboard, read through nginx with the lab CA, as a user would.

Exit status 0 when all of that holds, 1 otherwise (with what did not).
Standard library only; run with any Python 3.11.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MANIFEST = Path.home() / ".cache/desktop-grid/lab-job.json"
TIMEOUT_S = 600
DEMAND_TIMEOUT_S = 150  # the coordinator reads demand every grid_coordinator_demand_poll_s (30 s)
IDLE, RUNNING, COMPLETED = 1, 2, 4
STATUS = {1: "idle", 2: "running", 3: "removed", 4: "completed", 5: "held", 6: "transferring"}


class LabJobError(RuntimeError):
    """Something the lab job promises did not happen; the message says what."""


def on_submit(m: dict[str, Any], *argv: str, check: bool = True) -> str:
    """Run ``argv`` as the researcher in the job directory on the submit node; its stdout."""
    cmd = ["podman", "exec", "--user", m["user"], "--workdir", m["dir"], m["submit_host"], *argv]
    proc = subprocess.run(  # noqa: S603 - a fixed podman argv, no shell
        cmd, capture_output=True, text=True, check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise LabJobError(f"{' '.join(argv)} on {m['submit_host']}: {proc.stderr.strip()}")
    return proc.stdout


def submit(m: dict[str, Any], sub: str) -> int:
    out = on_submit(m, "condor_submit", "-terse", sub)
    return int(out.split(".")[0])


def job_states(m: dict[str, Any], clusters: list[int]) -> dict[int, tuple[int, str]]:
    """JobStatus and the slot of each cluster, from the queue, then from the history."""
    states: dict[int, tuple[int, str]] = {}
    wanted = " || ".join(f"ClusterId == {c}" for c in clusters)
    for tool in ("condor_q", "condor_history"):
        out = on_submit(
            m,
            tool,
            "-constraint",
            wanted,
            "-af",
            "ClusterId",
            "JobStatus",
            "RemoteHost",
            "LastRemoteHost",
        )
        for line in out.splitlines():
            cluster, status, remote, last = (line.split() + ["undefined"] * 4)[:4]
            if int(cluster) not in states:
                host = remote if remote != "undefined" else last
                states[int(cluster)] = (int(status), "" if host == "undefined" else host)
    return states


_last_print = [-1.0]


def progress(text: str, elapsed: float) -> None:
    """One line that updates in place on a terminal; a line every 10 s in a log."""
    line = f"[{elapsed:5.0f} s] {text}"
    if sys.stdout.isatty():
        print("\r" + line.ljust(110), end="", flush=True)
    elif elapsed - _last_print[0] >= 10:
        _last_print[0] = elapsed
        print(line, flush=True)


class _LabHttps(http.client.HTTPSConnection):
    """HTTPS to a lab container's address, verified for the coordinator's name (its certificate)."""

    def __init__(self, address: str, name: str, context: ssl.SSLContext) -> None:
        super().__init__(name, 443, timeout=10, context=context)
        self._address = address
        self._ssl = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, 443), timeout=self.timeout)
        self.sock = self._ssl.wrap_socket(sock, server_hostname=self.host)


def coordinator_get(m: dict[str, Any], path: str) -> str:
    """GET ``path`` from the coordinator through nginx, verified against the lab CA."""
    context = ssl.create_default_context(cafile=m["coordinator_ca"])
    name = m["coordinator_url"].split("://", 1)[1].split("/")[0]
    conn = _LabHttps(m["coordinator_address"], name, context)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read(4 * 1024 * 1024).decode("utf-8", "replace")
    finally:
        conn.close()
    if resp.status != 200:
        raise LabJobError(f"{m['coordinator_url']}{path}: HTTP {resp.status}")
    return body


def demand_shown(m: dict[str, Any]) -> tuple[int, int]:
    """The idle type's demand in /metrics and on the dashboard."""
    metric = re.search(
        r'^cvmc_demand_jobs\{[^}]*vm_name="' + re.escape(m["idle_type"]) + r'"[^}]*\}\s+([0-9.]+)',
        coordinator_get(m, "/metrics"),
        re.M,
    )
    row = re.search(
        r"<tr><td>" + re.escape(m["idle_type"]) + r"</td><td>([0-9]+)</td>",
        coordinator_get(m, "/"),
    )
    return (int(float(metric.group(1))) if metric else 0, int(row.group(1)) if row else 0)


def main() -> int:
    if not MANIFEST.is_file():
        print(
            f"lab-job: {MANIFEST} is missing; run `make lab-job`, "
            "which runs playbooks/lab_job.yml first"
        )
        return 1
    m = json.loads(MANIFEST.read_text())
    start = time.monotonic()
    # A previous run's jobs go first; condor_rm fails when there is none, which is fine.
    on_submit(m, "condor_rm", "-constraint", "lab_job =?= True", check=False)
    seed = submit(m, "seed-job.sub")
    idle = submit(m, "idle-job.sub")
    unnamed = submit(m, "unnamed-job.sub")
    print(
        f"submitted as {m['user']} on {m['submit_host']}: seed job {seed} "
        f"(vm_name {m['running_type']}), job {idle} (vm_name {m['idle_type']}, no VM runs it), "
        f"job {unnamed} (no vm_name)"
    )
    while True:
        elapsed = time.monotonic() - start
        states = job_states(m, [seed, idle, unnamed])
        text = " | ".join(
            f"{label} {STATUS.get(states.get(c, (0, ''))[0], '?')}"
            + (f" on {states[c][1]}" if c in states and states[c][1] else "")
            for label, c in (("seed job", seed), ("no-VM job", idle), ("unnamed job", unnamed))
        )
        progress(text, elapsed)
        if all(states.get(c, (0, ""))[0] == COMPLETED for c in (seed, unnamed)):
            break
        if elapsed > TIMEOUT_S:
            print()
            raise LabJobError(f"the jobs did not complete in {TIMEOUT_S} s: {text}")
        time.sleep(2)
    print()
    for label, c in (("seed job", seed), ("unnamed job", unnamed)):
        print(f"{label} {c} ran on {states[c][1]}")
    print(f"--- seed job's stdout (seed-job.out)\n{on_submit(m, 'cat', 'seed-job.out').strip()}")
    print(f"--- seed job's output file (output.txt)\n{on_submit(m, 'cat', 'output.txt').strip()}")
    print(f"--- unnamed job's stdout\n{on_submit(m, 'cat', 'unnamed-job.out').strip()}")
    for label, c in (("seed job", seed), ("unnamed job", unnamed)):
        if not states[c][1].endswith("@" + m["vm_host"]):
            raise LabJobError(f"the {label} ran on {states[c][1]!r}, not on {m['vm_host']}")

    while True:
        try:
            shown = demand_shown(m)
        except (LabJobError, OSError) as exc:  # the coordinator restarting: try again
            print(f"\n({exc}; trying again)")
            shown = (0, 0)
        status = job_states(m, [idle])[idle][0]
        progress(
            f"job {idle} {STATUS.get(status, '?')}; coordinator demand for "
            f"{m['idle_type']}: /metrics {shown[0]}, dashboard {shown[1]}",
            time.monotonic() - start,
        )
        if status != IDLE:
            print()
            raise LabJobError(f"job {idle} for {m['idle_type']} is {STATUS.get(status)}, not idle")
        if min(shown) >= 1:
            break
        if time.monotonic() - start > TIMEOUT_S + DEMAND_TIMEOUT_S:
            print()
            raise LabJobError(f"the coordinator did not show job {idle} as demand")
        time.sleep(3)
    print()
    print(
        f"job {idle} stays idle (no VM of {m['idle_type']} runs); the coordinator shows it as "
        f'demand: /metrics cvmc_demand_jobs{{vm_name="{m["idle_type"]}"}} {shown[0]}, '
        f"dashboard {shown[1]}"
    )
    print(
        f"see it at {m['coordinator_url']}/ (CA: {m['coordinator_ca']}); "
        f"`make lab-job` again removes it first"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (LabJobError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"\nlab-job: {exc}", file=sys.stderr)
        sys.exit(1)
