"""The grid_monitoring role run for real by `ansible-playbook` against localhost (connection
local, paths in a temporary directory): it installs the alert rules after the real `promtool
check rules`, refuses a relative rules directory or a Grafana URL without a key naming the
variable before any change; and `playbooks/site.yml`, with its optional monitoring play, passes
`--syntax-check` with both shipped inventories. Issue 17, item 3."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_run import ROOT, ansible_playbook
from unit.test_monitoring import RULES
from unit.test_vpn_metrics import promtool

PLAY = """\
- name: Install the grid's alerts here
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: grid_monitoring
"""


def _run(tmp_path: Path, **extra: object) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY)
    (tmp_path / "roles").symlink_to(ROOT / "roles")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    variables = {"grid_monitoring_prometheus_service": "", **extra}
    return ansible_playbook(
        playbook, [inventory], extra=variables, extra_file=tmp_path / "extra.json", timeout=180
    )


def test_the_role_installs_the_rules_checked_by_promtool(tmp_path: Path) -> None:
    promtool()  # the role's validate step runs it: a missing one fails here, clearly
    rules = tmp_path / "rules"
    result = _run(tmp_path, grid_monitoring_rules_dir=str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (rules / "grid-alerts.yml").read_bytes() == RULES.read_bytes()
    assert (rules / "grid-alerts.yml").stat().st_mode & 0o777 == 0o644
    # No Grafana URL: no dashboard import (it would need Grafana and its collection's API).
    assert re.search(r"into Grafana\] \*+\nskipping: \[localhost\]", result.stdout)


def test_a_broken_rules_file_is_refused_by_promtool(tmp_path: Path) -> None:
    promtool()
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: rate(\n")
    rules = tmp_path / "rules"
    result = _run(
        tmp_path, grid_monitoring_rules_dir=str(rules), grid_monitoring_rules_src=str(broken)
    )
    assert result.returncode != 0
    assert "failed to validate" in result.stdout
    assert not (rules / "grid-alerts.yml").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"grid_monitoring_rules_dir": "etc/prometheus/rules"}, "grid_monitoring_rules_dir"),
        (
            {"grid_monitoring_grafana_url": "https://grafana.example.org"},
            "grid_monitoring_grafana_api_key",
        ),
    ],
)
def test_bad_inputs_stop_the_role_before_any_change(
    tmp_path: Path, extra: dict[str, object], message: str
) -> None:
    rules = tmp_path / "rules"
    result = _run(tmp_path, **{"grid_monitoring_rules_dir": str(rules), **extra})
    assert result.returncode != 0
    assert message in result.stdout
    assert not rules.exists()


@pytest.mark.parametrize("inventory", ["example", "lab"])
def test_site_playbook_with_the_monitoring_play_passes_syntax_check(
    tmp_path: Path, inventory: str
) -> None:
    result = ansible_playbook(
        ROOT / "playbooks/site.yml", [ROOT / "inventories" / inventory], args=["--syntax-check"]
    )
    assert result.returncode == 0, result.stdout + result.stderr
