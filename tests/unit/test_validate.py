"""The grid model's cross-field checks, case by case (tests/validation_cases.py)."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from lab_model import ROOT, inventory_desktops, inventory_vars, lab_model, model_from_vars
from validation_cases import CASES, Case, model_key

from cvmc.gridmodel import plan
from cvmc.gridmodel.validate import CHECKS, MODEL_KEYS, model_problems


@pytest.mark.parametrize("inventory", ["lab", "example"])
def test_shipped_inventories_have_no_problems(inventory: str) -> None:
    model = model_from_vars(inventory_vars(inventory), inventory_desktops(inventory))
    assert model_problems(model) == []


def test_the_table_has_at_least_thirty_distinct_messages() -> None:
    assert len(CASES) >= 30
    assert len({case.expect for case in CASES}) == len(CASES)
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_model_is_refused_with_its_message(case: Case) -> None:
    """Every case, also those the argument spec catches first: the gate is the authority."""
    model = lab_model()
    for var, value in case.vars.items():
        model[model_key(var)] = copy.deepcopy(value)
    model.update(case.model)
    problems = model_problems(model)
    assert any(case.expect in problem for problem in problems), problems


def test_every_problem_names_a_variable() -> None:
    for case in CASES:
        model = lab_model()
        for var, value in case.vars.items():
            model[model_key(var)] = copy.deepcopy(value)
        model.update(case.model)
        for problem in model_problems(model):
            match = re.match(r"(grid_[a-z_]+|desktops)\b", problem)
            assert match, problem
            assert match.group(1) in {"grid_" + key for key in MODEL_KEYS} | {"desktops"}, problem


def test_one_concern_at_a_time() -> None:
    model = lab_model()
    model["coordinator_url"] = "http://lab-coordinator"
    assert model_problems(model, "network") == []
    assert len(model_problems(model, "coordinator")) == 1


def test_unknown_concern_and_missing_keys_are_errors() -> None:
    with pytest.raises(ValueError, match="concern: 'nope'"):
        model_problems(lab_model(), "nope")
    model = lab_model()
    del model["vm_types"]
    with pytest.raises(ValueError, match="missing keys vm_types"):
        model_problems(model)


def test_concerns_match_the_role() -> None:
    role_vars = yaml.safe_load((ROOT / "roles/grid/vars/main.yml").read_text())
    assert role_vars["__grid_concerns"] == list(CHECKS)
    # The role's model mappings: one for the checks, a smaller one for the plan.
    assert set(role_vars["__grid_model"]) == set(MODEL_KEYS)
    assert set(role_vars["__grid_plan_model"]) == set(plan.PLAN_KEYS)


def test_planned_capacity_counts_the_registry_too() -> None:
    model = lab_model()
    model["planned_desktops"] = 1
    model["research_network"] = "10.64.0.0/27"
    # /27 in two /28 slices holds 2 x (16 - 3) // 2 = 12 desktops; index 13 needs 14.
    model["desktop_registry"] = [{"name": "d0", "index": 0}, {"name": "d1", "index": 13}]
    problems = model_problems(model, "network")
    assert len(problems) == 1
    assert "but the plan needs 14" in problems[0]
