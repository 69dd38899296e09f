"""scripts/testhosts.sh repairs podman's records of containers whose processes were killed.

Real: a systemd container of the project's on the --internal grid-molecule network, with a fixed
address, whose conmon and init are then SIGKILLed, as when a machine's processes all end without
a reboot (a session's end, a CI runner reusing its host). Podman still records it "running" and
every exec fails; testhosts.sh must remove it with its network namespace, so that a new
container with the same name and address starts and runs a command. A container that is not the
project's is reported and left alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from ansible_run import ROOT

IMAGE = "localhost/desktop-grid/debian12:latest"
NAME = "desktop-grid-killed-test"
FOREIGN = "killed-test-foreign"
# grid-molecule is 10.89.65.0/24 (scripts/testhosts.sh); .250 is outside what scenarios use.
ADDRESS = "10.89.65.250"


def _missing() -> str | None:
    if shutil.which("podman") is None:
        return "podman is missing: run scripts/testhosts.sh"
    if os.geteuid() != 0:
        return "needs root here: podman's systemd containers"
    if subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode != 0:
        return f"{IMAGE} is missing: run scripts/testhosts.sh"
    return None


MISSING = _missing()
if MISSING and os.environ.get("CI") == "true":
    raise RuntimeError(f"CI cannot test testhosts.sh: {MISSING}")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=check, timeout=300
    )


def start(name: str, *extra: str) -> None:
    podman("rm", "-f", name, check=False)
    podman("run", "-d", "--name", name, "--systemd=always", *extra, IMAGE, "/sbin/init")
    for _ in range(60):
        if podman("exec", name, "true", check=False).returncode == 0:
            return
        time.sleep(0.5)
    pytest.fail(f"{name} never ran a command")


def kill_processes(name: str) -> None:
    """SIGKILL the container's conmon and init, as a machine that kills every process does."""
    pids = podman("inspect", "--format", "{{.State.ConmonPid}} {{.State.Pid}}", name).stdout
    for pid in pids.split():
        os.kill(int(pid), signal.SIGKILL)
    time.sleep(1)


def netns_of(name: str) -> str:
    return podman("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", name).stdout.strip()


@pytest.fixture
def killed_containers() -> Iterator[None]:
    start(NAME, "--network", f"grid-molecule:ip={ADDRESS}", "--label", "desktop-grid.test=1")
    start(FOREIGN, "--network", "none")
    yield
    podman("rm", "-f", NAME, FOREIGN, check=False)


@pytest.mark.usefixtures("killed_containers")
def test_testhosts_removes_a_killed_container_of_the_project_and_frees_its_address() -> None:
    netns = netns_of(NAME)
    kill_processes(NAME)
    kill_processes(FOREIGN)
    # What CI met: podman calls it running, and nothing runs in it.
    assert podman("inspect", "--format", "{{.State.Status}}", NAME).stdout.strip() == "running"
    dead = podman("exec", NAME, "true", check=False)
    assert dead.returncode != 0, dead

    run = subprocess.run(
        ["bash", str(ROOT / "scripts/testhosts.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert f"container {NAME}: podman records it running, but its processes" in run.stderr
    assert f"WARNING: container {FOREIGN} (not the project's)" in run.stderr
    assert podman("container", "exists", NAME, check=False).returncode == 1
    assert not os.path.exists(netns), f"{netns} is left behind"
    # The foreign one is left as it was.
    assert podman("container", "exists", FOREIGN, check=False).returncode == 0

    # The name and the fixed address are free again: a new container gets both and runs.
    start(NAME, "--network", f"grid-molecule:ip={ADDRESS}", "--label", "desktop-grid.test=1")
    addr = podman("exec", NAME, "hostname", "-I").stdout.split()
    assert ADDRESS in addr
