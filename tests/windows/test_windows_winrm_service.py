"""Contract: the role turns CredSSP off in the desktop's WinRM service, with WinRM's own key.

WinRM cannot run here. Its service configuration is documented by Microsoft ("Installation
and configuration for Windows Remote Management", learn.microsoft.com): the service's
authentication settings are ``winrm/config/service/auth`` with the keys below, reached in
PowerShell through the WSMan: drive as ``WSMan:\\localhost\\Service\\Auth\\<key>``, each a
string ``true``/``false``. The role's task must name that key exactly, set it to false, honour
check mode and run before the role changes anything else on the desktop.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "roles/windows_desktop/tasks"

#: winrm/config/service/auth, as documented (and as `winrm get winrm/config/service/auth` lists).
SERVICE_AUTH_KEYS = {
    "Basic",
    "Kerberos",
    "Negotiate",
    "Certificate",
    "CredSSP",
    "CbtHardeningLevel",
}
WSMAN_SERVICE_AUTH = re.compile(r"\AWSMan:\\localhost\\Service\\Auth\\(?P<key>\w+)\Z")


def _tasks(name: str) -> list[dict[str, Any]]:
    tasks = yaml.safe_load((TASKS / name).read_text())
    assert isinstance(tasks, list)
    return tasks


def test_the_winrm_task_sets_the_documented_credssp_key_to_false() -> None:
    (task,) = _tasks("winrm.yml")
    module = task["ansible.windows.win_powershell"]
    key = module["parameters"]["Key"]
    match = WSMAN_SERVICE_AUTH.match(key)
    assert match is not None, key
    assert match["key"] in SERVICE_AUTH_KEYS
    assert match["key"] == "CredSSP"
    script = module["script"]
    assert "Set-Item -LiteralPath $Key -Value $false" in script
    # check mode: win_powershell runs the script then only if it declares SupportsShouldProcess,
    # and the change is made only where ShouldProcess allows it
    assert "[CmdletBinding(SupportsShouldProcess)]" in script
    assert "$PSCmdlet.ShouldProcess($Key" in script


def test_credssp_is_turned_off_before_anything_else_changes() -> None:
    included = [t["ansible.builtin.include_tasks"] for t in _tasks("main.yml")]
    winrm = included.index("winrm.yml")
    # Before it only the read-only checks run; the first change (VirtualBox) comes after it.
    assert included[:winrm] == ["assert.yml", "preflight.yml", "account_check.yml", "pki_read.yml"]
    assert included[winrm + 1] == "virtualbox.yml"
