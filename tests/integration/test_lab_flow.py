"""The README's lab, end to end, as one test: `make lab`, then `make lab-job`.

Real throughout: podman containers with systemd (scripts/testhosts.sh), HTCondor's daemons from
Debian 13's packages, the coordinator (SQLite) behind nginx, the OpenVPN
gateway with nftables, and a research VM that the agent on a lab desktop (role linux_desktop)
starts under QEMU (KVM where it runs guests, else TCG) from a coordinator lease, with the image
that playbooks/build_image.yml builds, signs and publishes. `make lab-job` (scripts/lab_job.py)
follows the seed job from demand to lease, VM, slot and output, then opens an owner's logind
session on the VM's desktop and sees the VM leave the pool; it exits 1 when any step does not
happen. This test runs the same two commands a new user runs, and reads what they printed and
the figures file they wrote. Then `make lab-suspend` (grid_policy.suspend_minutes, issue 18
item 7): the desktops' play turns the setting on, an owner's logon saves the VM that runs a
job, their logoff resumes it, and the job completes having started once; the play then turns
the setting off.

It starts from no lab containers (`make lab-down` first), as a new user on a new machine
does, and then changes this machine's lab as `make lab` does; it needs root for podman. Lab
containers that a run under another HOME (another ~/.cache/desktop-grid) left behind hold that
run's pool signing key, which the roles rightly refuse to replace. The image cache
(~/.cache/desktop-grid/images) makes a second run skip the image build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from ansible_run import ROOT

FIGURES = Path(os.environ.get("HOME", "/root")) / ".cache/desktop-grid/lab-job-figures.json"
SUSPEND_FIGURES = FIGURES.with_name("lab-suspend-figures.json")
BASE_IMAGES = ("localhost/desktop-grid/debian12:latest", "localhost/desktop-grid/debian13:latest")


def _missing() -> str | None:
    """What this machine lacks to run the lab, or None."""
    for tool in ("podman", "make", "qemu-system-x86_64", "minisign", "syslinux"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: run scripts/testhosts.sh and scripts/test-deps.sh"
    if os.geteuid() != 0:
        return "the lab needs root here: podman's systemd containers"
    for image in BASE_IMAGES:
        if subprocess.run(["podman", "image", "exists", image], check=False).returncode != 0:
            return f"{image} is missing: run scripts/testhosts.sh"
    return None


# In CI the prerequisites are installed before pytest runs (Makefile: unit needs testhosts), so
# a missing one is a failure there, never a skip.
MISSING = _missing()
if MISSING and os.environ.get("CI") == "true":
    raise RuntimeError(f"CI cannot run the lab flow: {MISSING}")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]


def make(target: str, timeout: float) -> tuple[str, float]:
    """Run ``make <target>`` in the checkout as a user would; its output and seconds.

    Past ``timeout`` the run is killed (its whole process group) and the test fails with the
    output so far and this machine's process tree: a hang names what it waited for.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        ["make", "-C", str(ROOT), target],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = subprocess.run(
            ["ps", "-eo", "pid,ppid,etimes,args", "--forest"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(
            f"make {target} did not finish in {timeout:.0f} s; its output:\n{out[-6000:]}\n"
            f"processes:\n{tree[-8000:]}"
        )
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"make {target} exited {proc.returncode}:\n{out[-6000:]}"
    return out, seconds


def test_make_lab_then_make_lab_job_runs_the_seed_job_in_a_real_vm_and_a_logon_vacates_it() -> None:
    FIGURES.unlink(missing_ok=True)
    SUSPEND_FIGURES.unlink(missing_ok=True)
    make("lab-down", 300)
    lab, lab_s = make("lab", 2400)
    recap = lab.rsplit("PLAY RECAP", 1)[-1]
    assert "ok=" in recap, lab[-6000:]
    assert not re.search(r"(failed|unreachable)=[1-9]", recap), recap
    # No container stands in for the research VM.
    names = subprocess.run(
        ["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "lab-vm-1" not in names
    assert {"lab-desktop-1", "lab-gateway", "lab-cm", "lab-submit", "lab-coordinator"} <= set(names)

    job, job_s = make("lab-job", 1800)
    # Where the jobs ran: a slot whose startd is at a lab desktop's VM tunnel address.
    joined = re.search(r"a VM \((KVM|TCG)\) joined the pool from its tunnel address", job)
    assert joined, job[-6000:]
    ran = re.findall(
        r"^(seed|unnamed|probe) job \d+ ran on (\S+), a VM at (10\.[0-9.]+)$", job, re.M
    )
    assert {label for label, _, _ in ran} == {"seed", "unnamed", "probe"}, job[-6000:]
    # Each VM is named after its tunnel identity (the seed's local-hostname): lab-desktop-N-vmK.
    named = r"slot\d+(_\d+)?@lab-desktop-\d+-vm\d+"
    assert all(re.fullmatch(named, slot) for _, slot, _ in ran), ran
    # The seed job's output came back to the researcher on the submit node.
    stdout = job.split("--- seed job's stdout (seed-job.out)\n", 1)[1].split("\n---", 1)[0]
    assert stdout.strip(), job[-6000:]
    output = job.split("--- seed job's output file (output.txt)\n", 1)[1].split("\n---", 1)[0]
    assert output.strip(), job[-6000:]
    assert "the gateway dropped" in job  # the probe's packets to the campus LAN
    assert re.search(r"logon → VM stopped [0-9.]+ s, slot gone from the pool", job), job[-6000:]
    assert "the coordinator shows it as demand" in job

    figures = json.loads(FIGURES.read_text())
    for key in (
        "submit_to_lease_s",
        "lease_to_slot_s",
        "submit_to_done_s",
        "logon_to_vm_stopped_s",
        "logon_to_slot_gone_s",
        "logon_to_job_idle_s",
    ):
        assert figures[key] > 0, (key, figures)
    assert figures["lease_to_slot_s"] < figures["submit_to_done_s"]
    assert figures["logon_to_vm_stopped_s"] <= figures["logon_to_slot_gone_s"]
    print(
        f"\nmake lab {lab_s:.0f} s, make lab-job {job_s:.0f} s "
        f"({'KVM' if figures.get('accel_kvm') else 'TCG'}): {json.dumps(figures)}"
    )

    # Suspend instead of shut down, in the real pool: the job's VM is saved while the owner is
    # on, resumed when they leave, and the job completes, started once (HTCondor's reconnect).
    suspended, suspend_s = make("lab-suspend", 1800)
    assert re.search(r"logon → VM saved [0-9.]+ s", suspended), suspended[-6000:]
    assert re.search(r"logoff → VM running again [0-9.]+ s", suspended), suspended[-6000:]
    assert re.search(r"job \d+ completed, started once", suspended), suspended[-6000:]
    assert suspended.count("running playbooks/desktops.yml") == 2  # on, then off again
    figures = json.loads(SUSPEND_FIGURES.read_text())
    for key in ("logon_to_vm_saved_s", "logoff_to_vm_running_s", "saved_for_s"):
        assert figures[key] > 0, (key, figures)
    print(f"make lab-suspend {suspend_s:.0f} s: {json.dumps(figures)}")
