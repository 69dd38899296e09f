"""The `cvmc` command line, run for real (console script and in-process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agent.agent_fakes import lab_config_dict

from cvmc.agent.entrypoints import cli


def write_config(tmp_path: Path, **agent: object) -> Path:
    raw = lab_config_dict(state_dir=str(tmp_path / "state"), **agent)
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(raw))
    return path


def test_the_console_script_is_installed() -> None:
    exe = shutil.which("cvmc") or str(Path(sys.executable).parent / "cvmc")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert done.stdout.startswith("cvmc ")


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU missing")
def test_check_reports_every_item(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, image_budget_mb=64)
    code = cli.main(["check", "--config", str(config), "--json"])
    rows = {row["check"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {
        "config",
        "hardware virtualisation",
        "hypervisor qemu",
        "memory",
        "disk",
        "policy now",
    }
    assert rows["hypervisor qemu"]["ok"]
    assert rows["hypervisor qemu"]["detail"].startswith("7.")
    assert code == (0 if all(r["ok"] for r in rows.values()) else 1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON (line 1"),
        (json.dumps({"grid": {}, "agent": {}}), "grid_max_vms_per_desktop: missing"),
        ("BROKEN_POLICY", "grid_policy.blackouts[0].end"),
    ],
)
def test_a_malformed_config_exits_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "agent.json"
    if content == "BROKEN_POLICY":
        raw = lab_config_dict(state_dir=str(tmp_path / "state"))
        raw["grid"]["policy"]["blackouts"][0]["end"] = "25:00"
        content = json.dumps(raw)
    path.write_text(content)
    code = cli.main(["agent", "run", "--config", str(path)])
    assert code == 2
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "config.invalid"
    assert message in line["msg"]
    assert "nothing was changed" in line["msg"]
    assert not (tmp_path / "state").exists()  # nothing was created


def test_images_list_and_verify_on_an_empty_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert cli.main(["images", "list", "--config", str(config)]) == 0
    assert "MiB of 4096 MiB budget" in capsys.readouterr().out
    assert cli.main(["images", "verify", "--config", str(config)]) == 0
    assert cli.main(["images", "gc", "--config", str(config)]) == 0


def test_status_without_a_running_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert cli.main(["status", "--config", str(config)]) == 1
    assert "is the agent running" in capsys.readouterr().out
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "status.json").write_text(
        json.dumps(
            {
                "desktop": "lab-pc01",
                "policy": "allowed",
                "coordinator_ok": True,
                "slots": [
                    {
                        "slot": 0,
                        "state": "running",
                        "vm_name": "its-u11-boinc-20120415",
                        "cpus": 1,
                        "memory_mb": 512,
                        "reason": "VM started",
                    }
                ],
            }
        )
    )
    assert cli.main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "slot 0: running" in out
    assert "its-u11-boinc-20120415 1 cpu 512 MB" in out


def test_config_check_accepts_a_valid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert cli.main(["config", "check", str(config)]) == 0
    assert f"{config}: valid (qemu" in capsys.readouterr().out
    # It only reads: the state directory the file names is not created.
    assert not (tmp_path / "state").exists()


def test_config_check_refuses_a_bad_key_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = lab_config_dict(state_dir=str(tmp_path / "state"))
    raw["agent"]["qemu_accel"] = "hvf"
    path = tmp_path / "agent.json.new"
    path.write_text(json.dumps(raw))
    assert cli.main(["config", "check", str(path)]) == 2
    assert "agent.qemu_accel: 'hvf' is not one of auto, kvm, tcg" in capsys.readouterr().err


def test_config_check_as_a_command_names_the_key(tmp_path: Path) -> None:
    raw = lab_config_dict(state_dir=str(tmp_path / "state"))
    del raw["agent"]["trusted_keys"]
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(raw))
    exe = shutil.which("cvmc") or str(Path(sys.executable).parent / "cvmc")
    done = subprocess.run(
        [exe, "config", "check", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "agent.trusted_keys" in done.stderr


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU missing")
def test_kvm_probe_reports_what_the_agents_probe_finds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cvmc.agent.adapters.qemu import probe_kvm  # noqa: PLC0415

    assert cli.main(["kvm-probe"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["qemu_version"].startswith("QEMU emulator version")
    assert report["dev_kvm"] == Path("/dev/kvm").exists()
    # TCG runs a vCPU wherever QEMU runs; KVM where the driver's own probe says so.
    assert report["tcg"] is True
    assert report["kvm"] == probe_kvm()
    assert report["accel"] == ("kvm" if report["kvm"] else "tcg")
    if not report["dev_kvm_access"]:
        assert report["accel"] == "tcg"


def test_kvm_probe_without_qemu_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["kvm-probe", "--qemu", "/nonexistent/qemu-system-x86_64"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["accel"] is None
    assert "not found" in report["error"]


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU missing")
def test_the_probe_needs_the_guest_to_finish_its_boot(tmp_path: Path) -> None:
    """The probe's guest boots through BIOS, a protected-mode switch and an iret, then exits
    QEMU with 99. A QEMU that runs but never lets the guest finish (a vCPU stuck, as a broken
    nested KVM leaves it) or exits otherwise is a failed probe, not a working accelerator."""
    from cvmc.agent.adapters.qemu import PROBE_DISK, PROBE_EXIT, probe_accel  # noqa: PLC0415

    assert len(PROBE_DISK) == 1024 * 1024
    assert PROBE_DISK[510:512] == b"\x55\xaa"
    assert PROBE_EXIT == (0x31 << 1) | 1
    assert probe_accel("qemu-system-x86_64", "tcg") is True
    stuck = tmp_path / "stuck-qemu"
    # The real QEMU, but the guest's exit port is elsewhere: its write goes nowhere.
    stuck.write_text(
        f"#!{sys.executable}\nimport os, sys\n"
        "args = [a.replace('iobase=0xf4', 'iobase=0x500') for a in sys.argv[1:]]\n"
        "os.execvp('qemu-system-x86_64', ['qemu-system-x86_64', *args])\n"
    )
    stuck.chmod(0o755)
    assert probe_accel(str(stuck), "tcg", seconds=3) is False
    failing = tmp_path / "failing-qemu"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    assert probe_accel(str(failing), "tcg") is False


FAILING_AGENT = """
import sys
import cvmc.agent.service.agent as loop
from cvmc.agent.entrypoints.cli import main

def tick(self):
    raise KeyError("a tick that always fails (test)")

loop.Agent.tick = tick
loop.tick_backoff = lambda poll_s, failures: 0.01  # the backoff itself is a unit test's
sys.exit(main(sys.argv[1:]))
"""


def test_an_agent_whose_ticks_keep_failing_exits_1_after_removing_its_vms(
    tmp_path: Path,
) -> None:
    """Issue 15, finding 4: the real ``cvmc agent run`` (its loop made to fail every tick)
    logs each failure, gives up after ten, removes its VMs and exits 1 for the service
    manager, instead of dying at the first error or running on broken."""
    config = write_config(tmp_path, poll_s=0.5)
    src = Path(__file__).resolve().parents[3] / "src"
    done = subprocess.run(
        [sys.executable, "-c", FAILING_AGENT, "--config", str(config), "agent", "run"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    assert done.returncode == 1, done.stderr[-2000:]
    events = [json.loads(line).get("event") for line in done.stderr.splitlines() if line]
    assert events.count("agent.tick_failed") == 9
    assert events[-2:] == ["agent.failed", "agent.exit"]
    assert "Traceback" not in done.stderr
