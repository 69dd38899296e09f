"""`make lab-job`, second half: the seed's job, from a coordinator lease to its output in a VM.

playbooks/lab_job.yml has prepared the jobs on the submit node and written the manifest
(~/.cache/desktop-grid/lab-job.json). This script drives the lab as its users would, through
`podman exec` (as Ansible reaches the lab's containers), and follows each step:

1. removes the lab-job jobs a previous run left in the queue (they carry `lab_job = True`),
   ends an owner session a previous run left open, and waits until that run's VMs are gone;
2. as the unprivileged researcher on the submit node, submits the seed's job (`+vm_name`), a
   job for a VM type that has no image (it stays idle and shows as demand), a job without
   vm_name, and a probe job that tries the campus LAN from inside the VM;
3. waits for the coordinator's lease to reach a desktop's agent (the agent's status file), for
   the VM's slot in the collector (the VM started from the signed image under QEMU, dialled the
   gateway and joined through CCB), and for the seed, unnamed and probe jobs to complete; prints
   where each ran and the seed job's output;
4. submits a long job for the same VM type, waits until it runs, then opens an owner session
   on that desktop (a real logind session through PAM, on a pseudo-terminal) and waits until
   the VM is stopped, its slot has left the collector, the lease is released and the job is
   idle again; then ends the session and removes the job;
5. checks that the job with no image stays idle and that the coordinator shows it as demand, in
   /metrics and on the dashboard, read through nginx with the lab CA, as a user would.

`make lab-suspend` runs it with ``--suspend`` instead: suspend instead of shut down
(``grid_policy.suspend_minutes``) in the real pool. It runs the desktops' play
(playbooks/desktops.yml) with the lab's policy plus ``suspend_minutes``, submits a job that
runs 150 s in a VM, logs the owner on to that VM's desktop (the VM is saved: QEMU is gone, the
job stays running in the schedd), logs them off after ``SUSPEND_HOLD_S`` (the VM resumes), and
checks that the job completes having started once, its output one run's; then it runs the
desktops' play again without the setting.

Each step's time is printed, and written to ~/.cache/desktop-grid/lab-job-figures.json
(bench/lab_job.py reads it; `--suspend` writes lab-suspend-figures.json). Exit status 0 when
all of that holds, 1 otherwise (with what did not). Standard library only; run with any Python 3.11.
"""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

CACHE = Path.home() / ".cache/desktop-grid"
MANIFEST = CACHE / "lab-job.json"
FIGURES = CACHE / "lab-job-figures.json"
SUSPEND_FIGURES = CACHE / "lab-suspend-figures.json"
ROOT = Path(__file__).resolve().parents[1]
#: The lab's `make lab-suspend`: minutes a saved VM is kept, and how long the owner stays.
SUSPEND_MINUTES = 5
SUSPEND_HOLD_S = 30
TIMEOUT_S = 900  # a cold image download and a TCG boot fit in this
VACATE_TIMEOUT_S = 120
DEMAND_TIMEOUT_S = 150  # the coordinator reads demand every grid_coordinator_demand_poll_s (30 s)
IDLE, RUNNING, COMPLETED = 1, 2, 4
STATUS = {1: "idle", 2: "running", 3: "removed", 4: "completed", 5: "held", 6: "transferring"}
OWNER_UNIT = "lab-owner-logon"
T = TypeVar("T")


class LabJobError(RuntimeError):
    """Something the lab job promises did not happen; the message says what."""


def on_host(
    host: str,
    *argv: str,
    user: str | None = None,
    workdir: str | None = None,
    check: bool = True,
) -> str:
    """Run ``argv`` in the lab container ``host`` (as ``user``); its stdout."""
    cmd = ["podman", "exec"]
    if user:
        cmd += ["--user", user]
    if workdir:
        cmd += ["--workdir", workdir]
    proc = subprocess.run(  # noqa: S603 - a fixed podman argv, no shell
        [*cmd, host, *argv], capture_output=True, text=True, check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise LabJobError(f"{' '.join(argv)} on {host}: {proc.stderr.strip()}")
    return proc.stdout


def on_submit(m: dict[str, Any], *argv: str, check: bool = True) -> str:
    """Run ``argv`` as the researcher in the job directory on the submit node."""
    return on_host(m["submit_host"], *argv, user=m["user"], workdir=m["dir"], check=check)


def submit(m: dict[str, Any], sub: str) -> int:
    out = on_submit(m, "condor_submit", "-terse", sub)
    return int(out.split(".")[0])


def job_states(m: dict[str, Any], clusters: list[int]) -> dict[int, tuple[int, str, str]]:
    """JobStatus, the slot and the startd's address of each cluster, from the queue, then from
    the history. The address is the one the schedd authenticated the startd at (the IP in
    StartdPrincipal, `execute-side@matchsession/<ip>`): the VM's tunnel address, which the
    gateway pins per VM, whatever name the VM gives its slots."""
    states: dict[int, tuple[int, str, str]] = {}
    wanted = " || ".join(f"ClusterId == {c}" for c in clusters)
    for tool in ("condor_q", "condor_history"):
        out = on_submit(
            m, tool, "-constraint", wanted, "-af", "ClusterId", "JobStatus", "RemoteHost",
            "LastRemoteHost", "StartdPrincipal",
        )  # fmt: skip
        for line in out.splitlines():
            cluster, status, remote, last, principal = (line.split() + ["undefined"] * 5)[:5]
            if int(cluster) not in states:
                host = remote if remote != "undefined" else last
                address = principal.rsplit("/", 1)[-1] if "/" in principal else ""
                states[int(cluster)] = (
                    int(status),
                    "" if host == "undefined" else host,
                    address,
                )
    return states


def agent_status(m: dict[str, Any], desktop: str) -> dict[str, Any]:
    """The agent's status file on ``desktop`` (`cvmc status`'s source), or {} while it has none."""
    raw = on_host(desktop, "cat", m["agent_status_file"], check=False)
    try:
        status = json.loads(raw)
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def leased_slot(m: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The first desktop slot that holds a lease for the running type."""
    for desktop in m["desktops"]:
        for slot in agent_status(m, desktop).get("slots", []):
            if slot.get("lease_id") and slot.get("vm_name") == m["running_type"]:
                return desktop, slot
    return None


def lab_vms(m: dict[str, Any]) -> dict[str, str]:
    """The lab desktops' VM tunnel addresses, each with its desktop."""
    return {
        address: desktop for desktop, slots in m["addresses"].items() for address in slots.values()
    }


def pool_slots(m: dict[str, Any]) -> dict[str, str]:
    """The VMs with a slot of the running type in the collector, by tunnel address, each with
    its desktop: a slot counts when its startd's address (MyAddress) is one of the lab
    desktops' VM tunnel addresses."""
    out = on_submit(
        m, "condor_status", "-constraint", f'vm_name =?= "{m["running_type"]}"',
        "-af", "Name", "MyAddress",
    )  # fmt: skip
    found = {}
    for line in out.splitlines():
        _, _, my_address = line.partition(" ")
        for address, desktop in lab_vms(m).items():
            if f"<{address}:" in my_address:
                found[address] = desktop
    return found


def qemu_running(desktop: str) -> bool:
    return bool(on_host(desktop, "pgrep", "-f", "qemu-system", check=False).strip())


_last_print = [-1.0]


def progress(text: str, elapsed: float) -> None:
    """One line that updates in place on a terminal; a line every 10 s in a log."""
    line = f"[{elapsed:5.0f} s] {text}"
    if sys.stdout.isatty():
        print("\r" + line.ljust(110), end="", flush=True)
    elif elapsed - _last_print[0] >= 10:
        _last_print[0] = elapsed
        print(line, flush=True)


def wait(
    what: str, probe: Callable[[], T | None], timeout: float, show: Callable[[], str]
) -> tuple[T, float]:
    """Poll ``probe`` until it returns something; that and the seconds it took."""
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        found = probe()
        if found is not None and found is not False:
            return found, elapsed
        progress(f"{what}: {show()}", elapsed)
        if elapsed > timeout:
            print()
            raise LabJobError(f"{what}: not within {timeout:.0f} s ({show()})")
        time.sleep(0.5)


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


def type_metric(metrics: str, name: str, vm_name: str) -> int:
    """The sample of ``name{vm_name="..."}`` in a /metrics text, or 0 when it has none."""
    found = re.search(
        "^"
        + re.escape(name)
        + r'\{[^}]*vm_name="'
        + re.escape(vm_name)
        + r'"[^}]*\}\s+([0-9.e+]+)',
        metrics,
        re.M,
    )
    return int(float(found.group(1))) if found else 0


def demand_shown(m: dict[str, Any]) -> tuple[int, int, str]:
    """The idle type's demand in /metrics and on the dashboard, and the dashboard's why."""
    metric = type_metric(coordinator_get(m, "/metrics"), "cvmc_demand_jobs", m["idle_type"])
    # The VM types' table: name, why (after its status dot), demand, ...
    row = re.search(
        r'<tr class="status-[a-z]+"><td>'
        + re.escape(m["idle_type"])
        + r'</td><td class="why"><span [^>]*></span>([^<]*)</td><td>([0-9]+)</td>',
        coordinator_get(m, "/"),
    )
    if row is None:
        return (metric, 0, "")
    return (metric, int(row.group(2)), html.unescape(row.group(1)))


def vms_with_jobs(m: dict[str, Any]) -> int:
    """The running type's leased VMs that run a job, in the coordinator's /metrics."""
    return type_metric(coordinator_get(m, "/metrics"), "cvmc_vms_with_jobs", m["running_type"])


def campus_drops(m: dict[str, Any]) -> int:
    """The gateway's "never the campus LAN" drop counter."""
    out = on_host(m["gateway_host"], "nft", "list", "chain", "inet", "grid_gateway", "forward")
    found = re.search(r'packets ([0-9]+) bytes [0-9]+ drop comment "never the campus LAN"', out)
    if not found:
        raise LabJobError(f"{m['gateway_host']}: no campus drop rule in the forward chain")
    return int(found.group(1))


def end_owner_session(m: dict[str, Any], desktop: str) -> None:
    """Log the owner off ``desktop``: stop the logon's unit, then end the logind session, whose
    scope holds the processes pam_systemd moved there (stopping the unit leaves them)."""
    on_host(desktop, "systemctl", "stop", f"{OWNER_UNIT}.service", check=False)
    on_host(desktop, "loginctl", "terminate-user", m["owner_user"], check=False)

    def no_session() -> bool | None:
        listed = on_host(desktop, "loginctl", "list-sessions", "--no-legend", check=False)
        return not any(m["owner_user"] in line.split() for line in listed.splitlines()) or None

    wait(f"the owner's session on {desktop} ended", no_session, VACATE_TIMEOUT_S, lambda: "open")


def end_owner_sessions(m: dict[str, Any]) -> None:
    for desktop in m["desktops"]:
        end_owner_session(m, desktop)


def run_jobs(m: dict[str, Any], figures: dict[str, float]) -> int:
    """Steps 2 and 3: the jobs, from lease to output. The idle job's cluster."""
    start = time.monotonic()
    drops_before = campus_drops(m)
    seed = submit(m, "seed-job.sub")
    idle = submit(m, "idle-job.sub")
    unnamed = submit(m, "unnamed-job.sub")
    probe = submit(m, "probe-job.sub")
    print(
        f"submitted as {m['user']} on {m['submit_host']}: seed job {seed} "
        f"(vm_name {m['running_type']}), job {idle} (vm_name {m['idle_type']}, which has no "
        f"image), job {unnamed} (no vm_name), probe job {probe} (tries the campus LAN)"
    )
    jobs = (("seed job", seed), ("unnamed job", unnamed), ("probe job", probe))

    def show() -> str:
        states = job_states(m, [c for _, c in jobs])
        return " | ".join(
            f"{label} {STATUS.get(states.get(c, (0, '', ''))[0], '?')}" for label, c in jobs
        )

    (desktop, slot), figures["submit_to_lease_s"] = wait(
        "a lease for " + m["running_type"], lambda: leased_slot(m), TIMEOUT_S, show
    )
    address = m["addresses"][desktop][str(slot["slot"])]
    print(
        f"\n{desktop}'s agent holds lease {slot['lease_id']} for {m['running_type']} in slot "
        f"{slot['slot']} after {figures['submit_to_lease_s']:.1f} s"
    )
    vms, figures["lease_to_slot_s"] = wait(
        "a VM's slot in the collector", lambda: pool_slots(m) or None, TIMEOUT_S, show
    )
    figures["accel_kvm"] = float(
        "accel=kvm" in on_host(desktop, "pgrep", "-a", "-f", "qemu-system", check=False)
    )
    print(
        f"\na VM ({'KVM' if figures['accel_kvm'] else 'TCG'}) joined the pool from its tunnel "
        f"address after {figures['lease_to_slot_s']:.1f} s: "
        f"{', '.join(f'{a} on {d}' for a, d in vms.items())} (slot {slot['slot']} of {desktop} "
        f"is at {address})"
    )

    def all_done() -> dict[int, tuple[int, str, str]] | None:
        states = job_states(m, [c for _, c in jobs])
        return states if all(states.get(c, (0, "", ""))[0] == COMPLETED for _, c in jobs) else None

    states, _ = wait("the jobs", all_done, TIMEOUT_S, show)
    figures["submit_to_done_s"] = time.monotonic() - start
    print()
    for label, c in jobs:
        print(f"{label} {c} ran on {states[c][1]}, a VM at {states[c][2] or '?'}")
    print(f"--- seed job's stdout (seed-job.out)\n{on_submit(m, 'cat', 'seed-job.out').strip()}")
    print(f"--- seed job's output file (output.txt)\n{on_submit(m, 'cat', 'output.txt').strip()}")
    print(f"--- unnamed job's stdout\n{on_submit(m, 'cat', 'unnamed-job.out').strip()}")
    print(f"--- probe job's stdout\n{on_submit(m, 'cat', 'probe-job.out').strip()}")
    for label, c in jobs:
        if states[c][2] not in lab_vms(m):
            raise LabJobError(
                f"the {label} ran on {states[c][1]!r} at {states[c][2]!r}, not in a lab desktop's "
                f"VM ({', '.join(lab_vms(m))})"
            )
    if "campus unreachable" not in on_submit(m, "cat", "probe-job.out"):
        raise LabJobError("the probe job reached the campus LAN from the research VM")
    dropped = campus_drops(m) - drops_before
    if dropped < 1:
        raise LabJobError("the gateway's campus drop rule did not count the probe's packets")
    print(f"the gateway dropped {dropped} packet(s) of the probe to the campus LAN")
    return idle


def wait_for_no_vms(m: dict[str, Any], what: str) -> None:
    """Wait until no desktop runs a VM (the coordinator revokes leases above demand)."""
    if any(qemu_running(d) for d in m["desktops"]):
        wait(
            what,
            lambda: not any(qemu_running(d) for d in m["desktops"]) or None,
            TIMEOUT_S,
            lambda: f"VMs on {', '.join(d for d in m['desktops'] if qemu_running(d))}",
        )
        print()


def open_owner_session(m: dict[str, Any], desktop: str) -> None:
    """Log the owner on to ``desktop`` through PAM on a pseudo-terminal, as over SSH: `su -l`
    under `script`. logind records it as CLASS=user, TYPE=tty (systemd 252 and 257 alike). A
    PAM session without a terminal (systemd-run -p PAMName=login) is CLASS=background, which is
    not an owner."""
    on_host(
        desktop, "systemd-run", f"--unit={OWNER_UNIT}", "--collect",
        "script", "-qec", f"su -l {m['owner_user']} -c 'sleep infinity'", "/dev/null",
    )  # fmt: skip


def job_in_vm(m: dict[str, Any], job: int) -> tuple[str, str] | None:
    """(tunnel address, desktop) of the VM that runs ``job``, once it runs in a lab VM."""
    status, _, address = job_states(m, [job]).get(job, (0, "", ""))
    desktop = pool_slots(m).get(address) if status == RUNNING else None
    return (address, desktop) if desktop else None


def job_label(m: dict[str, Any], job: int, label: str) -> Callable[[], str]:
    def show() -> str:
        status, host, _ = job_states(m, [job]).get(job, (0, "", ""))
        return f"{label} {STATUS.get(status, '?')}" + (f" on {host}" if host else "")

    return show


def logon_vacates(m: dict[str, Any], figures: dict[str, float]) -> None:
    """Step 4: a long job on a VM, then an owner's logon takes that VM out of the pool."""
    # The first jobs' VMs leave first, once the coordinator sees their demand gone. Otherwise
    # the long job may be matched to a VM whose lease the coordinator revokes as above demand
    # in the same moment: between the match and the job's start the schedd does not yet name
    # the job's VM (docs/coordinator.md, "Trim"), and the VM would stop for that, not for the
    # owner.
    wait_for_no_vms(m, "the first jobs' VMs stopping")
    long_job = submit(m, "long-job.sub")
    print(f"submitted long job {long_job} (vm_name {m['running_type']})")

    long_state = job_label(m, long_job, "long job")
    (vm_address, desktop), _ = wait(
        "the long job running in a VM", lambda: job_in_vm(m, long_job), TIMEOUT_S, long_state
    )
    # The coordinator names the VM that runs it: the schedd's StartdPrincipal address, mapped
    # through the address plan to the desktop and slot of a lease (the trim keeps such VMs).
    t_running = time.monotonic()
    wait(
        "the coordinator seeing the VM run the job",
        lambda: vms_with_jobs(m) >= 1 or None,
        TIMEOUT_S,
        long_state,
    )
    figures["job_running_to_vm_with_job_s"] = round(time.monotonic() - t_running, 1)
    print(
        f"\nthe coordinator counts the VM at {vm_address} as running a job "
        f"(cvmc_vms_with_jobs) after {figures['job_running_to_vm_with_job_s']:.1f} s"
    )

    # The agent's RSS, and its CPU over 20 s while the VM runs (the growth of its CPU time in
    # /proc, in clock ticks, not ps's lifetime average); QEMU's beside it.
    def usage(comm: str) -> tuple[float, float]:
        """(RSS in MiB, CPU seconds) of the process named ``comm`` on the desktop, or zeros."""
        raw = on_host(
            desktop, "sh", "-c", f"p=$(pgrep -o -x {comm}) && cat /proc/$p/stat", check=False
        )
        fields = raw.rsplit(")", 1)[-1].split()
        if not raw.split(" ", 1)[0].isdigit() or len(fields) < 22:
            return (0.0, 0.0)
        # After the command: state is field 3, utime 14, stime 15, rss 24 (proc(5)).
        return int(fields[21]) * 4096 / 2**20, (int(fields[11]) + int(fields[12])) / 100

    vm_process = on_host(desktop, "pgrep", "-a", "-f", "qemu-system", check=False)
    qemu_comm = re.search(r"process=(cvmc-slot[0-9]+)", vm_process)
    comms = ("cvmc", qemu_comm.group(1) if qemu_comm else "qemu-system-x86")
    first, t_first = [usage(c) for c in comms], time.monotonic()
    time.sleep(20)
    second, t_second = [usage(c) for c in comms], time.monotonic()
    span = t_second - t_first
    if first[0][0] and second[0][0]:
        figures["agent_rss_mib"] = round(second[0][0], 1)
        figures["agent_cpu_percent"] = round(100 * (second[0][1] - first[0][1]) / span, 2)
    if first[1][0] and second[1][0]:
        figures["qemu_rss_mib"] = round(second[1][0], 1)
        figures["qemu_cpu_percent"] = round(100 * (second[1][1] - first[1][1]) / span, 1)
    print(
        f"\nthe long job runs; the owner of {desktop} logs on ({m['owner_user']}, `su -l` on a pty)"
    )
    open_owner_session(m, desktop)
    t0 = time.monotonic()
    _, figures["logon_to_vm_stopped_s"] = wait(
        "the VM stopped", lambda: (not qemu_running(desktop)) or None, VACATE_TIMEOUT_S, long_state
    )
    wait(
        "the VM's slot gone from the collector",
        lambda: (vm_address not in pool_slots(m)) or None,
        VACATE_TIMEOUT_S,
        long_state,
    )
    figures["logon_to_slot_gone_s"] = time.monotonic() - t0
    wait(
        "the lease released",
        lambda: (
            all(not s.get("lease_id") for s in agent_status(m, desktop).get("slots", [])) or None
        ),
        VACATE_TIMEOUT_S,
        long_state,
    )
    wait(
        "the long job idle again",
        lambda: job_states(m, [long_job]).get(long_job, (0, "", ""))[0] == IDLE or None,
        VACATE_TIMEOUT_S,
        long_state,
    )
    figures["logon_to_job_idle_s"] = time.monotonic() - t0
    print(
        f"\nlogon → VM stopped {figures['logon_to_vm_stopped_s']:.1f} s, slot gone from the pool "
        f"{figures['logon_to_slot_gone_s']:.1f} s, job {long_job} idle again "
        f"{figures['logon_to_job_idle_s']:.1f} s; the agent says: "
        f"{agent_status(m, desktop).get('policy')}"
    )
    end_owner_session(m, desktop)
    on_submit(m, "condor_rm", str(long_job))


def demand_for_idle_type(m: dict[str, Any], idle: int) -> None:
    """Step 5: the job whose type has no image stays idle and shows as demand."""

    def shown() -> tuple[int, int, str] | None:
        try:
            found = demand_shown(m)
        except (LabJobError, OSError):  # the coordinator restarting: try again
            return None
        return found if min(found[:2]) >= 1 else None

    def state() -> str:
        status = job_states(m, [idle])[idle][0]
        if status != IDLE:
            raise LabJobError(f"job {idle} for {m['idle_type']} is {STATUS.get(status)}, not idle")
        return f"job {idle} idle"

    found, _ = wait("the coordinator showing the idle job", shown, DEMAND_TIMEOUT_S, state)
    print(
        f"\njob {idle} stays idle (no image of {m['idle_type']}); the coordinator shows it as "
        f'demand: /metrics cvmc_demand_jobs{{vm_name="{m["idle_type"]}"}} {found[0]}, '
        f"dashboard {found[1]} (why: {found[2]})"
    )


def desktops_play(extra: dict[str, Any] | None) -> None:
    """Run playbooks/desktops.yml on the lab, as central IT changes a setting: with ``extra``
    (extra variables), or without to put the inventory's settings back."""
    playbook = Path(sys.executable).parent / "ansible-playbook"
    argv = [str(playbook) if playbook.exists() else "ansible-playbook", "playbooks/desktops.yml"]
    if extra is not None:
        CACHE.mkdir(parents=True, exist_ok=True)
        path = CACHE / "lab-suspend-vars.json"
        path.write_text(json.dumps(extra) + "\n")
        argv += ["-e", f"@{path}"]
    print(f"running {' '.join(argv[1:])}", flush=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(  # noqa: S603 - a fixed argv, no shell
        argv, cwd=ROOT, capture_output=True, text=True, check=False, timeout=1800, env=env
    )
    recap = proc.stdout.rsplit("PLAY RECAP", 1)[-1].strip()
    print(recap)
    if proc.returncode != 0:
        raise LabJobError(f"{' '.join(argv[1:])} exited {proc.returncode}:\n{proc.stdout[-4000:]}")


def slot_state(m: dict[str, Any], desktop: str, lease_id: str) -> str:
    """The state of the agent's slot on ``desktop`` that holds ``lease_id`` ("" if none)."""
    for slot in agent_status(m, desktop).get("slots", []):
        if slot.get("lease_id") == lease_id:
            return str(slot.get("state", ""))
    return ""


def suspend_resumes(m: dict[str, Any], figures: dict[str, float]) -> None:
    """`make lab-suspend`: the owner's return saves the VM, their leaving resumes it, and the
    job that ran in it completes, started once."""
    wait_for_no_vms(m, "the lab's VMs stopping")
    job = 0
    try:
        # Inside the try: a play that fails half-way still has the inventory's settings put back.
        desktops_play({"grid_policy": {**m["grid_policy"], "suspend_minutes": SUSPEND_MINUTES}})
        job = submit(m, "suspend-job.sub")
        show = job_label(m, job, f"job {job}")
        print(f"submitted job {job} (150 s in a VM of {m['running_type']})")
        (address, desktop), _ = wait(
            "the job running in a VM", lambda: job_in_vm(m, job), TIMEOUT_S, show
        )
        index = next(int(i) for i, a in m["addresses"][desktop].items() if a == address)
        lease = next(
            (
                s["lease_id"]
                for s in agent_status(m, desktop).get("slots", [])
                if s.get("slot") == index and s.get("lease_id")
            ),
            None,
        )
        if lease is None:
            raise LabJobError(f"{desktop}'s agent shows no running lease for the VM at {address}")
        time.sleep(10)
        print(f"\njob {job} runs in the VM at {address} on {desktop}; the owner logs on")
        open_owner_session(m, desktop)
        t0 = time.monotonic()
        _, figures["logon_to_vm_saved_s"] = wait(
            "the VM saved",
            lambda: (
                (slot_state(m, desktop, lease) == "suspended" and not qemu_running(desktop)) or None
            ),
            VACATE_TIMEOUT_S,
            lambda: f"slot {slot_state(m, desktop, lease) or '?'}, {show()}",
        )
        saved = figures["logon_to_vm_saved_s"]
        print(f"\nlogon → VM saved {saved:.1f} s; the owner stays {SUSPEND_HOLD_S} s")
        time.sleep(SUSPEND_HOLD_S)
        status = job_states(m, [job]).get(job, (0, "", ""))[0]
        if status != RUNNING:
            raise LabJobError(f"job {job} is {STATUS.get(status, status)} while its VM is saved")
        end_owner_session(m, desktop)
        t1 = time.monotonic()
        _, figures["logoff_to_vm_running_s"] = wait(
            "the VM resumed",
            lambda: (slot_state(m, desktop, lease) == "running" and qemu_running(desktop)) or None,
            VACATE_TIMEOUT_S,
            lambda: f"slot {slot_state(m, desktop, lease) or '?'}, {show()}",
        )
        figures["saved_for_s"] = round(t1 - t0, 1)
        print(f"\nlogoff → VM running again {figures['logoff_to_vm_running_s']:.1f} s")
        _, figures["resume_to_job_done_s"] = wait(
            "the job completed",
            lambda: job_states(m, [job]).get(job, (0, "", ""))[0] == COMPLETED or None,
            TIMEOUT_S,
            show,
        )
        starts = on_submit(
            m, "condor_history", "-limit", "1", "-constraint", f"ClusterId == {job}",
            "-af", "NumJobStarts", "NumShadowStarts", "JobRunCount",
        ).split()  # fmt: skip
        output = on_submit(m, "cat", "suspend-job.out")
        log = on_submit(m, "cat", "suspend-job.log")
        print(f"\n--- job {job}'s stdout (suspend-job.out)\n{output.strip()}\n---")
        events = [e for e in ("Job disconnected", "Job reconnected") if e in log]
        print(
            f"NumJobStarts, NumShadowStarts, JobRunCount: {' '.join(starts)}; "
            f"its log: {', '.join(events) or 'no disconnection seen'}"
        )
        if starts[:1] != ["1"] or output.count("started on") != 1 or "finished on" not in output:
            raise LabJobError(
                f"job {job} did not run once through its VM's save and resume: "
                f"starts {starts}, output {output.strip()!r}"
            )
        print(
            f"job {job} completed, started once: its VM was saved {figures['saved_for_s']:.0f} s "
            "and resumed"
        )
    finally:
        end_owner_sessions(m)
        if job:
            on_submit(m, "condor_rm", str(job), check=False)
        desktops_play(None)


def main() -> int:
    if "--suspend" in sys.argv[1:]:
        if not MANIFEST.is_file():
            print(f"lab-job: {MANIFEST} is missing; run `make lab-suspend`")
            return 1
        m = json.loads(MANIFEST.read_text())
        figures: dict[str, float] = {}
        on_submit(m, "condor_rm", "-constraint", "lab_job =?= True", check=False)
        end_owner_sessions(m)
        suspend_resumes(m, figures)
        SUSPEND_FIGURES.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"figures: {json.dumps(figures)} (also in {SUSPEND_FIGURES})")
        return 0
    if not MANIFEST.is_file():
        print(
            f"lab-job: {MANIFEST} is missing; run `make lab-job`, "
            "which runs playbooks/lab_job.yml first"
        )
        return 1
    m = json.loads(MANIFEST.read_text())
    figures = {}
    # A previous run's jobs and owner session go first; condor_rm fails when there is none.
    on_submit(m, "condor_rm", "-constraint", "lab_job =?= True", check=False)
    end_owner_sessions(m)
    # A previous run's VMs leave once the coordinator sees their demand gone and revokes their
    # leases: each figure then starts from no VM at all.
    wait_for_no_vms(m, "the previous run's VMs stopping")
    idle = run_jobs(m, figures)
    logon_vacates(m, figures)
    demand_for_idle_type(m, idle)
    FIGURES.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"figures: {json.dumps(figures)} (also in {FIGURES})")
    print(
        f"see it at {m['coordinator_url']}/ (CA: {m['coordinator_ca']}); "
        f"`make lab-job` again removes its jobs first"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (LabJobError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"\nlab-job: {exc}", file=sys.stderr)
        sys.exit(1)
