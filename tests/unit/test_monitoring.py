"""The grid's Prometheus alerts and Grafana dashboard (roles/grid_monitoring/files), checked by
the real `promtool` (Debian's `prometheus`, installed by scripts/test-deps.sh): the rules load
(`promtool check rules`, which also parses the annotations' templates), every alert fires on
the series of tests/monitoring/grid-alerts.test.yml and stays silent on its near miss
(`promtool test rules`), every dashboard expression is valid PromQL, and rules and dashboard
name only metrics the coordinator and the gateway's exporter export. Issue 17, item 3."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from unit.test_vpn_metrics import promtool

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "roles/grid_monitoring/files"
RULES = FILES / "prometheus/grid-alerts.yml"
DASHBOARD = FILES / "grafana/grid-dashboard.json"
RULE_TESTS = ROOT / "tests/monitoring/grid-alerts.test.yml"
#: Where the metrics are exported: the coordinator's /metrics and the gateway's textfile.
EXPORTERS = (
    ROOT / "src/cvmc/coordinator/service/coordinator.py",
    ROOT / "roles/openvpn_gateway/files/grid_vpn_metrics.py",
)
_METRIC = re.compile(r"\b((?:cvmc|grid_vpn)_[a-z_]+)\b")


def _promtool(*args: str, cwd: Path | None = None) -> None:
    result = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_rules_load() -> None:
    _promtool("check", "rules", str(RULES))


def test_every_alert_fires_on_its_case_and_not_on_its_near_miss(tmp_path: Path) -> None:
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "grid-alerts.yml").write_text(yaml.safe_dump(doc))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    _promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)


def test_every_alert_has_a_case_and_a_line_in_the_docs() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {check["alertname"] for case in cases for check in case["alert_rule_test"]}
    alerts = {rule["alert"] for rule in _rules()}
    assert alerts == tested
    docs = (ROOT / "docs/monitoring.md").read_text()
    assert [name for name in sorted(alerts) if f"`{name}`" not in docs] == []


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["templating"]["list"][0]["name"] == "datasource"
    exprs = _dashboard_exprs()
    assert exprs
    records = [{"record": f"dashboard:expr{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    _promtool("check", "rules", str(path))


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    exported = {m for path in EXPORTERS for m in _METRIC.findall(path.read_text())}
    used = {m for rule in _rules() for m in _METRIC.findall(rule["expr"])}
    used |= {m for expr in _dashboard_exprs() for m in _METRIC.findall(expr)}
    assert {"cvmc_leases_declined_total", "grid_vpn_clients_capacity"} <= used
    assert sorted(used - exported) == []
