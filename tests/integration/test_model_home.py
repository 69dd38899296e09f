"""The grid model's one home: its defaults reach every role, whatever the inventory leaves out.

Every role that reads a ``grid_*`` variable depends on the role ``grid`` (meta/main.yml), whose
defaults are the model's defaults and whose vars hold the plan. These tests check that wiring
from both sides: by reading the roles, and with the real ansible-playbook against a copy of the
example inventory from which every defaulted model key was removed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from ansible_run import ROOT, ansible_playbook

GRID_DEFAULTS = yaml.safe_load((ROOT / "roles/grid/defaults/main.yml").read_text())
MODEL_FILE = "group_vars/all/grid.yml"
_GRID_VAR = re.compile(r"\bgrid_[a-z0-9_]+\b")
# Names that look like model variables but are filters, outputs of role grid, or role prefixes.
_GRID_OUTPUTS = {"grid_plan", "grid_vm_identities", "grid_desktop_vm_identities"}


def _role_files(role: Path) -> list[Path]:
    return [p for p in role.rglob("*") if p.is_file() and p.suffix in {".yml", ".j2", ".yaml"}]


def model_readers() -> list[str]:
    """Roles (other than grid) whose tasks, vars, defaults or templates read a model variable."""
    readers = []
    for role in sorted((ROOT / "roles").iterdir()):
        if role.name == "grid" or not role.is_dir():
            continue
        names = {n for f in _role_files(role) for n in _GRID_VAR.findall(f.read_text())}
        if names & (set(GRID_DEFAULTS) | _GRID_OUTPUTS):
            readers.append(role.name)
    return readers


def test_every_role_that_reads_the_model_depends_on_role_grid() -> None:
    readers = model_readers()
    assert len(readers) >= 6, readers  # the gateways, the pool, the coordinator, the desktops
    missing = []
    for name in readers:
        meta = yaml.safe_load((ROOT / "roles" / name / "meta/main.yml").read_text())
        deps = [d["role"] if isinstance(d, dict) else d for d in meta.get("dependencies") or []]
        if "grid" not in deps:
            missing.append(name)
    assert not missing, f"roles that read grid_* without depending on role grid: {missing}"


def test_no_role_re_defaults_a_model_variable() -> None:
    """A model variable's default lives in roles/grid/defaults only, never `| default(...)`."""
    offenders = []
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, GRID_DEFAULTS)) + r")\s*\|\s*default\(")
    for path in [*ROOT.glob("roles/*/**/*.yml"), *ROOT.glob("roles/*/**/*.j2")]:
        if path.is_relative_to(ROOT / "roles/grid"):
            continue
        offenders += [
            f"{path.relative_to(ROOT)}: {m.group(0)}" for m in pattern.finditer(path.read_text())
        ]
    assert not offenders, offenders


def _inventory_without_defaults(tmp_path: Path) -> tuple[Path, list[str]]:
    inv = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventories/example", inv)
    model = yaml.safe_load((inv / MODEL_FILE).read_text())
    # The keys the example sets to their default value: leaving them out must change nothing.
    removed = sorted(k for k in model if k in GRID_DEFAULTS and model[k] == GRID_DEFAULTS[k])
    for key in removed:
        del model[key]
    (inv / MODEL_FILE).write_text(yaml.safe_dump(model, sort_keys=False))
    return inv, removed


@pytest.mark.slow
def test_a_model_without_its_defaulted_keys_validates_and_reaches_every_role(
    tmp_path: Path,
) -> None:
    inv, removed = _inventory_without_defaults(tmp_path)
    assert len(removed) >= 5, removed  # the example spells out most of its defaults
    readers = model_readers()
    plays: list[dict[str, object]] = [
        {"import_playbook": str(ROOT / "playbooks/validate.yml")},
    ]
    checks = [
        {
            "name": f"Check {name} sees every model default and the plan",
            "ansible.builtin.assert": {
                "that": [
                    *(f"{key} == {GRID_DEFAULTS[key]!r}" for key in removed),
                    *(f"{key} is defined" for key in sorted(GRID_DEFAULTS)),
                    "grid_plan.layout | length == 4",
                    "grid_plan.pki.dir == '/etc/openvpn/grid/pki'",
                    "grid_plan.default_class == 'standard'",
                    "grid_vm_identities | length == grid_desktop_registry | length * 2",
                ],
                "quiet": True,
            },
        }
        for name in readers
    ]
    # One play per reader: the role is listed but never run (when: false), so the play sees
    # exactly what the role's dependencies bring, the grid role's defaults and vars.
    plays += [
        {
            "name": f"Load {name}",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "roles": [{"role": name, "when": False}],
            "tasks": [check],
        }
        for name, check in zip(readers, checks, strict=True)
    ]
    playbook = tmp_path / "probe.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    proc = ansible_playbook(playbook, [inv], timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # Each reader's play ran its check (and a failed check would have failed the run).
    for name in readers:
        assert f"Check {name} sees every model default and the plan" in out, out
    recap = re.search(r"localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=0", out)
    assert recap, out
    assert int(recap.group(2)) == 0


@pytest.mark.slow
def test_a_play_without_role_grid_does_not_see_the_defaults(tmp_path: Path) -> None:
    """The control: without the dependency the same check fails, so the probe is not vacuous."""
    inv, removed = _inventory_without_defaults(tmp_path)
    key = "grid_bandwidth_default_class"
    assert key in removed
    playbook = tmp_path / "bare.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "tasks": [{"ansible.builtin.assert": {"that": [f"{key} is defined"]}}],
                }
            ]
        )
    )
    proc = ansible_playbook(playbook, [inv], timeout=300)
    assert proc.returncode != 0, proc.stdout
