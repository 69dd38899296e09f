"""The HTCondor pool at campus scale, on the real daemons: 12,000 and 50,000 research-VM slots.

It brings up bench/pool_scale/molecule (molecule/condor's playbooks: roles
condor_central_manager, condor_submit and research_vm converged into Debian 13 containers with
HTCondor 23.9's real daemons) on its own --internal network grid-scale (10.89.70.0/24). A VM
token is minted on scale-cm with the RESEARCH_VM key, as the coordinator mints it
(research-vm@scale-cm, ADVERTISE_STARTD, ADVERTISE_MASTER, READ), and put in scale-vm's seed,
so everything scale-vm sends comes from the research network (htcondor_vm_source_networks)
as research-vm. Then, for each slot count:

A. ``condor_advertise -multiple`` sends that many *distinct* research VMs' slot ads (files of
   ``--batch`` ads, one connection each) from scale-vm: the slot ad of scale-vm's real startd
   (a research VM's execute side, as role research_vm configures it), with each VM's own Name
   and Machine, and the vm_name, Cpus and Memory of one of the grid's VM types. It prints the
   burst's update rate, the collector's CPU per update and RSS, and ``condor_status`` latency
   with that many ads; then it invalidates them.
B. scale-vm's real startd is reconfigured as that many research VMs: one partitionable slot
   each, of the four VM types, with vm_name per type. Unlike A, it sends each slot's private
   ad (its claim id) too, which the negotiator needs to match a slot at all, and which
   condor_advertise 23.9 cannot send. The same number of idle jobs is queued on the real
   schedd (one cluster per VM type, each job naming its vm_name as the seed's job does). It
   prints the collector's steady update rate (the startd sends every slot's ad each
   UPDATE_INTERVAL, 60 s in role research_vm), CPU and RSS, ``condor_status`` latency, one
   negotiation cycle (the negotiator ad's LastNegotiationCycle*0 attributes, after a
   ``condor_reschedule``), and the RSS of the collector, negotiator, schedd and startd. The
   startd refuses the claims (no match session: authentication fails at once), so matched
   jobs stay idle: 2 cores cannot run 12,000 jobs, and the next cycle matches them again.
C. with ``--demand``, one coordinator allocation round: demand read from the real schedd
   through ``htcondor2`` by the coordinator's adapter (``ScheddDemand``, from this host over
   the bridge, anonymous READ), then ``allocate`` over as many desktops as slots. Time and
   memory for a first round (no leases) and a second (the first's leases held).

What neither A nor B reproduces: one TCP connection and security session per VM (A sends a
batch over one connection; B's startd one connection for all its slots), and the CCB
registrations research VMs keep at the collector.

Prints figures; asserts nothing. Usage:
  python bench/pool_scale.py [--slots 12000 50000] [--demand] [--keep] [--no-create]
Needs root and podman (scripts/testhosts.sh builds the base image and the apt repository).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "bench" / "pool_scale"
sys.path.insert(0, str(ROOT / "src"))

CM, SUBMIT, VM = "scale-cm", "scale-submit", "scale-vm"
CM_IP = "10.89.70.10"
NETWORK, SUBNET = "grid-scale", "10.89.70.0/24"
TOKEN_DIR = "/root/scale-vm-token"  # noqa: S105 - a directory in scale-vm, not a secret
ADS_FILE = "/root/scale-ads"
RESEARCHER = "researcher"


@dataclass(frozen=True)
class SlotType:
    name: str
    cpus: int
    memory_mb: int


# --- pure helpers (tests/unit/test_pool_scale_bench.py) -----------------------------------

_ATTR = re.compile(r"\A([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)\Z")
#: Attributes the collector adds to an ad it stores; the startd does not send them.
COLLECTOR_ADDED = frozenset(
    {"LastHeardFrom", "AuthenticatedIdentity", "AuthenticationMethod", "UpdateSequenceNumber"}
)
#: The slot's size, set per VM type (a partitionable slot of the whole VM).
_CPU_ATTRS = frozenset({"Cpus", "TotalCpus", "TotalSlotCpus", "DetectedCpus", "vm_type_cpus"})
_MEM_ATTRS = frozenset(
    {"Memory", "TotalMemory", "TotalSlotMemory", "DetectedMemory", "vm_type_memory_mb"}
)


def parse_long(text: str) -> dict[str, str]:
    """One ad from ``condor_status -long`` text: attribute -> its value as ClassAd text."""
    ad: dict[str, str] = {}
    for line in text.splitlines():
        match = _ATTR.match(line.strip())
        if match:
            ad[match.group(1)] = match.group(2)
    return ad


def vm_host(index: int) -> str:
    """The host name of the ``index``-th simulated research VM."""
    return f"vm{index:05d}.research.scale"


def slot_ad(template: dict[str, str], template_host: str, index: int, kind: SlotType) -> str:
    """The template slot ad as VM ``index`` of type ``kind`` would send it (ClassAd text).

    Every occurrence of the template's host name becomes the VM's own (Name, Machine and the
    like); vm_name and the slot's size are the type's; what the collector adds is left out.
    """
    host = vm_host(index)
    lines = []
    for attr, raw in template.items():
        if attr in COLLECTOR_ADDED:
            continue
        if attr in _CPU_ATTRS:
            value = str(kind.cpus)
        elif attr in _MEM_ATTRS:
            value = str(kind.memory_mb)
        elif attr == "vm_name":
            value = f'"{kind.name}"'
        elif attr == "Activity":
            value = '"Idle"'  # the template may have been read while its startd benchmarked
        else:
            value = raw.replace(template_host, host)
        lines.append(f"{attr} = {value}")
    return "\n".join(lines)


def slot_ads(
    template: dict[str, str], template_host: str, kinds: Sequence[SlotType], start: int, count: int
) -> str:
    """``count`` ads for VMs ``start``.. (types round robin), for ``condor_advertise -multiple``."""
    return (
        "\n\n".join(
            slot_ad(template, template_host, i, kinds[i % len(kinds)])
            for i in range(start, start + count)
        )
        + "\n"
    )


def startd_config(kinds: Sequence[SlotType], slots: int) -> str:
    """A startd configuration for ``slots`` research VMs: one partitionable slot per VM, an
    equal share of each of ``kinds``, each with its type's vm_name, cpus and memory."""
    share = slots // len(kinds)
    lines = [
        "# bench/pool_scale.py: this startd stands in for many research VMs, one partitionable",
        "# slot each. Claims are refused (no match session), so no job runs on 2 cores.",
        f"NUM_CPUS = {sum(k.cpus for k in kinds) * (share + len(kinds))}",
        f"MEMORY = {sum(k.memory_mb for k in kinds) * (share + len(kinds))}",
        "RESERVED_MEMORY = 0",
        "STARTD_NOCLAIM_SHUTDOWN = 0",
        "STARTD.SEC_ENABLE_MATCH_PASSWORD_AUTHENTICATION = False",
        "# No CCB on this host: the schedd's claims of thousands of matches would all go through",
        "# the collector's CCB to this one process, which cannot answer them as thousands of VMs",
        "# would, and the collector would block on it. The claims come here directly instead.",
        "CCB_ADDRESS =",
    ]
    for n, kind in enumerate(kinds, start=1):
        count = share + (slots - share * len(kinds) if n == 1 else 0)
        lines += [
            f"SLOT_TYPE_{n} = cpus={kind.cpus}, memory={kind.memory_mb}",
            f"SLOT_TYPE_{n}_PARTITIONABLE = TRUE",
            f"NUM_SLOTS_TYPE_{n} = {count}",
        ]
    name = f'"{kinds[-1].name}"'
    for n in range(len(kinds) - 1, 0, -1):
        name = f'ifThenElse(SlotTypeID == {n}, "{kinds[n - 1].name}", {name})'
    lines.append(f"vm_name = {name}")
    return "\n".join(lines) + "\n"


def submit_description(kind: SlotType, count: int) -> str:
    """A submit description of ``count`` idle jobs for VM type ``kind`` (the seed's form)."""
    return (
        "universe = vanilla\nexecutable = /bin/true\n"
        f'+vm_name = "{kind.name}"\n'
        f'requirements = (TARGET.vm_name == "{kind.name}")\n'
        f"request_cpus = {kind.cpus}\nrequest_memory = {kind.memory_mb // 2}\n"
        "request_disk = 1024\nshould_transfer_files = YES\n"
        f"queue {count}\n"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


# --- containers ---------------------------------------------------------------------------


def run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return proc.stdout


def pexec(host: str, *argv: str, stdin: str | None = None, check: bool = True) -> str:
    return run(["podman", "exec", "-i", host, *argv], stdin=stdin, check=check)


def query(*argv: str) -> str:
    """A query on scale-cm, tried again twice: a busy collector may drop a query."""
    for _ in range(2):
        proc = subprocess.run(
            ["podman", "exec", CM, *argv], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0:
            return proc.stdout
        print(f"   ({' '.join(argv[:2])} failed: {proc.stderr.strip()[-200:]}; again in 5 s)")
        time.sleep(5)
    return pexec(CM, *argv)


def molecule(*args: str) -> None:
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")]),
    }
    binary = str(Path(venv_bin) / "molecule")
    subprocess.run([binary, *args], cwd=HERE, env=env, check=True, stdout=subprocess.DEVNULL)


def ensure_network() -> None:
    if subprocess.run(["podman", "network", "exists", NETWORK], check=False).returncode != 0:
        run(["podman", "network", "create", "--internal", "--subnet", SUBNET, NETWORK])


def proc_figures(host: str, daemon: str) -> tuple[float, int]:
    """CPU seconds (user + system, its waited-for children too) and RSS (KiB) of ``daemon``."""
    pid = pexec(host, "pidof", "-s", daemon).strip()
    stat = pexec(host, "cat", f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = sum(int(v) for v in stat[11:15]) / ticks  # utime stime cutime cstime
    status = pexec(host, "cat", f"/proc/{pid}/status")
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return cpu, rss


def model_types() -> list[SlotType]:
    import yaml  # noqa: PLC0415

    hosts = yaml.safe_load((HERE / "molecule/default/inventory/hosts.yml").read_text())
    pool = hosts["all"]["children"]["condor_central_manager"]["hosts"][CM]
    return [SlotType(t["name"], t["cpus"], t["memory_mb"]) for t in pool["grid_vm_types"]]


# --- the VM's token and the template ad ---------------------------------------------------


def mint_vm_token() -> None:
    """A VM token for scale-vm: research-vm@scale-cm, key RESEARCH_VM, as the coordinator's."""
    token = pexec(
        CM,
        "condor_token_create",
        "-identity",
        f"research-vm@{CM}",
        "-key",
        "RESEARCH_VM",
        "-lifetime",
        "14400",
        "-authz",
        "ADVERTISE_STARTD",
        "-authz",
        "ADVERTISE_MASTER",
        "-authz",
        "READ",
    ).strip()
    pexec(VM, "mkdir", "-p", "-m", "0700", TOKEN_DIR)
    pexec(VM, "sh", "-c", f"umask 077; cat > {TOKEN_DIR}/research-vm", stdin=token + "\n")
    # The seed, as the desktop agent writes it; condor-seed installs the token for the startd.
    pexec(VM, "mkdir", "-p", "-m", "0700", "/run/grid/condor")
    pexec(VM, "sh", "-c", "cat > /run/grid/vm_name", stdin=f"{model_types()[0].name}\n")
    pexec(VM, "sh", "-c", "umask 077; cat > /run/grid/condor/token", stdin=token + "\n")
    pexec(VM, "/usr/local/libexec/grid/condor-seed")


def template_ad() -> tuple[dict[str, str], str]:
    """The slot ad of scale-vm's real startd (one VM, one partitionable slot), as the collector
    holds it. The startd keeps running: it stands in for many VMs later (``startd_phase``)."""
    # A research VM powers off when condor stops (role research_vm's drop-in); scale-vm's
    # startd restarts here. A runtime drop-in, gone with the container.
    pexec(VM, "mkdir", "-p", "/run/systemd/system/condor.service.d")
    pexec(
        VM,
        "sh",
        "-c",
        "cat > /run/systemd/system/condor.service.d/bench.conf",
        stdin="[Unit]\nSuccessAction=none\nFailureAction=none\n",
    )
    pexec(VM, "systemctl", "daemon-reload")
    pexec(VM, "rm", "-f", "/etc/condor/config.d/99-bench-slots.conf")
    pexec(VM, "systemctl", "stop", "condor")
    forget = f'MyType = "Query"\nTargetType = "Machine"\nRequirements = Machine == "{VM}"\n'
    advertise(forget, "INVALIDATE_STARTD_ADS")  # a previous run's slots, if any
    started = int(time.time())
    pexec(VM, "systemctl", "start", "condor")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        time.sleep(5)
        constraint = f'Machine == "{VM}" && DaemonStartTime >= {started - 5}'
        text = query("condor_status", "-long", "-constraint", constraint)
        ads = [parse_long(chunk) for chunk in text.split("\n\n") if chunk.strip()]
        if ads:
            return ads[0], ads[0]["Machine"].strip('"')
    raise SystemExit("scale-vm's startd did not appear in the collector within 180 s")


# --- the pool -----------------------------------------------------------------------------


def queue_jobs(kinds: Sequence[SlotType], total: int) -> float:
    """Queue ``total`` idle jobs (an equal share per type) as a researcher; seconds taken."""
    pexec(SUBMIT, "sh", "-c", f"id {RESEARCHER} >/dev/null 2>&1 || useradd -m {RESEARCHER}")
    share = total // len(kinds)
    started = time.monotonic()
    for i, kind in enumerate(kinds):
        count = share + (total - share * len(kinds) if i == 0 else 0)
        pexec(
            SUBMIT,
            "runuser",
            "-u",
            RESEARCHER,
            "--",
            "sh",
            "-c",
            "cd /tmp && condor_submit -terse -",
            stdin=submit_description(kind, count),
        )
    return time.monotonic() - started


_VM_ENV = (
    f"_CONDOR_SEC_TOKEN_DIRECTORY={TOKEN_DIR}",
    "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=IDTOKENS",
)


def advertise(ads: str, command: str = "UPDATE_STARTD_AD") -> None:
    """Send ``ads`` (blank-line separated) from scale-vm with its VM token, one connection."""
    pexec(VM, "sh", "-c", f"cat > {ADS_FILE}", stdin=ads)
    argv = ["condor_advertise", "-pool", CM, "-tcp", "-multiple", command, ADS_FILE]
    pexec(VM, "env", *_VM_ENV, *argv)


def count_slots(constraint: str) -> int:
    out = query("condor_status", "-constraint", constraint, "-af", "Name")
    return len(out.splitlines())


def status_latency(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.monotonic()
        pexec(SUBMIT, "sh", "-c", f"condor_status -pool {CM} > /dev/null")
        times.append(time.monotonic() - started)
    return times


def print_latency(what: str, times: Sequence[float]) -> None:
    print(
        f"condor_status ({what}, from {SUBMIT}), {len(times)} runs: "
        f"median {statistics.median(times):.2f} s, p95 {percentile(times, 0.95):.2f} s, "
        f"max {max(times):.2f} s"
    )


NEGOTIATOR_ATTRS = (
    "LastNegotiationCycleDuration0",
    "LastNegotiationCyclePhase1Duration0",
    "LastNegotiationCyclePhase2Duration0",
    "LastNegotiationCyclePhase3Duration0",
    "LastNegotiationCyclePhase4Duration0",
    "LastNegotiationCycleMatches0",
    "LastNegotiationCycleMatchRate0",
    "LastNegotiationCycleMatchRateSustained0",
    "LastNegotiationCycleRejections0",
    "LastNegotiationCycleNumIdleJobs0",
    "LastNegotiationCycleCandidateSlots0",
    "LastNegotiationCycleTotalSlots0",
    "LastNegotiationCycleActiveSubmitterCount0",
    "LastNegotiationCycleNumSchedulers0",
)


def negotiation_cycle(after: float, timeout: float) -> dict[str, str]:
    """The first negotiation cycle that ends after ``after`` (epoch s); a reschedule asks for it."""
    pexec(SUBMIT, "condor_reschedule")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ad = parse_long(query("condor_status", "-negotiator", "-long"))
        if float(ad.get("LastNegotiationCycleEnd0", "0")) > after:
            return ad
        time.sleep(5)
    return {}


def collector_updates() -> int:
    ad = parse_long(query("condor_status", "-collector", "-long"))
    return int(ad.get("UpdatesTotal", "0"))


def advertise_phase(
    slots: int,
    kinds: Sequence[SlotType],
    template: dict[str, str],
    host: str,
    args: argparse.Namespace,
) -> None:
    """A: ``slots`` distinct VMs' slot ads in a burst from the research network; then gone."""
    cpu0, rss0 = proc_figures(CM, "condor_collector")
    started = time.monotonic()
    size = 0
    for at in range(0, slots, args.batch):
        ads = slot_ads(template, host, kinds, at, min(args.batch, slots - at))
        size += len(ads)
        advertise(ads)
    burst = time.monotonic() - started
    cpu1, rss1 = proc_figures(CM, "condor_collector")
    held = count_slots(f'Machine =!= "{VM}"')
    print(
        f"A. condor_advertise: {slots} VMs' slot ads ({size / slots:.0f} bytes each) in "
        f"{burst:.1f} s = {slots / burst:.0f} updates/s (batches of {args.batch}); collector "
        f"CPU {cpu1 - cpu0:.1f} s = {(cpu1 - cpu0) / slots * 1e3:.2f} ms/update; collector RSS "
        f"{rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MiB; ads held: {held}"
    )
    print_latency(f"{held} slot ads", status_latency(args.status_runs))
    query = f'MyType = "Query"\nTargetType = "Machine"\nRequirements = Machine =!= "{VM}"\n'
    advertise(query, "INVALIDATE_STARTD_ADS")
    time.sleep(2)
    _, rss2 = proc_figures(CM, "condor_collector")
    left = count_slots(f'Machine =!= "{VM}"')
    print(f"   invalidated: {left} left; collector RSS {rss2 / 1024:.0f} MiB")


def startd_phase(
    slots: int, queued: int, kinds: Sequence[SlotType], args: argparse.Namespace
) -> None:
    """B: scale-vm's real startd as ``slots`` VMs; jobs; steady updates; negotiation."""
    pexec(
        VM,
        "sh",
        "-c",
        "cat > /etc/condor/config.d/99-bench-slots.conf",
        stdin=startd_config(kinds, slots),
    )
    started = time.monotonic()
    pexec(VM, "systemctl", "restart", "condor")  # all its daemons: shared_port holds the CCB id
    constraint = f'Machine == "{VM}"'
    held = 0
    while time.monotonic() - started < args.startd_timeout:
        time.sleep(10)
        held = count_slots(constraint)
        if held >= slots:
            break
    _, srss = proc_figures(VM, "condor_startd")
    print(
        f"B. startd: {held} of {slots} slots in the collector {time.monotonic() - started:.0f} s "
        f"after its restart; startd RSS {srss / 1024:.0f} MiB"
    )
    submit_s = queue_jobs(kinds, slots - queued)
    print(f"queued {slots - queued} idle jobs in {submit_s:.1f} s")
    totals = pexec(SUBMIT, "condor_q", "-allusers", "-totals")
    print("schedd: " + next(line for line in totals.splitlines() if "all users" in line))
    # Steady state: the startd sends every slot's ad each UPDATE_INTERVAL.
    updates0, (cpu0, _) = collector_updates(), proc_figures(CM, "condor_collector")
    t0 = time.monotonic()
    time.sleep(args.steady_seconds)
    updates1, (cpu1, crss) = collector_updates(), proc_figures(CM, "condor_collector")
    wall = time.monotonic() - t0
    print(
        f"collector steady: {(updates1 - updates0) / wall:.0f} updates/s over {wall:.0f} s; "
        f"CPU {(cpu1 - cpu0) / wall * 100:.1f}% of a core; RSS {crss / 1024:.0f} MiB"
    )
    print_latency(f"{held} slots", status_latency(args.status_runs))
    ad = negotiation_cycle(time.time(), args.cycle_timeout)
    if not ad:
        print(f"negotiator: no cycle ended within {args.cycle_timeout:.0f} s")
    for attr in NEGOTIATOR_ATTRS:
        if attr in ad:
            print(f"negotiator {attr} = {ad[attr]}")
    _, crss = proc_figures(CM, "condor_collector")
    _, nrss = proc_figures(CM, "condor_negotiator")
    _, drss = proc_figures(SUBMIT, "condor_schedd")
    _, srss = proc_figures(VM, "condor_startd")
    print(
        f"RSS: collector {crss / 1024:.0f} MiB, negotiator {nrss / 1024:.0f} MiB, "
        f"schedd {drss / 1024:.0f} MiB ({slots} jobs), startd {srss / 1024:.0f} MiB"
    )


# --- C: one allocation round --------------------------------------------------------------


def demand_round(kinds: Sequence[SlotType], desktops: int) -> None:
    """One coordinator round: demand from the real schedd (``htcondor2``), then ``allocate``."""
    from cvmc.coordinator.adapters.condor_demand import ScheddDemand  # noqa: PLC0415
    from cvmc.coordinator.domain.grid import parse_grid  # noqa: PLC0415
    from cvmc.coordinator.domain.leases import DesktopView, LeaseView, allocate  # noqa: PLC0415

    grid = parse_grid(
        {
            "name": "scale",
            "vm_types": [
                {
                    "name": k.name,
                    "image": f"{k.name}.qcow2",
                    "cpus": k.cpus,
                    "memory_mb": k.memory_mb,
                    "os": "LINUX",
                    "arch": "X86_64",
                }
                for k in kinds
            ],
            "max_vms_per_desktop": 2,
            "desktops": [],
        }
    )
    desks = [
        DesktopView(
            id=f"d-{i:05d}",
            department=f"dept_{i % 40}",
            online=True,
            may_start=True,
            hw_virt=True,
            max_vms=2,
            memory_free_mb=(8192, 12288, 16384)[i % 3],
        )
        for i in range(desktops)
    ]
    source = ScheddDemand(CM_IP, [], grid.vm_types, match_unnamed=False, count_running=True)
    counter = iter(range(10**9))
    print(
        f"C. allocation round: demand from {SUBMIT}'s schedd over the bridge, {desktops} desktops"
    )
    leases: list[LeaseView] = []
    for label in ("first round (no leases)", "second round (leases held)"):
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        t0 = time.perf_counter()
        demand = source.demand()
        t1 = time.perf_counter()
        result = allocate(
            demand=demand.by_type,
            types=grid.vm_types,
            desktops=desks,
            leases=leases,
            now=time.time(),
            ttl_s=600,
            max_vms_per_desktop=grid.max_vms_per_desktop,
            new_id=lambda: f"l-{next(counter)}",
        )
        t2 = time.perf_counter()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        leases = result.kept(leases)
        print(
            f"   {label}: demand {dict(demand.by_type)} (idle {demand.idle}) read in "
            f"{t1 - t0:.2f} s; allocate {t2 - t1:.2f} s ({len(result.new)} new, "
            f"{len(result.revoked)} revoked); round {t2 - t0:.2f} s; Python peak "
            f"{peak / 2**20:.0f} MiB; max RSS {rss1 / 1024:.0f} MiB (+{(rss1 - rss0) / 1024:.0f})"
        )
    # The same rounds without tracemalloc, which slows Python's allocations down.
    t0 = time.perf_counter()
    demand = source.demand()
    t1 = time.perf_counter()
    allocate(
        demand=demand.by_type,
        types=grid.vm_types,
        desktops=desks,
        leases=[],
        now=time.time(),
        ttl_s=600,
        max_vms_per_desktop=grid.max_vms_per_desktop,
        new_id=lambda: f"l-{next(counter)}",
    )
    t2 = time.perf_counter()
    print(
        f"   untraced first round: demand {t1 - t0:.2f} s + allocate {t2 - t1:.2f} s "
        f"= {t2 - t0:.2f} s"
    )


#: The coordinator's HTCondor client configuration, as role grid_coordinator renders it
#: (templates/condor_config.j2): anonymous READ, encrypted and integrity-checked.
COORDINATOR_CONDOR_CONFIG = (
    "SEC_CLIENT_AUTHENTICATION_METHODS = ANONYMOUS\n"
    "SEC_CLIENT_ENCRYPTION = REQUIRED\nSEC_CLIENT_INTEGRITY = REQUIRED\n"
)


def _phases(slots: Sequence[int]) -> Iterator[tuple[int, int]]:
    done = 0
    for count in sorted(slots):
        yield count, done
        done = count


def cleanup(keep: bool) -> None:
    if keep:
        return
    molecule("destroy")
    run(["podman", "network", "rm", NETWORK], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[12000, 50000])
    parser.add_argument("--batch", type=int, default=1000, help="ads per condor_advertise")
    parser.add_argument("--steady-seconds", type=int, default=60, help="steady-state window")
    parser.add_argument("--status-runs", type=int, default=7)
    parser.add_argument("--cycle-timeout", type=float, default=600)
    parser.add_argument("--startd-timeout", type=float, default=900)
    parser.add_argument("--advertise-only", action="store_true", help="only part A")
    parser.add_argument("--demand", action="store_true", help="part C after part B")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument("--no-create", action="store_true", help="reuse running containers")
    args = parser.parse_args()

    kinds = model_types()
    # htcondor2 reads its configuration once, when it is first imported (part C).
    config = Path(tempfile.mkdtemp(prefix="pool_scale-")) / "condor_config"
    config.write_text(COORDINATOR_CONDOR_CONFIG)
    os.environ["CONDOR_CONFIG"] = str(config)
    if not args.no_create:
        ensure_network()
        molecule("destroy")
        for step in ("create", "converge"):
            molecule(step)
    try:
        load = os.getloadavg()
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {load[0]:.2f}")
        mint_vm_token()
        template, host = template_ad()
        print(f"template: {host}'s slot ad, {len(template)} attributes")
        for count, done in _phases(args.slots):
            print(f"\n=== {count} slots, {count} idle jobs ({time.strftime('%H:%M:%S')} UTC)")
            advertise_phase(count, kinds, template, host, args)
            if not args.advertise_only:
                startd_phase(count, done, kinds, args)
                if args.demand:
                    demand_round(kinds, count)
        load = os.getloadavg()
        print(f"\nload at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        cleanup(args.keep)


if __name__ == "__main__":
    main()
