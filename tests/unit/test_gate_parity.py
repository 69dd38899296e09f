"""One gate: whatever the agent or the coordinator refuses, the `grid` role's gate refuses first.

The agent reads the grid model from its configuration's `grid` section, which the desktop
roles render from roles/grid/vars/main.yml (`grid_agent_grid_config`, written with
`to_nice_json`); the coordinator reads it from its grid file, which roles/grid_coordinator
renders (vars/main.yml, `__grid_coordinator_grid`, written with `to_nice_json`). Here both are
rendered from each model by those very templates, with Ansible's own templar, and read by the
real parsers (cvmc.agent.domain.config.parse_config, cvmc.coordinator.domain.grid.parse_grid).
The gate's model is rendered the same way from roles/grid/vars/main.yml (`__grid_model`).

- Every case of tests/validation_cases.py: the gate refuses it; exactly the consumers named in
  `refused_by` refuse it; and each refusal's variable is named by one of the gate's messages
  (for the shared checks, the message is the gate's own, word for word).
- Random breakage of the lab model (hypothesis): the same implication, for any value put
  anywhere the agent or the coordinator reads.
- The lab and example models: the gate passes and both parsers accept them.
- Cases that meta/argument_specs.yml refuses first (`role_expect`): it does, with that message,
  checked with Ansible's own validator; every other case passes the argument spec, so only the
  gate stands between it and the hosts.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template
from hypothesis import given
from hypothesis import strategies as st
from lab_model import ROOT, inventory_desktops
from validation_cases import AGENT, CASES, COORDINATOR, LAB_VM, Case

from cvmc.agent.domain.config import ConfigError, parse_config
from cvmc.coordinator.domain.grid import parse_grid_text
from cvmc.gridmodel.validate import model_problems

#: The agent section of the configuration: the desktop's own settings, valid, never varied.
AGENT_SECTION: dict[str, Any] = {
    "state_dir": r"C:\Users\cvmc\AppData\Local\cvmc",
    "hypervisor": "virtualbox",
    "image_budget_mb": 40960,
    "trusted_keys": ["RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"],
}
AGENT_CONFIG = "{{ grid_agent_grid_config | to_nice_json(indent=2) }}"
GRID_FILE = "{{ __grid_coordinator_grid | to_nice_json(sort_keys=true) }}"
GATE_MODEL = "{{ __grid_model }}"
#: The variable a message is about: everything before its first ': '.
_VARIABLE = re.compile(r"\A(?P<var>[^:]+?): ")
_ROOT = re.compile(r"\A(grid_[a-z_]+|desktops)")


@functools.cache
def _loader() -> DataLoader:
    init_plugin_loader()
    return DataLoader()


def _load(path: Path) -> dict[str, Any]:
    """A YAML vars file as Ansible loads it: its templates trusted."""
    data = _loader().load_from_file(str(path), trusted_as_template=True)
    return dict(data or {})


@functools.cache
def _role_vars() -> dict[str, Any]:
    """The three roles' derived variables (never set by a user)."""
    return {
        **_load(ROOT / "roles/grid/vars/main.yml"),
        **_load(ROOT / "roles/windows_desktop/vars/main.yml"),
        **_load(ROOT / "roles/grid_coordinator/vars/main.yml"),
    }


@functools.cache
def _inventory_vars(inventory: str) -> dict[str, Any]:
    """The grid role's defaults, then the inventory's group_vars/all (Ansible's precedence)."""
    merged = _load(ROOT / "roles/grid/defaults/main.yml")
    for path in sorted((ROOT / "inventories" / inventory / "group_vars/all").glob("*.yml")):
        merged.update(_load(path))
    return merged


def _group_names(inventory: str) -> dict[str, list[str]]:
    """Each host's groups in inventories/<inventory>/hosts.yml (for the departments)."""
    tree = yaml.safe_load((ROOT / "inventories" / inventory / "hosts.yml").read_text())
    names: dict[str, list[str]] = {}

    def walk(group: Mapping[str, Any] | None, path: list[str]) -> None:
        for host in (group or {}).get("hosts") or {}:
            names.setdefault(host, []).extend(path)
        for child, sub in ((group or {}).get("children") or {}).items():
            walk(sub, [*path, child])

    walk(tree["all"], [])
    return names


class Rendered:
    """What the gate, the agent and the coordinator each make of one set of variables."""

    def __init__(
        self,
        extra: Mapping[str, Any],
        *,
        inventory: str = "lab",
        desktops: list[str] | None = None,
        model: Mapping[str, Any] | None = None,
    ) -> None:
        variables = {**_inventory_vars(inventory), **copy.deepcopy(dict(extra))}
        group = variables.get("grid_desktop_group", "desktops")
        hosts = inventory_desktops(inventory) if desktops is None else desktops
        groups = _group_names(inventory)
        templar = Templar(
            loader=_loader(),
            variables={
                **variables,
                **_role_vars(),
                "groups": {group: hosts},
                "hostvars": {h: {"group_names": g} for h, g in groups.items()},
            },
        )
        gate_model = dict(templar.template(trust_as_template(GATE_MODEL)))
        gate_model.update(model or {})
        self.gate = model_problems(gate_model)
        self.agent = self._consume(templar, AGENT_CONFIG, _agent)
        self.coordinator = self._consume(templar, GRID_FILE, _coordinator)

    @staticmethod
    def _consume(templar: Templar, template: str, parse: Callable[[str], None]) -> str | None:
        """None if the consumer accepts the rendered file, else why not.

        A template that cannot render fails the consumer's role on its host: a refusal too.
        """
        try:
            text = templar.template(trust_as_template(template))
        except AnsibleError as exc:
            return f"render: {exc}"
        try:
            parse(text)
        except ValueError as exc:
            return str(exc)
        return None

    def refused_by(self) -> tuple[str, ...]:
        return tuple(
            who for who, why in ((AGENT, self.agent), (COORDINATOR, self.coordinator)) if why
        )


def _agent(text: str) -> None:
    try:
        parse_config({"grid": json.loads(text), "agent": AGENT_SECTION})
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _coordinator(text: str) -> None:
    parse_grid_text(text, name="grid.json")


def _about(message: str) -> str:
    """The variable a consumer's message is about, without the grid file's name."""
    message = message.removeprefix("grid.json: ")
    match = _VARIABLE.match(message)
    assert match, message
    return match["var"]


def _root(message: str) -> str | None:
    """The grid_* variable (or the desktops group) a message starts with."""
    match = _ROOT.match(message)
    return match.group(1) if match else None


def _filter_words(why: str) -> str:
    """A render failure's own message: what follows Ansible's "The filter plugin 'X' failed: "."""
    return why.split(" failed: ", 1)[-1]


def _assert_the_gate_refused_first(rendered: Rendered, touched: set[str]) -> None:
    """Every consumer refusal is matched by a gate message about the same variable.

    ``touched`` names the variables the model changed: a template that failed to render is
    about one of them, or about the variable the plan's filter (``grid_plan``, which the grid
    file's ``vpn_layout`` reads) names in its message.
    """
    for why in (rendered.agent, rendered.coordinator):
        if why is None:
            continue
        assert rendered.gate, f"the gate passed what a consumer refused: {why}"
        if why.startswith("render: "):
            if _about(_filter_words(why)) in {_about(p) for p in rendered.gate}:
                continue
            roots = touched
        else:
            variable = _about(why)
            if variable in {_about(p) for p in rendered.gate}:
                continue
            root = _root(variable)
            assert root, why
            roots = {root}
        assert any(_root(p) in roots for p in rendered.gate), (why, rendered.gate)


_RENDERED: dict[str, Rendered] = {}


def _rendered(case: Case) -> Rendered:
    if case.id not in _RENDERED:
        desktops = None
        if case.hosts:
            fixture = yaml.safe_load((ROOT / "tests/fixtures/desktops.yml").read_text())
            desktops = list(fixture["all"]["children"][case.hosts]["hosts"])
        _RENDERED[case.id] = Rendered(case.vars, desktops=desktops, model=case.model)
    return _RENDERED[case.id]


# -- the case table ------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_gate_refuses_whatever_a_consumer_refuses(case: Case) -> None:
    rendered = _rendered(case)
    assert any(case.expect in p for p in rendered.gate), rendered.gate
    assert rendered.refused_by() == case.refused_by, (rendered.agent, rendered.coordinator)
    _assert_the_gate_refused_first(rendered, set(case.vars) | {"desktops"})


def test_shared_checks_give_the_consumers_the_gates_own_words() -> None:
    """The agent's and the coordinator's messages about the model are the gate's messages
    (the coordinator's prefixed with its file): one function wrote them. Only the registry's
    desktops in the grid file are the coordinator's own reading of grid_desktop_registry."""
    compared = 0
    for case in CASES:
        rendered = _rendered(case)
        for why in (rendered.agent, rendered.coordinator):
            if why is None or why.startswith("grid.json: grid_desktop_registry["):
                continue
            if why.startswith("render: "):
                # The plan's filter failed (the grid file's vpn_layout is grid_plan.layout): its
                # words are the plan derivation's, about a variable the gate names too.
                assert _about(_filter_words(why)) in {_about(p) for p in rendered.gate}, (
                    case.id,
                    why,
                )
                continue
            assert why.removeprefix("grid.json: ") in rendered.gate, (case.id, why)
            compared += 1
    assert compared >= 60


def test_the_table_covers_both_consumers() -> None:
    agent = [c.id for c in CASES if AGENT in c.refused_by]
    coordinator = [c.id for c in CASES if COORDINATOR in c.refused_by]
    assert len(agent) >= 30
    assert len(coordinator) >= 15


# -- the argument spec, Ansible's first look -----------------------------------------------


@functools.cache
def _argument_spec() -> dict[str, Any]:
    specs = yaml.safe_load((ROOT / "roles/grid/meta/argument_specs.yml").read_text())
    return dict(specs["argument_specs"]["validate"]["options"])


def _argspec_errors(extra: Mapping[str, Any]) -> list[str]:
    """What the role's validate_argument_spec reports, with Ansible's own validator."""
    spec = _argument_spec()
    variables = {
        **yaml.safe_load((ROOT / "roles/grid/defaults/main.yml").read_text()),
        **{k: v for k, v in _inventory_vars("lab").items() if k.startswith("grid_")},
        **copy.deepcopy(dict(extra)),
    }
    provided = {key: variables[key] for key in spec if key in variables}
    provided.pop("grid_coordinator_enrol_key", None)  # a lookup; not this role's concern
    result = ArgumentSpecValidator(spec).validate(provided, validate_role_argument_spec=True)
    return list(result.error_messages)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_argument_spec_refuses_only_the_cases_that_say_so(case: Case) -> None:
    errors = _argspec_errors(case.vars)
    if case.role_expect:
        assert any(case.role_expect in e for e in errors), errors
    else:
        assert errors == [], "the argument spec refuses it: give the case role_expect"


def test_the_argument_spec_lets_yaml_booleans_through_as_numbers() -> None:
    """Why the gate must check types itself: Ansible validates a converted copy."""
    assert _argspec_errors({"grid_host_memory_reserve_mb": True}) == []
    assert _argspec_errors({"grid_vm_types": [{**LAB_VM, "cpus": "2"}]}) == []
    assert _argspec_errors({"grid_max_vms_per_desktop": 65}) == []


# -- random breakage -------------------------------------------------------------------------

JUNK = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        -1,
        1,
        65,
        2.0,
        10**9,
        "",
        "x",
        "2",
        "yes",
        "20Mbps",
        "../x.qcow2",
        "http://x/y",
        "07:00",
        "LINUX",
        [],
        ["mon"],
        {},
        {"name": "x"},
    ]
)
#: Where the agent or the coordinator reads the model: (variable, key inside it or None).
TARGETS = st.sampled_from(
    [
        ("grid_name", None),
        ("grid_max_vms_per_desktop", None),
        ("grid_host_memory_reserve_mb", None),
        ("grid_desktop_min_memory_mb", None),
        ("grid_coordinator_url", None),
        ("grid_bandwidth_default_class", None),
        ("grid_bandwidth_classes", None),
        ("grid_vm_types", None),
        ("grid_policy", None),
        ("grid_desktop_registry", None),
        ("grid_policy", "require_hw_virtualization"),
        ("grid_policy", "min_battery_percent"),
        ("grid_policy", "holidays"),
        ("grid_policy", "blackouts"),
        ("grid_policy", "blackout.days"),
        ("grid_policy", "blackout.start"),
        ("grid_policy", "blackout.applies"),
        ("grid_policy", "blackout.name"),
        ("grid_bandwidth_classes", "name"),
        ("grid_bandwidth_classes", "down"),
        ("grid_bandwidth_classes", "up"),
        ("grid_vm_types", "name"),
        ("grid_vm_types", "image"),
        ("grid_vm_types", "cpus"),
        ("grid_vm_types", "memory_mb"),
        ("grid_vm_types", "os"),
        ("grid_vm_types", "arch"),
        ("grid_vm_types", "disk_gb"),
        ("grid_vm_types", "bandwidth_class"),
        ("grid_vm_types", "extra_key"),
        ("grid_desktop_registry", "name"),
        ("grid_desktop_registry", "index"),
    ]
)


def _broken(variable: str, key: str | None, value: object) -> dict[str, Any]:
    """The lab's ``variable`` with ``value`` put at ``key`` (in its first item for lists)."""
    lab = _inventory_vars("lab")
    if key is None:
        return {variable: value}
    current = copy.deepcopy(lab[variable])
    if key.startswith("blackout."):
        current["blackouts"][0][key.removeprefix("blackout.")] = value
    elif isinstance(current, dict):
        current[key] = value
    else:
        current[0][key] = value
    return {variable: current}


@given(TARGETS, JUNK)
def test_any_breakage_a_consumer_refuses_the_gate_refuses_first(
    target: tuple[str, str | None], value: object
) -> None:
    variable, key = target
    extra = _broken(variable, key, value)
    rendered = Rendered(extra)
    assert all(_root(p) for p in rendered.gate), rendered.gate
    _assert_the_gate_refused_first(rendered, {variable})


# -- the shipped models ----------------------------------------------------------------------


@pytest.mark.parametrize("inventory", ["lab", "example"])
def test_shipped_models_pass_the_gate_and_both_consumers(inventory: str) -> None:
    rendered = Rendered({}, inventory=inventory)
    assert rendered.gate == []
    assert rendered.agent is None
    assert rendered.coordinator is None


def test_good_values_at_the_edges_pass_everywhere() -> None:
    """The other direction, on the variables the cases touch most: a good value passes all."""
    good: list[dict[str, Any]] = [
        {"grid_name": "g"},
        {"grid_max_vms_per_desktop": 1},
        {"grid_max_vms_per_desktop": 64, "grid_research_network": "10.64.0.0/16"},
        {"grid_host_memory_reserve_mb": 0},
        {"grid_vm_types": [{**LAB_VM, "cpus": 32, "memory_mb": 256, "disk_gb": 65536}]},
        {"grid_bandwidth_classes": [{"name": "standard", "down": "1.5mbit", "up": "64kbit"}]},
        {"grid_policy": {"blackouts": [], "holidays": ["2026-12-25"]}},
        {"grid_coordinator_url": "https://lab-coordinator:8443/grid/"},
    ]
    for extra in good:
        if "grid_bandwidth_classes" in extra:
            extra["grid_vm_types"] = [LAB_VM]
        rendered = Rendered(extra)
        assert (rendered.gate, rendered.agent, rendered.coordinator) == ([], None, None), extra
