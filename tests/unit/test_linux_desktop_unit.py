"""The linux_desktop role's systemd unit, rendered by Ansible's templar from the role's own
defaults and vars and checked by ``systemd-analyze verify`` where it is installed.

Issue 15, finding 4: an agent that dies for any reason leaves no VM running. The unit runs
``cvmc agent cleanup`` as ``ExecStopPost=``, with the same binary and configuration as
``ExecStart=`` (tests/agent/integration/test_agent_hostile.py runs that command for real)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from role_templates import render_role_template, unit_directives

from cvmc.agent.entrypoints.cli import parser


def render_unit() -> str:
    variables = {"inventory_hostname": "lab-pc01", "ansible_managed": "Ansible managed"}
    return render_role_template("linux_desktop", "cvmc-agent.service.j2", variables)


def service_lines(unit: str) -> dict[str, list[str]]:
    return unit_directives(unit, "Service")


def test_the_unit_cleans_up_after_the_agent_with_the_same_binary_and_config() -> None:
    service = service_lines(render_unit())
    assert len(service["ExecStart"]) == 1
    assert len(service["ExecStopPost"]) == 1
    start = shlex.split(service["ExecStart"][0])
    cleanup = shlex.split(service["ExecStopPost"][0])
    assert cleanup == [*start[:3], "agent", "cleanup"]
    assert start[:3] == ["/opt/cvmc/venv/bin/cvmc", "--config", "/etc/cvmc/agent.json"]
    # The agent's own parser accepts the command as written.
    args = parser().parse_args(cleanup[1:])
    assert (args.config, args.agent_command) == ("/etc/cvmc/agent.json", "cleanup")
    # It runs as the service account in the same sandbox: no override of User= or of the
    # sandbox for that command ('+' or '!' prefixes would lift them).
    assert not service["ExecStopPost"][0].startswith(("+", "!", "-", ":"))
    assert service["User"] == ["cvmc"]
    assert service["KillMode"] == ["mixed"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_rendered_unit(tmp_path: Path) -> None:
    unit = tmp_path / "cvmc-agent.service"
    text = render_unit()
    # verify checks that every command is executable: point the venv's cvmc at a stand-in.
    cvmc = tmp_path / "cvmc"
    cvmc.write_text("#!/bin/sh\n")
    cvmc.chmod(0o755)
    unit.write_text(text.replace("/opt/cvmc/venv/bin/cvmc", str(cvmc)))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "cvmc-agent.service" not in done.stderr, done.stderr
